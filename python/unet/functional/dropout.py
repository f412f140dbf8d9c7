"""Dropout: zero each element with probability p, scale the rest by 1/(1-p)."""
from __future__ import annotations

from .. import backend
from ..tensor import Tensor


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    gen = backend.random_state.generator(x.device)
    keep = gen.random(x.shape) >= p
    scale = (keep / (1.0 - p)).astype(x.dtype)
    return x * Tensor._wrap(scale)
