"""TextCNN: Kim (2014)'s convolutional sentence classifier, on the ``Classifier`` protocol."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import nn
from ..data.vocab import PAD_ID
from ..tensor import Tensor
from .base import _mask, check_dropout, check_positive
from .classifier import Classifier


class TextCNN(Classifier):
    """One label per text from convolutions over its word vectors (Kim 2014, "Convolutional Neural
    Networks for Sentence Classification").

    ::

        model = TextCNN(len(encoder), num_classes=2)           # task "classify", like TextClassifier
        loss = model.loss(batch)                                # batch: text, text_lengths, label
        labels = model.predict(batch["text"], batch["text_lengths"])

    Embedding -> for each width k in ``kernel_sizes``: Conv1d(embedding_dim -> num_filters, k) + ReLU,
    then the maximum over time of each feature map (windows that reach past the text's end are
    left out) -> the maxima of all widths concatenated -> dropout -> Linear to ``num_classes``.
    A text shorter than the widest kernel is padded with <pad> (a zero vector) up to it.
    """

    def __init__(self, vocab_size, num_classes, embedding_dim=128, kernel_sizes=(3, 4, 5), num_filters=100,
                 dropout=0.5, dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.vocab_size = check_positive("vocab_size", vocab_size)
        self.num_classes = check_positive("num_classes", num_classes)
        self.embedding_dim = check_positive("embedding_dim", embedding_dim)
        if not isinstance(kernel_sizes, (tuple, list)) or not kernel_sizes:
            raise ValueError(f"kernel_sizes: expected a non-empty list of positive ints, got {kernel_sizes!r}")
        self.kernel_sizes = tuple(check_positive("kernel_sizes", k) for k in kernel_sizes)
        self.num_filters = check_positive("num_filters", num_filters)
        self.dropout = check_dropout(dropout)
        d = self.dtype.name
        self.embedding = nn.Embedding(self.vocab_size, self.embedding_dim, padding_idx=PAD_ID, dtype=d)
        self.convs = nn.ModuleList([nn.Conv1d(self.embedding_dim, self.num_filters, k, activation="relu", dtype=d)
                                    for k in self.kernel_sizes])
        self.output = nn.Linear(len(self.kernel_sizes) * self.num_filters, self.num_classes, dtype=d)
        self._finish(vocab_size=self.vocab_size, num_classes=self.num_classes, embedding_dim=self.embedding_dim,
                     kernel_sizes=list(self.kernel_sizes), num_filters=self.num_filters, dropout=self.dropout)

    def forward(self, text, text_lengths=None) -> Tensor:
        """Class logits (B, num_classes) for padded ids (B, T) and their lengths."""
        ids, lengths = self._ids(text, text_lengths, "text", self.vocab_size)
        widest = max(self.kernel_sizes)
        if ids.shape[1] < widest:
            ids = np.pad(ids, ((0, 0), (0, widest - ids.shape[1])), constant_values=PAD_ID)
        x = self.embedding(self._tensor(ids)).transpose(1, 2)  # (B, embedding_dim, T)
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            maps = conv(x)  # (B, num_filters, T - k + 1), ReLU fused
            # window t covers ids t .. t+k-1: it counts if it ends inside the text (else the first one only)
            inside = _mask(np.maximum(lengths - k + 1, 1), maps.shape[-1])
            maps = maps.masked_fill(self._device_array(~inside)[:, None, :], -math.inf)
            pooled.append(maps.max(dim=-1).values)
        features = F.cat(pooled, dim=1)
        return self.output(F.dropout(features, self.dropout, self.training))

    def extra_repr(self):
        return f"task={self.task!r}, kernel_sizes={self.kernel_sizes}, num_filters={self.num_filters}"
