"""Layer normalisation over the trailing ``normalized_shape`` dims; batch normalisation per channel."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from ..autograd import Function
from ..backend import array_module
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


class _BatchNorm(Function):
    """y = (x - mean) * invstd * weight + bias per channel (axis 1); ``training`` says mean and var
    are the batch's own (so they depend on x, which the gradient follows), else running statistics."""
    saves_inputs = False

    def forward(self, x, *params, mean, var, eps, training, has_weight, has_bias):
        xp = array_module(x)
        self.axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        compute = _compute_dtype(x.dtype)
        xc = x.astype(compute, copy=False)
        self.training, self.has_weight, self.has_bias = training, has_weight, has_bias
        self.invstd = (1.0 / xp.sqrt(var.astype(compute) + compute.type(eps))).reshape(shape)
        self.xhat = (xc - mean.astype(compute).reshape(shape)) * self.invstd
        weight = params[0].astype(compute).reshape(shape) if has_weight else None
        self.weight = weight
        y = self.xhat * weight if has_weight else self.xhat
        if has_bias:
            y = y + params[-1].astype(compute).reshape(shape)
        self.dtypes = (x.dtype,) + tuple(p.dtype for p in params)
        return y.astype(x.dtype, copy=False)

    def backward(self, g):
        gc = g.astype(self.xhat.dtype, copy=False)
        grads = []
        if self.needs_input_grad[0]:
            gw = gc * self.weight if self.has_weight else gc
            if self.training:  # mean and var depend on x: the centred, decorrelated form
                gx = (gw - gw.mean(axis=self.axes, keepdims=True)
                      - self.xhat * (gw * self.xhat).mean(axis=self.axes, keepdims=True)) * self.invstd
            else:
                gx = gw * self.invstd
            grads.append(gx.astype(self.dtypes[0], copy=False))
        else:
            grads.append(None)
        if self.has_weight:
            grads.append((gc * self.xhat).sum(axis=self.axes).astype(self.dtypes[1], copy=False))
        if self.has_bias:
            grads.append(gc.sum(axis=self.axes).astype(self.dtypes[-1], copy=False))
        return tuple(grads)


def _compute_dtype(dtype):
    """16-bit floats are normalised in float32 (the mixed-precision rule)."""
    return np.dtype(np.float32) if np.dtype(dtype).itemsize < 4 else np.dtype(dtype)


def batch_norm(input: Tensor, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum=0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each channel (axis 1) of (N, C, *) ``input`` over all other axes, then scale and shift.

    ``training``: use the batch's mean and (biased) variance and, where running statistics are
    given, update them in place: ``running = (1 - momentum) * running + momentum * batch`` (the
    variance unbiased; nn.BatchNorm's ``momentum=None``, a plain average of all batches so far,
    passes 1/batches here). Otherwise normalise with the running statistics.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"input: expected a Tensor, got {type(input).__name__}")
    if input.ndim < 2:
        raise ValueError(f"input: expected (N, C) or (N, C, *) with at least 2 dims, got shape {input.shape}")
    if not backend.is_floating(input.dtype):
        raise TypeError(f"input: expected a floating-point tensor, got {input.dtype}")
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and (not isinstance(t, Tensor) or t.shape != (channels,)):
            raise ValueError(f"{name}: expected a Tensor of shape ({channels},), got "
                             f"{getattr(t, 'shape', type(t).__name__)}")
        if t is not None and t.device != input.device:
            raise ValueError(f"{name}: on {t.device}, input on {input.device}; move one with .to()")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean, running_var: give both or neither")
    if not training and running_mean is None:
        raise ValueError("running_mean: needed when training=False (normalisation with running statistics)")
    if not (isinstance(eps, numbers.Real) and 0 < eps < math.inf):
        raise ValueError(f"eps: expected a positive finite number, got {eps!r}")
    if training and running_mean is not None and not (
            isinstance(momentum, numbers.Real) and not isinstance(momentum, bool) and 0 <= momentum <= 1):
        raise ValueError(f"momentum: expected a number in [0, 1], got {momentum!r}")
    count = input.numel() // max(channels, 1)
    if training and count <= 1:
        raise ValueError(f"input: expected more than 1 value per channel when training, got shape {input.shape}")
    if training:
        data = input.data.astype(_compute_dtype(input.dtype), copy=False)
        axes = (0,) + tuple(range(2, input.ndim))
        mean, var = data.mean(axis=axes), data.var(axis=axes)
    else:
        mean, var = running_mean.data, running_var.data
    params = tuple(t for t in (weight, bias) if t is not None)
    out = _BatchNorm.apply(input, *params, mean=mean, var=var, eps=float(eps), training=bool(training),
                           has_weight=weight is not None, has_bias=bias is not None)
    if training and running_mean is not None:
        m = float(momentum)
        running_mean.data[...] = (1 - m) * running_mean.data + m * mean.astype(running_mean.dtype)
        unbiased = var * (count / (count - 1))
        running_var.data[...] = (1 - m) * running_var.data + m * unbiased.astype(running_var.dtype)
        running_mean._bump()
        running_var._bump()
    return out
