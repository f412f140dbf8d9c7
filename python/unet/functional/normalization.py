"""Layer normalisation over the trailing ``normalized_shape`` dims."""
from __future__ import annotations

from ..tensor import Tensor


def layer_norm(x: Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(normalized_shape):] != normalized_shape:
        raise ValueError(f"x: expected trailing dims {normalized_shape}, got shape {x.shape}")
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    centered = x - x.mean(dim=dims, keepdim=True)
    y = centered / ((centered * centered).mean(dim=dims, keepdim=True) + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
