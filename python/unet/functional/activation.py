"""Activations and (log-)softmax."""
from __future__ import annotations

from ..amp.autocast import cast_for_fp32
from ..autograd import Function
from ..backend import array_module
from ..ops import Gelu, Relu, Sigmoid, Tanh
from ..tensor import _dim


def relu(x):
    return Relu.apply(x)


def gelu(x):
    return Gelu.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def leaky_relu(x, negative_slope=0.01):
    from .tensor_ops import where
    return where(x > 0, x, x * negative_slope)


class Softmax(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, x, dim):
        xp = array_module(x)
        self.dim = dim
        e = xp.exp(x - x.max(axis=dim, keepdims=True))
        self.out = e / e.sum(axis=dim, keepdims=True)
        return self.out

    def backward(self, g):
        y = self.out
        return y * (g - (g * y).sum(axis=self.dim, keepdims=True))


class LogSoftmax(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, x, dim):
        xp = array_module(x)
        self.dim = dim
        shifted = x - x.max(axis=dim, keepdims=True)
        self.out = shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
        return self.out

    def backward(self, g):
        xp = array_module(g)
        return g - xp.exp(self.out) * g.sum(axis=self.dim, keepdims=True)


def softmax(x, dim=-1):
    return Softmax.apply(cast_for_fp32(x), _dim(dim, x.ndim))


def log_softmax(x, dim=-1):
    return LogSoftmax.apply(cast_for_fp32(x), _dim(dim, x.ndim))
