"""What the fused optimizer kernels of ``unet._C`` take, and gradient unscaling on them.

The kernels (``_C.sgd_step``, ``_C.adam_step``, ``_C.unscale_and_check``) update or scale
whole lists of contiguous float32 / float64 arrays of one device in one pass; the
optimizers call them through ``Optimizer._fused_update``.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from .. import _C
from ..backend import array_module, current_stream_ptr, device_of, is_cupy_array
from ..tensor import Tensor

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=None)
def _cuda_kernels() -> bool:
    return bool(_C.info()["cuda_compiled"])


def why_not(param, grad=None) -> str | None:
    """None when the fused kernels can update this parameter array (from this gradient), else why not."""
    if (type(param) is np.ndarray and param.dtype in _KERNEL_DTYPES and param.flags.c_contiguous
            and (grad is None or (type(grad) is np.ndarray and grad.dtype == param.dtype))):
        return None  # the common case, decided without the checks below (this runs every step)
    if param.dtype not in _KERNEL_DTYPES:
        return f"dtype {param.dtype} (the fused kernels take float32 and float64)"
    if is_cupy_array(param) and not _cuda_kernels():
        return "a CUDA array, but unet._C was built without CUDA"
    if not param.flags.c_contiguous:
        return "a non-contiguous array"
    if grad is not None:
        if grad.dtype != param.dtype:
            return f"its gradient is {grad.dtype}, the parameter {param.dtype}"
        if device_of(grad) != device_of(param):
            return f"its gradient is on {device_of(grad)}, the parameter on {device_of(param)}"
    return None


def device_key(a):
    """A cheap key that tells devices apart (numpy arrays: "cpu")."""
    return "cpu" if type(a) is np.ndarray else str(device_of(a))


def contiguous(a):
    """``a``, or a C-contiguous copy of it (np.ascontiguousarray would make a 0-d array 1-d)."""
    return a if a.flags.c_contiguous else array_module(a).ascontiguousarray(a)


def per_tensor(values: list):
    """One value when all are equal (the kernels parse one number faster than a list), else the list."""
    first = values[0]
    return first if all(v == first for v in values) else values


def group_option(items: list):
    """``option(f)``: f(group) when every (group, param) item shares one group, else f per item."""
    groups = [group for group, _ in items]
    first = groups[0]
    if all(group is first for group in groups):
        return lambda f: f(first)
    return lambda f: [f(group) for group in groups]


def any_nonfinite(grads: list, inv_scale: float) -> bool:
    """Whether any grad * inv_scale is inf or NaN; ``grads``: kernel arrays on one device."""
    return _C.unscale_and_check([contiguous(g) for g in grads], inv_scale, in_place=False,
                                stream=current_stream_ptr(grads[0]))


def unscale_and_check(grads, inv_scale: float) -> bool:
    """Multiply every gradient by ``inv_scale`` in place; True if any result is inf or NaN.

    ``grads``: Tensors (e.g. ``p.grad``) or arrays, None entries skipped, on any
    devices. float32 / float64 contiguous arrays go through one fused pass per device
    (``unet._C.unscale_and_check``; on a GPU it waits for the stream to read the
    answer); others (float16, bfloat16, strided) through numpy / CuPy. This is a
    GradScaler's ``unscale_``: torch multiplies by ``inv_scale`` too.
    """
    if isinstance(inv_scale, bool) or not isinstance(inv_scale, numbers.Real) or not (
            math.isfinite(inv_scale) and inv_scale > 0):
        raise ValueError(f"inv_scale: expected a finite number > 0, got {inv_scale!r}")
    inv_scale = float(inv_scale)
    tensors, by_device, others = [], {}, []
    for i, g in enumerate(grads):
        if g is None:
            continue
        if isinstance(g, Tensor):
            tensors.append(g)
            g = g.data
        if not hasattr(g, "dtype") or not hasattr(g, "flags"):
            raise TypeError(f"grads[{i}]: expected a Tensor or an array, got {type(g).__name__}")
        if why_not(g) is None:
            by_device.setdefault(device_of(g), []).append(g)
        else:
            others.append(g)
    found = False
    for arrays in by_device.values():
        found |= _C.unscale_and_check(arrays, inv_scale, stream=current_stream_ptr(arrays[0]))
    for g in others:
        g *= inv_scale
        found |= not bool(array_module(g).isfinite(g).all())
    for t in tensors:
        t._bump()
    return found
