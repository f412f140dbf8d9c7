"""Layer normalisation over the trailing ``normalized_shape`` dims."""
from __future__ import annotations

from ..amp.autocast import cast_for_fp32
from ..tensor import Tensor


def layer_norm(x: Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias, mean and (biased) var over the trailing dims."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a Tensor, got {type(x).__name__}")
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    n = len(normalized_shape)
    if n == 0 or x.ndim < n or x.shape[x.ndim - n:] != normalized_shape:
        raise ValueError(f"x: expected trailing dims {normalized_shape}, got shape {x.shape}")
    if not eps > 0:
        raise ValueError(f"eps: expected a positive number, got {eps}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (not isinstance(t, Tensor) or t.shape != normalized_shape):
            raise ValueError(f"{name}: expected a Tensor of shape {normalized_shape}, got "
                             f"{getattr(t, 'shape', type(t).__name__)}")
    x = cast_for_fp32(x)  # under autocast, statistics of 16-bit inputs in float32
    dims = tuple(range(x.ndim - n, x.ndim))
    centered = x - x.mean(dim=dims, keepdim=True)
    y = centered / ((centered * centered).mean(dim=dims, keepdim=True) + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
