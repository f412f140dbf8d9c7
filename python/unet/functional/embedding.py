"""Embedding lookup with a scatter-add gradient; rows at ``padding_idx`` get none."""
from __future__ import annotations

from ..autograd import Function
from ..backend import array_module
from ..ops import scatter_add
from ..tensor import Tensor


class EmbeddingFunction(Function):
    saves_inputs = False

    def forward(self, weight, ids, padding_idx):
        self.ids, self.shape, self.padding_idx = ids, weight.shape, padding_idx
        return weight[ids]

    def backward(self, g):
        xp = array_module(g)
        grad = xp.zeros(self.shape, dtype=g.dtype)
        scatter_add(grad, self.ids.reshape(-1), g.reshape(-1, self.shape[1]))
        if self.padding_idx is not None:
            grad[self.padding_idx] = 0
        return grad


def check_indices(ids, size: int, argname: str, ignore_index=None):
    """Raise IndexError naming ``argname`` if any id falls outside [0, size) (ignore_index aside)."""
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{argname}: expected integer ids, got dtype {ids.dtype}")
    if ids.size == 0:
        return
    bad = (ids < 0) | (ids >= size)
    if ignore_index is not None:
        bad &= ids != ignore_index
    if bool(bad.any()):
        value = int(ids[bad].reshape(-1)[0])
        raise IndexError(f"{argname}: index {value} is out of range [0, {size})")


def embedding(ids, weight: Tensor, padding_idx=None) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) at integer ``ids`` of any shape: ``ids.shape + (dim,)``."""
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"weight: expected a 2-D Tensor (num_embeddings, embedding_dim), got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    xp = array_module(weight.data)
    if isinstance(ids, Tensor):
        if ids.device != weight.device:
            raise ValueError(f"ids: on {ids.device}, weight on {weight.device}; move one with .to()")
        raw = ids.data
    else:
        raw = xp.asarray(ids)
    check_indices(raw, weight.shape[0], "ids")
    if padding_idx is not None:
        if not -weight.shape[0] <= padding_idx < weight.shape[0]:
            raise ValueError(f"padding_idx: expected a value in [{-weight.shape[0]}, {weight.shape[0]}), "
                             f"got {padding_idx}")
        padding_idx %= weight.shape[0]
    return EmbeddingFunction.apply(weight, raw, padding_idx)
