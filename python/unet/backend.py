"""Devices, array modules, dtypes and random state.

A Tensor keeps a numpy array on the CPU and a CuPy array on a GPU; everything
that is not a hand-written kernel runs through the array module ``xp`` of the
data it touches, so one expression serves both devices (the Chainer habit).
CuPy is optional: importing unet never needs it.
"""
from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

# ---------------------------------------------------------------- dtypes

float64 = np.dtype(np.float64)
float32 = np.dtype(np.float32)
float16 = np.dtype(np.float16)
bfloat16 = np.dtype(ml_dtypes.bfloat16)
int64 = np.dtype(np.int64)
int32 = np.dtype(np.int32)
bool_ = np.dtype(np.bool_)

_DTYPES = {
    "float64": float64, "double": float64,
    "float32": float32, "float": float32,
    "float16": float16, "half": float16, "fp16": float16,
    "bfloat16": bfloat16, "bf16": bfloat16,
    "int64": int64, "long": int64,
    "int32": int32, "int": int32,
    "bool": bool_,
}
SUPPORTED_DTYPES = frozenset(_DTYPES.values())
FLOAT_DTYPES = frozenset({float64, float32, float16, bfloat16})
DEFAULT_FLOAT = float32


def resolve_dtype(dtype, argname: str = "dtype") -> np.dtype:
    """Turn a dtype spelling ('float32', np.float32, unet.float32, float) into a numpy dtype."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise TypeError(f"{argname}: expected one of {sorted(_DTYPES)}, got {dtype!r}")
        return _DTYPES[dtype]
    if dtype is float:
        return DEFAULT_FLOAT
    if dtype is int:
        return int64
    if dtype is bool:
        return bool_
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{argname}: expected a dtype, got {dtype!r}") from None
    if resolved not in SUPPORTED_DTYPES:
        raise TypeError(f"{argname}: unsupported dtype {resolved}; expected one of "
                        f"{sorted(str(d) for d in SUPPORTED_DTYPES)}")
    return resolved


def is_floating(dtype: np.dtype) -> bool:
    return np.dtype(dtype) in FLOAT_DTYPES


# ---------------------------------------------------------------- CuPy

@functools.lru_cache(maxsize=None)
def cupy_module():
    """CuPy if it imports and sees a GPU, else None."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, or a CUDA driver/runtime error
        return None


def cuda_available() -> bool:
    return cupy_module() is not None


def require_cupy():
    cp = cupy_module()
    if cp is None:
        raise RuntimeError("device 'cuda' needs CuPy and a CUDA GPU; neither was found "
                           "(pip install 'unet[cuda]' on a machine with a GPU)")
    return cp


def is_cupy_array(data) -> bool:
    return type(data).__module__.startswith("cupy")


def array_module(data):
    """numpy for CPU data, cupy for GPU data."""
    return cupy_module() if is_cupy_array(data) else np


def current_stream_ptr(data) -> int:
    """The CUDA stream a kernel on ``data`` must launch on (CuPy's current one), 0 on CPU."""
    if is_cupy_array(data):
        return cupy_module().cuda.get_current_stream().ptr
    return 0


# ---------------------------------------------------------------- devices

class Device:
    """'cpu' or 'cuda:N'. Compares equal to its string spelling."""

    __slots__ = ("type", "index")

    def __init__(self, spec="cpu"):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
        kind, _, idx = spec.partition(":")
        if kind not in ("cpu", "cuda") or (kind == "cpu" and idx) or (idx and not idx.isdigit()):
            raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
        self.type = kind
        self.index = int(idx) if idx else (0 if kind == "cuda" else None)

    def __str__(self):
        return "cpu" if self.type == "cpu" else f"cuda:{self.index}"

    __repr__ = lambda self: f"device('{self}')"

    def __eq__(self, other):
        try:
            other = Device(other)
        except (TypeError, ValueError):
            return NotImplemented
        return (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


def device_of(data) -> Device:
    if is_cupy_array(data):
        return Device(f"cuda:{data.device.id}")
    return Device("cpu")


def to_device(data, device: Device):
    """Copy ``data`` to ``device`` (an explicit copy: the only place one happens)."""
    if device_of(data) == device:
        return data
    if device.type == "cpu":
        return data.get()
    cp = require_cupy()
    with cp.cuda.Device(device.index):
        return cp.asarray(data)


# ---------------------------------------------------------------- determinism

_deterministic = False


def use_deterministic(mode: bool = True) -> None:
    """Ask for bitwise run-to-run reproducible results on every device.

    unet's own kernels are deterministic always (fixed summation orders, no atomics).
    What is not by default: scatter-adds on a GPU (the embedding gradient, indexing
    backward), whose atomic adds land in a varying order. In this mode they are summed
    on the host instead (slower).
    """
    global _deterministic
    if not isinstance(mode, bool):
        raise TypeError(f"mode: expected a bool, got {type(mode).__name__}")
    _deterministic = mode


def is_deterministic() -> bool:
    return _deterministic


# ---------------------------------------------------------------- random state

class _RandomState:
    """One seeded generator per device, so a seed fixes every random draw."""

    def __init__(self):
        self.seed(None)

    def seed(self, seed):
        self._seed = seed
        self._cpu = np.random.default_rng(seed)
        self._gpu = None

    def generator(self, device: Device):
        if device.type == "cpu":
            return self._cpu
        if self._gpu is None:
            cp = require_cupy()
            self._gpu = cp.random.default_rng(self._seed)
        return self._gpu

    def get_state(self) -> dict:
        return {"seed": self._seed, "cpu": self._cpu.bit_generator.state}

    def set_state(self, state: dict):
        self.seed(state["seed"])
        self._cpu.bit_generator.state = state["cpu"]


random_state = _RandomState()


def manual_seed(seed: int):
    """Seed every random draw unet makes (initialisation, dropout, shuffling)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    random_state.seed(int(seed))
