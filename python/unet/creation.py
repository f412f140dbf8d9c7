"""Making tensors: from data, filled, random, ranges, and from other frameworks via DLPack."""
from __future__ import annotations

import contextlib
import numbers

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
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"size: expected non-negative ints, got {shape}")
    return shape


@contextlib.contextmanager
def _on(device):
    """Yield (xp, Device) with the device current while the array is made, and only then."""
    device = Device(device if device is not None else "cpu")
    if device.type == "cpu":
        yield np, device
        return
    cp = backend.require_cupy()
    with cp.cuda.Device(device.index):
        yield cp, device


def _float_dtype(dtype):
    dtype = resolve_dtype(dtype) if dtype is not None else backend.DEFAULT_FLOAT
    if not backend.is_floating(dtype):
        raise TypeError(f"dtype: random samples need a floating-point dtype, got {dtype}")
    return dtype


def _filled(fill, size, dtype, device, requires_grad):
    shape = _shape(size)
    dtype = resolve_dtype(dtype) if dtype is not None else backend.DEFAULT_FLOAT
    with _on(device) as (xp, _):
        return Tensor._wrap(xp.full(shape, fill, dtype=dtype), requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(0, size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(1, size, dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Filled with ``fill_value``; without ``dtype`` a bool or int fill keeps its kind (as in torch)."""
    if dtype is None and isinstance(fill_value, (bool, np.bool_)):
        dtype = backend.bool_
    elif dtype is None and isinstance(fill_value, numbers.Integral):
        dtype = backend.int64
    return _filled(fill_value, (size,), dtype, device, requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=t.dtype if dtype is None else dtype, device=t.device,
                 requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=t.dtype if dtype is None else dtype, device=t.device,
                requires_grad=requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, requires_grad=False) -> Tensor:
    return full(t.shape, fill_value, dtype=t.dtype if dtype is None else dtype, device=t.device,
                requires_grad=requires_grad)


def _sample(draw, size, dtype, device, requires_grad):
    shape, dtype = _shape(size), _float_dtype(dtype)
    with _on(device) as (_, device):
        gen = backend.random_state.generator(device)
        # the generators draw float32 or float64; half precisions are rounded from float32
        data = draw(gen, shape, np.float64 if dtype == backend.float64 else np.float32)
        return Tensor._wrap(data.astype(dtype, copy=False), requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples from unet's seeded generator (see ``unet.manual_seed``)."""
    return _sample(lambda gen, shape, dt: gen.standard_normal(shape, dtype=dt), size, dtype, device,
                   requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1)."""
    return _sample(lambda gen, shape, dt: gen.random(shape, dtype=dt), size, dtype, device,
                   requires_grad)


def randn_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return randn(t.shape, dtype=t.dtype if dtype is None else dtype, device=t.device,
                 requires_grad=requires_grad)


def rand_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return rand(t.shape, dtype=t.dtype if dtype is None else dtype, device=t.device,
                requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None) -> Tensor:
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("step: must not be zero")
    if dtype is None:
        integral = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = backend.int64 if integral else backend.DEFAULT_FLOAT
    dtype = resolve_dtype(dtype)
    with _on(device) as (xp, _):
        return Tensor._wrap(xp.arange(start, end, step, dtype=dtype))


def from_dlpack(obj) -> Tensor:
    """A tensor sharing memory with any DLPack producer (numpy, CuPy, PyTorch, JAX ...).

    bfloat16 cannot come this way: numpy's DLPack importer does not know the type.
    """
    device_type, _ = obj.__dlpack_device__()
    if device_type == 1:  # kDLCPU
        data = np.from_dlpack(obj)
    else:
        data = backend.require_cupy().from_dlpack(obj)
    if data.dtype not in backend.SUPPORTED_DTYPES:
        raise TypeError(f"obj: unsupported dtype {data.dtype}; expected one of "
                        f"{sorted(str(d) for d in backend.SUPPORTED_DTYPES)} (cast it before sharing)")
    return Tensor._wrap(data)
