"""Fully connected layer on the fused kernel: act(x @ W^T + b) in one pass of ``unet._C``.

float16/bfloat16 tensors follow the mixed-precision rule: their values (already
rounded) go through the kernel in float32 and the result is rounded back. Under
``unet.amp.autocast`` the layer runs on the mixed-precision ``_C.matmul`` instead: x, W
and b rounded to the autocast dtype, float32 accumulation, bias and activation in the
epilogue, a 16-bit output; backward on the same kernel (dx = dZ W, dW = dZ^T x with the
bias gradient fused), the gradients of float32 parameters computed straight into float32.
"""
from __future__ import annotations

import numpy as np

from .. import _C, backend, ops
from ..amp import matmul as mixed
from ..amp.autocast import CASTABLE, cast_for_matmul, dtypes_mix, get_autocast_dtype
from ..autograd import Function
from ..backend import array_module, current_stream_ptr
from ..tensor import Tensor

ACTIVATIONS = ("none", "relu", "gelu", "tanh", "sigmoid")
_KERNEL_DTYPES = (backend.float32, backend.float64)


def _kernel_dtype(dtype):
    return dtype if dtype in _KERNEL_DTYPES else backend.float32


class LinearFunction(Function):
    saves_inputs = True

    def forward(self, x, weight, bias=None, *, activation):
        xp = array_module(x)
        self.has_bias = bias is not None
        self.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        compute = _kernel_dtype(x.dtype)
        self.lead, in_features = x.shape[:-1], x.shape[-1]
        out_features = weight.shape[0]
        rows = int(np.prod(self.lead, dtype=np.int64))
        self.x = xp.ascontiguousarray(x.reshape(rows, in_features), dtype=compute)
        self.w = xp.ascontiguousarray(weight, dtype=compute)
        b = None if bias is None else xp.ascontiguousarray(bias, dtype=compute)
        out = xp.empty((rows, out_features), dtype=compute)
        self.preact = None if activation == "none" else xp.empty_like(out)
        self.activation = activation
        _C.linear_forward(self.x, self.w, b, out, self.preact, activation, current_stream_ptr(x))
        return out.reshape(self.lead + (out_features,)).astype(x.dtype, copy=False)

    def backward(self, g):
        xp = array_module(g)
        g2 = xp.ascontiguousarray(g.reshape(self.x.shape[0], g.shape[-1]), dtype=self.x.dtype)
        want_x, want_w = self.needs_input_grad[0], self.needs_input_grad[1]
        want_b = self.has_bias and self.needs_input_grad[2]
        gx = xp.empty_like(self.x) if want_x else None
        gw = xp.empty_like(self.w) if want_w else None
        gb = xp.empty(self.w.shape[0], dtype=self.x.dtype) if want_b else None
        _C.linear_backward(g2, self.x, self.w, self.preact, self.activation, gx, gw, gb,
                           current_stream_ptr(g))
        dx, dw, db = self.dtypes
        grads = (None if gx is None else gx.reshape(self.lead + (self.x.shape[1],)).astype(dx, copy=False),
                 None if gw is None else gw.astype(dw, copy=False))
        if self.has_bias:
            grads += (None if gb is None else gb.astype(db, copy=False),)
        return grads


class AutocastLinearFunction(Function):
    """``act(x W^T + b)`` with x, W, b rounded to the autocast dtype, on ``_C.matmul``."""
    saves_inputs = True

    def forward(self, x, weight, bias=None, *, activation):
        self.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        x, weight, bias = cast_for_matmul(x, weight, bias)
        self.lead = x.shape[:-1]
        self.x = x.reshape(-1, x.shape[-1])
        self.w, self.activation = weight, activation
        self.preact = None if activation == "none" else array_module(x).empty(
            (self.x.shape[0], weight.shape[0]), x.dtype)
        out = mixed.gemm(self.x, weight, x.dtype, trans_b=True, bias=bias, activation=activation,
                         preact=self.preact)
        return out.reshape(self.lead + (weight.shape[0],))

    def backward(self, g):
        low = self.x.dtype
        g = g.reshape(-1, g.shape[-1])
        if self.activation != "none":  # dZ = g act'(Z) in float32, rounded: the products' 16-bit input
            act = _ACTIVATION_OPS[self.activation]()
            act.forward(self.preact.astype(np.float32))
            g = act.backward(g.astype(np.float32))
        g = g.astype(low, copy=False)
        dx_dtype, dw_dtype, db_dtype = self.dtypes
        want_x, want_w = self.needs_input_grad[:2]
        want_b = db_dtype is not None and self.needs_input_grad[2]
        gx = mixed.gemm(g, self.w, dx_dtype).reshape(self.lead + (self.w.shape[1],)) if want_x else None
        gb = array_module(g).empty(g.shape[1], np.float32) if want_b else None
        gw = None
        if want_w:  # bias_grad: the row sums of op(A) = g^T, i.e. g summed over the rows
            gw = mixed.gemm(g, self.x, dw_dtype, trans_a=True, bias_grad=gb)
        elif want_b:
            gb = g.astype(np.float32).sum(axis=0)
        grads = (gx, gw)
        return grads + (gb,) if db_dtype is not None else grads


_ACTIVATION_OPS = {"relu": ops.Relu, "gelu": ops.Gelu, "tanh": ops.Tanh, "sigmoid": ops.Sigmoid}


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str = "none") -> Tensor:
    """``act(x @ weight.T + bias)`` with x (..., in), weight (out, in), bias (out,)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a Tensor, got {type(x).__name__}")
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"weight: expected a 2-D Tensor (out_features, in_features), got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x: expected last dim in_features={weight.shape[1]}, got shape {x.shape}")
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],)):
        raise ValueError(f"bias: expected shape ({weight.shape[0]},), got {getattr(bias, 'shape', bias)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    if not backend.is_floating(x.dtype):
        raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and not dtypes_mix(t.dtype, x.dtype):
            raise TypeError(f"{name}: dtype {t.dtype} differs from x's {x.dtype}; cast one with .to()")
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: on {t.device}, x on {x.device}; move one with .to()")
    args = (x, weight) if bias is None else (x, weight, bias)
    autocasting = get_autocast_dtype() is not None and x.dtype in CASTABLE
    return (AutocastLinearFunction if autocasting else LinearFunction).apply(*args, activation=activation)
