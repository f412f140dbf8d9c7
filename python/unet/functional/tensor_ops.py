"""Joining, splitting and selecting tensors."""
from __future__ import annotations

from .. import ops
from ..backend import array_module
from ..tensor import Tensor, _dim, _operand


def _tensors(tensors, argname):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{argname}: expected a non-empty sequence of tensors")
    if not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{argname}: expected Tensors, got {[type(t).__name__ for t in tensors]}")
    return tensors


def cat(tensors, dim=0):
    tensors = _tensors(tensors, "tensors")
    if tensors[0].ndim == 0:
        raise ValueError("tensors: 0-d tensors cannot be concatenated; stack them instead")
    return ops.Concat.apply(*tensors, axis=_dim(dim, tensors[0].ndim))


concat = cat


def stack(tensors, dim=0):
    tensors = _tensors(tensors, "tensors")
    return ops.Stack.apply(*tensors, axis=_dim(dim, tensors[0].ndim + 1))


def where(condition, x, y):
    """Elementwise ``x if condition else y``; differentiable in ``x`` and ``y``."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    like = x if isinstance(x, Tensor) else y
    if not isinstance(like, Tensor):
        raise TypeError("where: at least one of x, y must be a Tensor")
    x, y = _operand(x, like), _operand(y, like)
    return ops.Where.apply(array_module(like.data).asarray(cond, dtype=bool), x, y)


def split(tensor, split_size, dim=0):
    return tensor.split(split_size, dim)
