"""Weight initialisers (in place, under no_grad), with torch's names and formulas."""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..autograd import no_grad

_GAINS = {"linear": 1.0, "identity": 1.0, "sigmoid": 1.0, "conv1d": 1.0, "conv2d": 1.0,
          "tanh": 5.0 / 3, "relu": math.sqrt(2.0), "selu": 3.0 / 4}


def calculate_gain(nonlinearity: str, param=None) -> float:
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity not in _GAINS:
        raise ValueError(f"nonlinearity: expected one of {sorted(_GAINS) + ['leaky_relu']}, got {nonlinearity!r}")
    return _GAINS[nonlinearity]


def _fans(tensor):
    if tensor.ndim < 2:
        raise ValueError(f"tensor: fan in/out needs at least 2 dims, got shape {tensor.shape}")
    receptive = int(np.prod(tensor.shape[2:]))
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fill(tensor, sample):
    """Draw ``sample(generator, shape)`` on the CPU generator and copy it into ``tensor``."""
    gen = backend.random_state.generator(tensor.device)
    with no_grad():
        values = sample(gen, tensor.shape)
        xp = backend.array_module(tensor.data)
        tensor.data[...] = xp.asarray(values).astype(tensor.dtype)
        tensor._bump()
    return tensor


def uniform_(tensor, a: float = 0.0, b: float = 1.0):
    return _fill(tensor, lambda g, s: g.uniform(a, b, s))


def normal_(tensor, mean: float = 0.0, std: float = 1.0):
    return _fill(tensor, lambda g, s: g.normal(mean, std, s))


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
    return calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))


def orthogonal_(tensor, gain: float = 1.0):
    """A (semi-)orthogonal matrix from the QR of a Gaussian one, signs fixed so it is uniform."""
    if tensor.ndim < 2:
        raise ValueError(f"tensor: orthogonal_ needs at least 2 dims, got shape {tensor.shape}")
    rows, cols = tensor.shape[0], int(np.prod(tensor.shape[1:]))

    def sample(gen, shape):
        flat = gen.normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(flat if not hasattr(flat, "get") else flat.get())
        q *= np.sign(np.diag(r))
        q = q if rows >= cols else q.T
        return gain * q.reshape(shape)

    return _fill(tensor, sample)
