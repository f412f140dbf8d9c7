"""Layers with parameters or modes: Linear, Embedding, Dropout, LayerNorm, BatchNorm, activations."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import functional as F
from ..backend import DEFAULT_FLOAT, is_floating, resolve_dtype
from ..functional.linear import ACTIVATIONS
from ..tensor import Tensor
from . import init
from .module import Module, Parameter


def _empty(*shape, dtype=None):
    dtype = resolve_dtype(dtype) if dtype is not None else DEFAULT_FLOAT
    if not is_floating(dtype):
        raise TypeError(f"dtype: parameters need a floating-point dtype, got {dtype}")
    return Parameter(np.zeros(shape, dtype=dtype))


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return bool(value)


def _probability(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
    return float(value)


class Linear(Module):
    """y = act(x W^T + b) on the fused kernel; ``activation`` fuses relu/gelu/tanh/sigmoid into it."""

    def __init__(self, in_features, out_features, bias=True, activation="none", dtype=None):
        super().__init__()
        self.in_features = _positive("in_features", in_features)
        self.out_features = _positive("out_features", out_features)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.weight = _empty(out_features, in_features, dtype=dtype)
        self.register_parameter("bias", _empty(out_features, dtype=dtype) if _flag("bias", bias) else None)
        self.reset_parameters()

    def reset_parameters(self):
        # torch's default: kaiming_uniform(a=sqrt(5)) for W, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for b
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias, self.activation)

    def extra_repr(self):
        act = f", activation={self.activation!r}" if self.activation != "none" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{act}"


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=None):
        super().__init__()
        self.num_embeddings = _positive("num_embeddings", num_embeddings)
        self.embedding_dim = _positive("embedding_dim", embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)) \
                    or not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx: expected an int in [{-num_embeddings}, {num_embeddings}), "
                                 f"got {padding_idx!r}")
            padding_idx = int(padding_idx) % num_embeddings
        self.padding_idx = padding_idx
        self.weight = _empty(num_embeddings, embedding_dim, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, ids):
        return F.embedding(ids, self.weight, self.padding_idx)

    def extra_repr(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = _probability("p", p)

    def forward(self, x):
        return F.dropout(_tensor(x), self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dims, then scale by ``weight`` and shift by ``bias``."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
        if not isinstance(shape, (tuple, list)) or not shape:
            raise ValueError(f"normalized_shape: expected a positive int or a non-empty tuple of them, "
                             f"got {normalized_shape!r}")
        self.normalized_shape = tuple(_positive("normalized_shape", n) for n in shape)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < math.inf:
            raise ValueError(f"eps: expected a positive finite number, got {eps!r}")
        self.eps = float(eps)
        affine = _flag("elementwise_affine", elementwise_affine)
        with_bias = affine and _flag("bias", bias)
        self.register_parameter("weight", init.ones_(_empty(*self.normalized_shape, dtype=dtype)) if affine else None)
        self.register_parameter("bias", _empty(*self.normalized_shape, dtype=dtype) if with_bias else None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.weight is not None}, "
                f"bias={self.bias is not None}")


class _BatchNorm(Module):
    """Per-channel normalisation over the batch (and length/space), torch's BatchNorm semantics.

    Training mode normalises with the batch's statistics and, with ``track_running_stats``,
    updates ``running_mean``/``running_var`` (``momentum=None``: a plain average of all batches
    so far) and counts ``num_batches_tracked``; eval mode normalises with the running statistics.
    """
    dims = ()  # the input ranks a subclass accepts

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, dtype=None):
        super().__init__()
        self.num_features = _positive("num_features", num_features)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < math.inf:
            raise ValueError(f"eps: expected a positive finite number, got {eps!r}")
        self.eps = float(eps)
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)
                                     or not 0 <= momentum <= 1):
            raise ValueError(f"momentum: expected a number in [0, 1] or None, got {momentum!r}")
        self.momentum = None if momentum is None else float(momentum)
        self.affine = _flag("affine", affine)
        self.track_running_stats = _flag("track_running_stats", track_running_stats)
        n = self.num_features
        self.register_parameter("weight", init.ones_(_empty(n, dtype=dtype)) if self.affine else None)
        self.register_parameter("bias", _empty(n, dtype=dtype) if self.affine else None)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor._wrap(_empty(n, dtype=dtype).data))
            self.register_buffer("running_var", Tensor._wrap(_empty(n, dtype=dtype).data + 1))
            self.register_buffer("num_batches_tracked", Tensor._wrap(np.zeros((), dtype=np.int64)))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0
            for t in (self.running_mean, self.running_var, self.num_batches_tracked):
                t._bump()

    def forward(self, input):
        x = _tensor(input, "input")
        if x.ndim not in self.dims:
            raise ValueError(f"input: {type(self).__name__} expects a {' or '.join(f'{d}-D' for d in self.dims)} "
                             f"tensor, got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"input: expected {self.num_features} channels on axis 1, got shape {x.shape}")
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data[...] += 1
            self.num_batches_tracked._bump()
            if momentum is None:  # a cumulative average: batch k weighs 1/k
                momentum = 1.0 / int(self.num_batches_tracked.item())
        # without running statistics even eval mode normalises with the batch's own, as torch does
        use_batch = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_batch,
                            0.0 if momentum is None else momentum, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L): statistics per channel C."""
    dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W): statistics per channel C."""
    dims = (4,)


def _tensor(x, argname="x"):
    if not isinstance(x, Tensor):
        raise TypeError(f"{argname}: expected a Tensor, got {type(x).__name__}")
    return x


class _Elementwise(Module):
    fn = None

    def forward(self, x):
        return type(self).fn(_tensor(x))


class Identity(Module):
    def __init__(self, *args, **kwargs):  # accepts and ignores arguments, like torch's
        super().__init__()

    def forward(self, x):
        return x


class ReLU(_Elementwise):
    fn = staticmethod(F.relu)


class GELU(_Elementwise):
    """The exact (erf) GELU; torch's ``approximate='tanh'`` is not offered."""
    fn = staticmethod(F.gelu)

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate != "none":
            raise ValueError(f"approximate: only 'none' (the exact erf form) is supported, got {approximate!r}")


class Tanh(_Elementwise):
    fn = staticmethod(F.tanh)


class Sigmoid(_Elementwise):
    fn = staticmethod(F.sigmoid)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real) \
                or not math.isfinite(negative_slope):
            raise ValueError(f"negative_slope: expected a finite number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        return F.leaky_relu(_tensor(x), self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Softmax(Module):
    def __init__(self, dim=-1):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim: expected an int, got {dim!r}")
        self.dim = int(dim)

    def forward(self, x):
        return F.softmax(_tensor(x), self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return F.log_softmax(_tensor(x), self.dim)
