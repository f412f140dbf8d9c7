"""Attention over a padded memory (encoder outputs), for all query steps at once.

Every kind maps queries q (B, T, H) and memory m (B, S, H) to weights a (B, T, S) and
contexts c = a m (B, T, H); padded source positions get weight exactly 0:

    dot        score(q, m_j) = q . m_j                              (Luong)
    general    score(q, m_j) = q . (W m_j)                          (Luong)
    additive   score(q, m_j) = v . tanh(W_q q + W_k m_j)            (Bahdanau)
    a = softmax over j of the scores, with -inf at padded j

The memory-side term (m, W m or W_k m) depends on the source alone: ``keys(memory)``
computes it once per batch, and a decoder stepping one token at a time passes it back in.
"""
from __future__ import annotations

import math

from .. import functional as F
from .. import nn
from ..tensor import Tensor

SCORES = ("dot", "general", "additive")


def masked_softmax(scores: Tensor, valid) -> Tensor:
    """Softmax over the last axis of ``scores`` (B, T, S) where ``valid`` (B, S) is True; exactly 0 elsewhere.

    Each row needs one valid position (the models give every source at least one step)."""
    mask = valid.data if isinstance(valid, Tensor) else valid
    return F.softmax(scores.masked_fill(~mask[:, None, :], -math.inf), dim=-1)


class Attention(nn.Module):
    """``context, weights = attention(query, memory, valid, keys=None)``.

    query (B, T, query_size), memory (B, S, memory_size), valid bool (B, S) on the model's
    device; returns context (B, T, memory_size) and weights (B, T, S)."""

    def keys(self, memory: Tensor) -> Tensor:
        """The memory-side part of the score, computed once per source batch."""
        return memory

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, query: Tensor, memory: Tensor, valid, keys: Tensor | None = None):
        if query.ndim != 3 or memory.ndim != 3 or query.shape[0] != memory.shape[0]:
            raise ValueError(f"query, memory: expected (batch, T, ·) and (batch, S, ·), got {query.shape} "
                             f"and {memory.shape}")
        keys = self.keys(memory) if keys is None else keys
        weights = masked_softmax(self.scores(query, keys), valid)
        return weights @ memory, weights


class LuongAttention(Attention):
    """Multiplicative attention (Luong et al. 2015): ``score="dot"`` (query and memory of one size)
    or ``"general"`` (a learned bilinear form W, memory_size -> query_size)."""

    def __init__(self, query_size: int, memory_size: int, score: str = "general", dtype=None):
        super().__init__()
        if score not in ("dot", "general"):
            raise ValueError(f"score: expected 'dot' or 'general', got {score!r}")
        if score == "dot" and query_size != memory_size:
            raise ValueError(f"memory_size: 'dot' attention needs query_size == memory_size, got "
                             f"{query_size} and {memory_size}")
        self.score = score
        if score == "general":
            self.weight = nn.Linear(memory_size, query_size, bias=False, dtype=dtype)

    def keys(self, memory):
        return self.weight(memory) if self.score == "general" else memory

    def scores(self, query, keys):
        return query @ keys.transpose(1, 2)

    def extra_repr(self):
        return f"score={self.score!r}"


class BahdanauAttention(Attention):
    """Additive attention (Bahdanau et al. 2015): ``v . tanh(W_q q + W_k m_j)`` with hidden ``attention_size``."""

    def __init__(self, query_size: int, memory_size: int, attention_size: int | None = None, dtype=None):
        super().__init__()
        attention_size = attention_size or query_size
        self.query_layer = nn.Linear(query_size, attention_size, bias=False, dtype=dtype)
        self.key_layer = nn.Linear(memory_size, attention_size, dtype=dtype)
        self.energy = nn.Linear(attention_size, 1, bias=False, dtype=dtype)

    def keys(self, memory):
        return self.key_layer(memory)

    def scores(self, query, keys):
        # (B, T, 1, A) + (B, 1, S, A) -> (B, T, S, A) -> (B, T, S)
        hidden = F.tanh(self.query_layer(query).unsqueeze(2) + keys.unsqueeze(1))
        return self.energy(hidden).squeeze(-1)


def make_attention(score: str, query_size: int, memory_size: int, dtype=None) -> Attention:
    if score == "additive":
        return BahdanauAttention(query_size, memory_size, dtype=dtype)
    return LuongAttention(query_size, memory_size, score, dtype=dtype)
