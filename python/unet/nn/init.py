"""Weight initialisers (in place, outside autograd), with torch's names and formulas."""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..tensor import Tensor

_GAINS = {"linear": 1.0, "sigmoid": 1.0, "conv1d": 1.0, "conv2d": 1.0, "conv3d": 1.0,
          "conv_transpose1d": 1.0, "conv_transpose2d": 1.0, "conv_transpose3d": 1.0,
          "tanh": 5.0 / 3, "relu": math.sqrt(2.0), "selu": 3.0 / 4}


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The factor that keeps activations' variance steady through ``nonlinearity`` (torch's table)."""
    if nonlinearity == "leaky_relu":
        if param is None:
            param = 0.01
        if isinstance(param, bool) or not isinstance(param, (int, float)):
            raise ValueError(f"param: expected a number (the negative slope), got {param!r}")
        return math.sqrt(2.0 / (1 + param ** 2))
    if nonlinearity not in _GAINS:
        raise ValueError(f"nonlinearity: expected one of {sorted(_GAINS) + ['leaky_relu']}, got {nonlinearity!r}")
    return _GAINS[nonlinearity]


def _fans(tensor):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor: expected a Tensor, got {type(tensor).__name__}")
    if tensor.ndim < 2:
        raise ValueError(f"tensor: fan in/out needs at least 2 dims, got shape {tensor.shape}")
    receptive = int(np.prod(tensor.shape[2:]))
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fill(tensor, sample):
    """Draw ``sample(generator, shape)`` from unet's seeded generator for the tensor's device
    and write it into ``tensor`` in place (no graph: initialisation is not differentiable)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor: expected a Tensor, got {type(tensor).__name__}")
    if tensor.numel() == 0:  # nothing to fill; torch makes this a no-op too
        return tensor
    gen = backend.random_state.generator(tensor.device)
    values = sample(gen, tensor.shape)
    tensor.data[...] = backend.array_module(tensor.data).asarray(values).astype(tensor.dtype)
    return tensor._bump()


# Only `random` and `standard_normal` are drawn: numpy's and CuPy's Generators both have them
# (CuPy's has no `normal`).
def uniform_(tensor, a: float = 0.0, b: float = 1.0):
    return _fill(tensor, lambda g, s: a + (b - a) * g.random(s))


def normal_(tensor, mean: float = 0.0, std: float = 1.0):
    return _fill(tensor, lambda g, s: mean + std * g.standard_normal(s))


def constant_(tensor, value: float):
    return _fill(tensor, lambda g, s: np.full(s, value))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain: float = 1.0):
    fan_in, fan_out = _fans(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain: float = 1.0):
    fan_in, fan_out = _fans(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_std(tensor, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0  # a zero-size tensor


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))


def orthogonal_(tensor, gain: float = 1.0):
    """A (semi-)orthogonal matrix from the QR of a Gaussian one, signs fixed so it is uniform."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor: expected a Tensor, got {type(tensor).__name__}")
    if tensor.ndim < 2:
        raise ValueError(f"tensor: orthogonal_ needs at least 2 dims, got shape {tensor.shape}")
    rows, cols = tensor.shape[0], int(np.prod(tensor.shape[1:]))

    def sample(gen, shape):
        # QR of a tall Gaussian matrix; a wide tensor takes the transpose, so its rows are orthonormal
        flat = gen.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(flat if not hasattr(flat, "get") else flat.get())
        q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # sign fix: makes q Haar-distributed
        q = q if rows >= cols else q.T
        return gain * q.reshape(shape)

    return _fill(tensor, sample)
