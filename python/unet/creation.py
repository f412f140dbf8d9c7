"""Making tensors: from data, filled, random, ranges, and from other frameworks via DLPack."""
from __future__ import annotations

import numpy as np

from . import backend
from .backend import Device, resolve_dtype
from .tensor import Tensor


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new tensor holding a copy of ``data`` (list, scalar, numpy/CuPy array or Tensor)."""
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    shape = tuple(size)
    if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape):
        raise ValueError(f"size: expected non-negative ints, got {shape}")
    return shape


def _xp(device):
    device = Device(device or "cpu")
    if device.type == "cpu":
        return np, device
    cp = backend.require_cupy()
    cp.cuda.Device(device.index).use()
    return cp, device


def _filled(fill, size, dtype, device, requires_grad):
    xp, _ = _xp(device)
    dtype = resolve_dtype(dtype) if dtype is not None else backend.DEFAULT_FLOAT
    return Tensor._wrap(xp.full(_shape(size), fill, dtype=dtype), requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(0, size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(1, size, dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(fill_value, (size,), dtype, device, requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples from unet's seeded generator (see ``unet.manual_seed``)."""
    _, device = _xp(device)
    dtype = resolve_dtype(dtype) if dtype is not None else backend.DEFAULT_FLOAT
    gen = backend.random_state.generator(device)
    data = gen.standard_normal(_shape(size), dtype=np.float64 if dtype == backend.float64 else np.float32)
    return Tensor._wrap(data.astype(dtype, copy=False), requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1)."""
    _, device = _xp(device)
    dtype = resolve_dtype(dtype) if dtype is not None else backend.DEFAULT_FLOAT
    gen = backend.random_state.generator(device)
    data = gen.random(_shape(size), dtype=np.float64 if dtype == backend.float64 else np.float32)
    return Tensor._wrap(data.astype(dtype, copy=False), requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None) -> Tensor:
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("step: must not be zero")
    xp, _ = _xp(device)
    if dtype is None:
        integral = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = backend.int64 if integral else backend.DEFAULT_FLOAT
    return Tensor._wrap(xp.arange(start, end, step, dtype=resolve_dtype(dtype)))


def from_dlpack(obj) -> Tensor:
    """A tensor sharing memory with any DLPack producer (numpy, CuPy, PyTorch, JAX ...)."""
    device_type, _ = obj.__dlpack_device__()
    if device_type == 1:  # kDLCPU
        return Tensor._wrap(np.from_dlpack(obj))
    return Tensor._wrap(backend.require_cupy().from_dlpack(obj))
