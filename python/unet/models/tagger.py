"""SequenceTagger: one label per token (part of speech, named entities, chunks) from a (Bi)LSTM/GRU."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..data.vocab import PAD_ID
from ..tensor import Tensor
from .base import (CELLS, TaskModel, _host, _mask, check_choice, check_dropout, check_flag, check_positive,
                   nonempty, recurrent)

IGNORE = -100  # the targets of padded positions (any tag id, 0 included, may be a real tag)


class SequenceTagger(TaskModel):
    """Per-token labels.

    ::

        model = SequenceTagger(len(encoder), num_tags=len(tag_vocab))
        loss = model.loss(batch)                    # batch: text, text_lengths, tags (B, T)
        tags = model.predict(batch["text"], batch["text_lengths"])   # list of int64 arrays, one per text

    Embedding -> dropout -> (Bi)LSTM/GRU with ``lengths=`` -> dropout -> Linear to ``num_tags`` at every
    step. The loss counts each text's own tokens only (a mask from ``text_lengths``; the tag
    padding's value does not matter). Batch columns: ``text``/``text_lengths`` and ``tags``
    (padded tag ids), or, from a ``PairDataset`` of token/tag lines, ``source``/``source_lengths``
    and ``target``/``target_lengths`` (each target as long as its source).
    """

    task = "tag"
    batch_keys = ("text", "text_lengths", "tags")

    def __init__(self, vocab_size, num_tags, embedding_dim=64, hidden_size=128, num_layers=1, cell="lstm",
                 bidirectional=True, dropout=0.1, dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.vocab_size = check_positive("vocab_size", vocab_size)
        self.num_tags = check_positive("num_tags", num_tags)
        self.embedding_dim = check_positive("embedding_dim", embedding_dim)
        self.hidden_size = check_positive("hidden_size", hidden_size)
        self.num_layers = check_positive("num_layers", num_layers)
        self.cell = check_choice("cell", cell, CELLS)
        self.bidirectional = check_flag("bidirectional", bidirectional)
        self.dropout = check_dropout(dropout)
        d = self.dtype.name
        self.embedding = nn.Embedding(self.vocab_size, self.embedding_dim, padding_idx=PAD_ID, dtype=d)
        self.encoder = recurrent(self.cell, self.embedding_dim, self.hidden_size, self.num_layers, self.dropout,
                                 self.bidirectional, d)
        self.output = nn.Linear((2 if self.bidirectional else 1) * self.hidden_size, self.num_tags, dtype=d)
        self._finish(vocab_size=self.vocab_size, num_tags=self.num_tags, embedding_dim=self.embedding_dim,
                     hidden_size=self.hidden_size, num_layers=self.num_layers, cell=self.cell,
                     bidirectional=self.bidirectional, dropout=self.dropout)

    def forward(self, text, text_lengths=None) -> Tensor:
        """Tag logits (B, T', num_tags) for padded ids (B, T) (T' = max(T, 1))."""
        ids, lengths = self._ids(text, text_lengths, "text", self.vocab_size)
        ids, lengths = nonempty(ids, lengths)
        x = F.dropout(self.embedding(self._tensor(ids)), self.dropout, self.training)
        outputs, _ = self.encoder(x, lengths=lengths)
        return self.output(F.dropout(outputs, self.dropout, self.training))

    def _tagged(self, batch):
        if "text" in batch or "source" not in batch:
            text, lengths, tags = self._columns(batch, *self.batch_keys)
            tag_lengths = batch.get("tags_lengths")
        else:
            text, lengths, tags, tag_lengths = self._columns(batch, "source", "source_lengths", "target",
                                                             "target_lengths")
        text, lengths = self._ids(text, lengths, "text", self.vocab_size)
        tags = _host(tags)
        if tags.ndim != 2 or tags.shape[0] != text.shape[0] or (tags.size and tags.dtype.kind not in "iu") \
                or tags.shape[1] < int(lengths.max(initial=0)):
            raise ValueError(f"tags: expected int tag ids (batch, >= {int(lengths.max(initial=0))}) for text of "
                             f"shape {text.shape}, got shape {tags.shape} dtype {tags.dtype}")
        if tag_lengths is not None and not np.array_equal(_host(tag_lengths), lengths):
            raise ValueError(f"tags_lengths: each text needs one tag per token; text lengths "
                             f"{lengths.tolist()[:8]}, tag lengths {_host(tag_lengths).tolist()[:8]}")
        width = max(text.shape[1], 1)
        valid = _mask(lengths, width)
        padded = np.zeros((text.shape[0], width), np.int64)
        padded[:, :min(width, tags.shape[1])] = tags[:, :width]
        targets = np.where(valid, padded, IGNORE)
        counted = targets[valid]
        if counted.size and (counted.min() < 0 or counted.max() >= self.num_tags):
            raise ValueError(f"tags: tag ids must lie in [0, {self.num_tags}), got {counted.min()}..{counted.max()}")
        return text, lengths, targets, valid

    def loss(self, batch) -> Tensor:
        """Mean cross-entropy per (unpadded) token."""
        text, lengths, targets, _ = self._tagged(batch)
        logits = self(text, lengths)
        return F.cross_entropy(logits.reshape(-1, self.num_tags), self._device_array(targets.reshape(-1)),
                               ignore_index=IGNORE)

    def evaluate_batch(self, batch) -> dict:
        """``loss_sum`` and ``correct`` over ``tokens``; ``exact``: texts tagged without an error, of ``examples``."""
        text, lengths, targets, valid = self._tagged(batch)
        with self._inference():
            logits = self(text, lengths)
            loss_sum = F.cross_entropy(logits.reshape(-1, self.num_tags), self._device_array(targets.reshape(-1)),
                                       ignore_index=IGNORE, reduction="sum")
            predicted = _host(logits.argmax(-1).data)
        right = (predicted == targets) | ~valid
        return {"loss_sum": float(loss_sum.item()), "tokens": int(valid.sum()),
                "correct": int((right & valid).sum()), "examples": int(text.shape[0]),
                "exact": int(right.all(axis=1).sum())}

    def predict(self, text, text_lengths=None) -> list:
        """The most likely tag per token: one int64 array of each text's length."""
        ids, lengths = self._ids(text, text_lengths, "text", self.vocab_size)
        with self._inference():
            predicted = _host(self(ids, lengths).argmax(-1).data).astype(np.int64)
        return [predicted[b, :n] for b, n in enumerate(lengths)]

    def extra_repr(self):
        return f"task={self.task!r}, cell={self.cell!r}"
