"""Text classification: the shared ``Classifier`` protocol and ``TextClassifier``, a (Bi)LSTM/GRU reader
of a whole text, pooled to one vector, then classes."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import nn
from ..data.vocab import PAD_ID
from ..tensor import Tensor
from .base import (CELLS, TaskModel, _host, _mask, check_choice, check_dropout, check_flag, check_positive,
                   nonempty, recurrent)

POOLINGS = ("max", "last", "mean")


class Classifier(TaskModel):
    """One label per text: the loss, metrics and predictions every text classifier shares.

    A subclass builds its layers and defines ``forward(text, text_lengths=None)`` -> class logits
    (B, num_classes) for padded ids (B, T) and their lengths; it sets ``num_classes``.
    """

    task = "classify"
    batch_keys = ("text", "text_lengths", "label")

    def _labels(self, batch):
        text, lengths, label = self._columns(batch, *self.batch_keys)
        label = _host(label)
        if label.ndim != 1 or (label.size and label.dtype.kind not in "iu") or label.shape[0] != _host(text).shape[0]:
            raise ValueError(f"label: expected one int class id per text, got shape {label.shape} dtype {label.dtype}")
        if label.size and (label.min() < 0 or label.max() >= self.num_classes):
            raise ValueError(f"label: class ids must lie in [0, {self.num_classes}), got {label.min()}..{label.max()}")
        return text, lengths, label.astype(np.int64)

    def loss(self, batch) -> Tensor:
        """Mean cross-entropy per text."""
        text, lengths, label = self._labels(batch)
        return F.cross_entropy(self(text, lengths), self._device_array(label))

    def evaluate_batch(self, batch) -> dict:
        """``loss_sum`` and ``correct`` over ``examples``."""
        text, lengths, label = self._labels(batch)
        with self._inference():
            logits = self(text, lengths)
            loss_sum = F.cross_entropy(logits, self._device_array(label), reduction="sum")
            predicted = _host(logits.argmax(-1).data)
        return {"loss_sum": float(loss_sum.item()), "examples": int(label.size),
                "correct": int((predicted == label).sum())}

    def predict_proba(self, text, text_lengths=None) -> np.ndarray:
        """Class probabilities (B, num_classes) as a numpy array."""
        with self._inference():
            return _host(F.softmax(self(text, text_lengths), dim=-1).data)

    def predict(self, text, text_lengths=None) -> np.ndarray:
        """The most likely class id per text, int64 (B,)."""
        with self._inference():
            return _host(self(text, text_lengths).argmax(-1).data).astype(np.int64)



class TextClassifier(Classifier):
    """One label per text (sentiment, topic, intent...).

    ::

        model = TextClassifier(len(encoder), num_classes=2, pooling="max")
        loss = model.loss(batch)                       # batch: text, text_lengths, label
        labels = model.predict(batch["text"], batch["text_lengths"])        # int64 (B,)
        probs = model.predict_proba(batch["text"], batch["text_lengths"])   # (B, num_classes)

    Embedding -> dropout -> (Bi)LSTM/GRU over the text with ``lengths=`` -> pooling -> dropout ->
    Linear to ``num_classes``. ``pooling``: ``"max"`` over time (padding masked out), ``"last"`` the
    final states of the top layer (each direction's, at the text's own ends) concatenated, or
    ``"mean"`` over the text's own steps. An empty text is read as one <pad>.
    """

    def __init__(self, vocab_size, num_classes, embedding_dim=64, hidden_size=128, num_layers=1, cell="lstm",
                 bidirectional=True, pooling="max", dropout=0.1, dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.vocab_size = check_positive("vocab_size", vocab_size)
        self.num_classes = check_positive("num_classes", num_classes)
        self.embedding_dim = check_positive("embedding_dim", embedding_dim)
        self.hidden_size = check_positive("hidden_size", hidden_size)
        self.num_layers = check_positive("num_layers", num_layers)
        self.cell = check_choice("cell", cell, CELLS)
        self.bidirectional = check_flag("bidirectional", bidirectional)
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        self.dropout = check_dropout(dropout)
        d = self.dtype.name
        self.embedding = nn.Embedding(self.vocab_size, self.embedding_dim, padding_idx=PAD_ID, dtype=d)
        self.encoder = recurrent(self.cell, self.embedding_dim, self.hidden_size, self.num_layers, self.dropout,
                                 self.bidirectional, d)
        directions = 2 if self.bidirectional else 1
        self.output = nn.Linear(directions * self.hidden_size, self.num_classes, dtype=d)
        self._finish(vocab_size=self.vocab_size, num_classes=self.num_classes, embedding_dim=self.embedding_dim,
                     hidden_size=self.hidden_size, num_layers=self.num_layers, cell=self.cell,
                     bidirectional=self.bidirectional, pooling=self.pooling, dropout=self.dropout)

    def forward(self, text, text_lengths=None) -> Tensor:
        """Class logits (B, num_classes) for padded ids (B, T) and their lengths."""
        ids, lengths = self._ids(text, text_lengths, "text", self.vocab_size)
        ids, lengths = nonempty(ids, lengths)
        x = F.dropout(self.embedding(self._tensor(ids)), self.dropout, self.training)
        outputs, state = self.encoder(x, lengths=lengths)  # outputs (B, T, D*H), zero past each length
        if self.pooling == "last":
            h = state[0] if self.cell == "lstm" else state  # (layers * D, B, H)
            top = h[-2:] if self.bidirectional else h[-1:]
            pooled = top.permute(1, 0, 2).reshape(ids.shape[0], -1)
        elif self.pooling == "max":
            padding = ~self._device_array(_mask(lengths, ids.shape[1]))
            pooled = outputs.masked_fill(padding[:, :, None], -math.inf).max(dim=1).values
        else:
            pooled = outputs.sum(dim=1) / self._tensor(lengths[:, None].astype(self.dtype))
        return self.output(F.dropout(pooled, self.dropout, self.training))

    def extra_repr(self):
        return f"task={self.task!r}, pooling={self.pooling!r}, cell={self.cell!r}"
