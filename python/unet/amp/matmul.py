"""Products of float16/bfloat16 arrays on ``unet._C.matmul``: inputs used as stored, float32
accumulation, the output rounded once to the dtype asked for (float32, float16 or bfloat16).

Array-level helpers for the ops that autocast sends here (``Tensor @``, ``F.linear``); the
kernel runs on the CPU or the GPU the arrays live on.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..backend import array_module, current_stream_ptr


def gemm(a, b, out_dtype, *, trans_a=False, trans_b=False, **epilogue):
    """``op(a) @ op(b)`` for a 2-D pair (or 3-D with the same batch) into a new array of ``out_dtype``;
    ``epilogue``: bias, activation, preact, bias_grad as ``_C.matmul`` takes them."""
    xp = array_module(a)
    a, b = xp.ascontiguousarray(a), xp.ascontiguousarray(b)
    m = a.shape[-1] if trans_a else a.shape[-2]
    n = b.shape[-2] if trans_b else b.shape[-1]
    batch = a.shape[:-2] or b.shape[:-2]
    c = xp.empty(batch + (m, n), out_dtype)
    _C.matmul(a, b, c, trans_a=trans_a, trans_b=trans_b, stream=current_stream_ptr(a), **epilogue)
    return c


def matmul(a, b, out_dtype, *, trans_a=False, trans_b=False):
    """numpy's ``op(a) @ op(b)`` for arrays of 2 or more dims whose leading (batch) dims broadcast."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if not batch:
        return gemm(a, b, out_dtype, trans_a=trans_a, trans_b=trans_b)
    if b.ndim == 2 and not trans_a:  # a shared right factor: one tall product over all of a's rows
        rows = a.reshape(-1, a.shape[-1])
        return gemm(rows, b, out_dtype, trans_b=trans_b).reshape(batch + (a.shape[-2], -1))
    c = gemm(_as_batch(a, batch), _as_batch(b, batch), out_dtype, trans_a=trans_a, trans_b=trans_b)
    return c.reshape(batch + c.shape[-2:])


def _as_batch(x, batch):
    """x as one batch axis of ``prod(batch)`` matrices; a 2-D x stays 2-D (the kernel shares it)."""
    if x.ndim == 2:
        return x
    xp = array_module(x)
    return xp.broadcast_to(x, batch + x.shape[-2:]).reshape((-1,) + x.shape[-2:])
