"""Convolutions on the kernels of ``unet._C`` (``csrc/include/unet/conv.h``), NCHW.

A 1-D convolution is the 2-D one with H = 1. ``conv1d``/``conv2d`` run the fused forward
(bias and activation in the epilogue) and, in backward, backward-data and
backward-weight in one call. The transposed convolutions are the adjoint: their forward
is the convolution's backward-data, their backward the convolution's forward (input
gradient) and backward-weight.

float16/bfloat16 inputs take the kernels' mixed-precision form: 16-bit input and weight
(and, in backward, output gradient), float32 bias, outputs and gradients, products summed
in float32 (tensor cores on CUDA); the output is rounded back to the 16-bit dtype. Under
``unet.amp.autocast`` the input, weight and bias are first rounded to the autocast dtype,
so the same form runs; the gradients of float32 tensors (master parameters) arrive in
float32.
"""
from __future__ import annotations

import numbers

from .. import _C, backend
from ..amp.autocast import HALF_DTYPES, cast_for_matmul, dtypes_mix
from ..autograd import Function
from ..backend import array_module, current_stream_ptr
from ..tensor import Tensor
from .linear import ACTIVATIONS, _kernel_dtype


def _ints(name, value, n, minimum):
    """``value`` (an int or a sequence of n ints, each >= minimum) as a tuple of n ints."""
    items = (value,) * n if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if not isinstance(items, (tuple, list)) or len(items) != n or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in items):
        raise ValueError(f"{name}: expected an int >= {minimum} or a tuple of {n} of them, got {value!r}")
    return tuple(int(v) for v in items)


def conv_padding(padding, kernel_size, dilation, stride):
    """Per-side padding ((top, bottom), (left, right), ...) for each spatial dim from an int,
    a tuple, "valid" or "same" (the output as long as the input; stride 1 only; an odd total
    puts the extra element at the end, as torch does)."""
    n = len(kernel_size)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding != "same":
            raise ValueError(f"padding: expected an int, a tuple of {n} ints, 'same' or 'valid', got {padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError(f"padding: 'same' needs stride 1, got stride {stride}")
        totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in _ints("padding", padding, n, 0))


def _kernel_settings(stride, pads, dilation):
    """The kernel's 2-D settings; a 1-D convolution is the 2-D one with H = 1."""
    if len(stride) == 1:
        stride, pads, dilation = (1,) + stride, ((0, 0),) + pads, (1,) + dilation
    return stride, pads[0] + pads[1], dilation


def _as_4d(a, spatial):
    return a.reshape(a.shape[:2] + (1,) + a.shape[2:]) if spatial == 1 else a


class _ConvBase(Function):
    """What both convolution Functions keep from forward: the original shapes and dtypes (their
    gradients return in them) and the 4-d, contiguous x and weight in the kernel's input dtype:
    16-bit for the mixed-precision form, else the compute dtype."""

    def _save_inputs(self, x, weight, bias, spatial, stride, pads, dilation, groups):
        """Returns (array module, kernel dtype, output dtype, bias), the last two as autocast
        rounds them."""
        xp = array_module(x)
        self.shape_x, self.shape_w, self.spatial = x.shape, weight.shape, spatial
        self.has_bias = bias is not None
        self.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        x, weight, bias = cast_for_matmul(x, weight, bias)  # the output follows x's (rounded) dtype
        self.compute = compute = _kernel_dtype(x.dtype)  # of bias, outputs and gradients
        kernel_in = x.dtype if x.dtype in HALF_DTYPES else compute
        self.x = xp.ascontiguousarray(_as_4d(x, spatial), dtype=kernel_in)
        self.w = xp.ascontiguousarray(_as_4d(weight, spatial), dtype=kernel_in)
        self.settings = _kernel_settings(stride, pads, dilation) + (groups,)
        return xp, compute, x.dtype, bias


class ConvFunction(_ConvBase):
    """act(conv(x, weight) + bias) over 1 or 2 spatial dims."""

    def forward(self, x, weight, bias=None, *, spatial, stride, pads, dilation, groups, activation):
        xp, compute, out_dtype, bias = self._save_inputs(x, weight, bias, spatial, stride, pads, dilation,
                                                         groups)
        b = None if bias is None else xp.ascontiguousarray(bias, dtype=compute)
        out = xp.empty(_conv_out_shape(self.x.shape, self.w.shape, *self.settings), dtype=compute)
        self.preact = None if activation == "none" else xp.empty_like(out)
        self.activation = activation
        _C.conv_forward(self.x, self.w, b, out, self.preact, activation, *self.settings,
                        current_stream_ptr(x))
        return _squeeze(out, spatial).astype(out_dtype, copy=False)

    def backward(self, g):
        xp = array_module(g)
        g4 = xp.ascontiguousarray(_as_4d(g, self.spatial), dtype=self.x.dtype)
        want_x, want_w = self.needs_input_grad[0], self.needs_input_grad[1]
        want_b = self.has_bias and self.needs_input_grad[2]
        gx = xp.empty(self.x.shape, dtype=self.compute) if want_x else None
        gw = xp.empty(self.w.shape, dtype=self.compute) if want_w else None
        gb = xp.empty(self.w.shape[0], dtype=self.compute) if want_b else None
        _C.conv_backward(g4, self.x, self.w, self.preact, self.activation, gx, gw, gb,
                         *self.settings, current_stream_ptr(g))
        dx, dw, db = self.dtypes
        grads = (None if gx is None else gx.reshape(self.shape_x).astype(dx, copy=False),
                 None if gw is None else gw.reshape(self.shape_w).astype(dw, copy=False))
        if self.has_bias:
            grads += (None if gb is None else gb.astype(db, copy=False),)
        return grads


class ConvTransposeFunction(_ConvBase):
    """The adjoint of conv (weight [C_in, C_out/groups, *k]) plus bias."""

    def forward(self, x, weight, bias=None, *, spatial, stride, pads, dilation, groups, out_size):
        xp, compute, out_dtype, bias = self._save_inputs(x, weight, bias, spatial, stride, pads, dilation,
                                                         groups)
        size = (1,) + tuple(out_size) if spatial == 1 else tuple(out_size)
        out = xp.empty((x.shape[0], weight.shape[1] * groups) + size, dtype=compute)
        _C.conv_backward(self.x, None, self.w, None, "none", out, None, None, *self.settings,
                         current_stream_ptr(x))
        if bias is not None:
            out += xp.asarray(bias, dtype=compute).reshape(-1, 1, 1)
        return _squeeze(out, spatial).astype(out_dtype, copy=False)

    def backward(self, g):
        xp = array_module(g)
        g4 = xp.ascontiguousarray(_as_4d(g, self.spatial), dtype=self.x.dtype)
        stream = current_stream_ptr(g)
        dx, dw, db = self.dtypes
        grads = (None, None)
        if self.needs_input_grad[0]:  # the convolution of g
            gx = xp.empty(self.x.shape, dtype=self.compute)
            _C.conv_forward(g4, self.w, None, gx, None, "none", *self.settings, stream)
            grads = (gx.reshape(self.shape_x).astype(dx, copy=False), None)
        if self.needs_input_grad[1]:  # conv's weight gradient with g as its input, x as its output's
            gw = xp.empty(self.w.shape, dtype=self.compute)
            _C.conv_backward(self.x, g4, self.w, None, "none", None, gw, None, *self.settings, stream)
            grads = (grads[0], gw.reshape(self.shape_w).astype(dw, copy=False))
        if self.has_bias:
            want_b = self.needs_input_grad[2]
            grads += (g4.sum(axis=(0, 2, 3), dtype=self.compute).astype(db, copy=False) if want_b else None,)
        return grads


def _conv_out_shape(x_shape, w_shape, stride, padding, dilation, groups):
    n, _, h, w = x_shape
    kh, kw = w_shape[2:]
    ho = (h + padding[0] + padding[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return (n, w_shape[0], ho, wo)


def _squeeze(out, spatial):
    return out.reshape(out.shape[:2] + out.shape[3:]) if spatial == 1 else out


def _check(input, weight, bias, spatial, groups, transposed):
    """Type, rank, dtype and device checks shared by the four entry points; returns
    (input with a batch dim, whether one was added, groups)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input: expected a Tensor, got {type(input).__name__}")
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight: expected a Tensor, got {type(weight).__name__}")
    if not backend.is_floating(input.dtype):
        raise TypeError(f"input: expected a floating-point tensor, got {input.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(t).__name__}")
        if t is not None and not dtypes_mix(t.dtype, input.dtype):
            raise TypeError(f"{name}: dtype {t.dtype} differs from input's {input.dtype}; cast one with .to()")
        if t is not None and t.device != input.device:
            raise ValueError(f"{name}: on {t.device}, input on {input.device}; move one with .to()")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups: expected a positive int, got {groups!r}")
    dims = "(C_in, C_out/groups, " if transposed else "(C_out, C_in/groups, "
    if weight.ndim != spatial + 2 or 0 in weight.shape:
        raise ValueError(f"weight: expected a {spatial + 2}-D tensor {dims}*kernel_size) without empty "
                         f"dims, got shape {weight.shape}")
    unbatched = input.ndim == spatial + 1
    if input.ndim != spatial + 2 and not unbatched:
        raise ValueError(f"input: expected a {spatial + 1}-D (unbatched) or {spatial + 2}-D (batched) "
                         f"tensor, got shape {input.shape}")
    if unbatched:
        input = input.unsqueeze(0)
    in_channels = weight.shape[0] if transposed else weight.shape[1] * groups
    if input.shape[1] != in_channels:
        raise ValueError(f"input: expected {in_channels} channels for weight of shape {weight.shape} and "
                         f"groups={groups}, got shape {input.shape}")
    if transposed and weight.shape[0] % groups:
        raise ValueError(f"groups: must divide weight's C_in={weight.shape[0]}, got {groups}")
    if not transposed and weight.shape[0] % groups:
        raise ValueError(f"groups: must divide weight's C_out={weight.shape[0]}, got {groups}")
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"bias: expected shape ({out_channels},), got {bias.shape}")
    return input, unbatched


def _conv(input, weight, bias, stride, padding, dilation, groups, activation, spatial):
    input, unbatched = _check(input, weight, bias, spatial, groups, transposed=False)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    stride = _ints("stride", stride, spatial, 1)
    dilation = _ints("dilation", dilation, spatial, 1)
    pads = conv_padding(padding, weight.shape[2:], dilation, stride)
    for d, (lo, hi) in enumerate(pads):
        span = dilation[d] * (weight.shape[2 + d] - 1) + 1
        if span > input.shape[2 + d] + lo + hi:
            raise ValueError(f"input: spatial size {input.shape[2:]} (padded by {pads}) is smaller than the "
                             f"dilated kernel ({span} in dim {d})")
    args = (input, weight) if bias is None else (input, weight, bias)
    out = ConvFunction.apply(*args, spatial=spatial, stride=stride, pads=pads, dilation=dilation,
                             groups=int(groups), activation=activation)
    return out.squeeze(0) if unbatched else out


def _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, spatial):
    input, unbatched = _check(input, weight, bias, spatial, groups, transposed=True)
    stride = _ints("stride", stride, spatial, 1)
    dilation = _ints("dilation", dilation, spatial, 1)
    if isinstance(padding, str):
        raise ValueError(f"padding: expected an int or a tuple of {spatial} ints for a transposed "
                         f"convolution, got {padding!r}")
    pads = conv_padding(padding, weight.shape[2:], dilation, stride)
    output_padding = _ints("output_padding", output_padding, spatial, 0)
    out_size = []
    for d in range(spatial):
        if output_padding[d] >= stride[d]:
            raise ValueError(f"output_padding: must be smaller than stride in each dim, got "
                             f"{output_padding} with stride {stride}")
        size = ((input.shape[2 + d] - 1) * stride[d] - 2 * pads[d][0]
                + dilation[d] * (weight.shape[2 + d] - 1) + 1 + output_padding[d])
        if size < 1:
            raise ValueError(f"input: the output of the transposed convolution would have size {size} in "
                             f"dim {d} (input {input.shape}, padding {padding})")
        out_size.append(size)
    args = (input, weight) if bias is None else (input, weight, bias)
    out = ConvTransposeFunction.apply(*args, spatial=spatial, stride=stride, pads=pads,
                                      dilation=dilation, groups=int(groups), out_size=out_size)
    return out.squeeze(0) if unbatched else out


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           groups=1, activation: str = "none") -> Tensor:
    """``act(conv1d(input, weight) + bias)``: input (N, C_in, L) or (C_in, L), weight
    (C_out, C_in/groups, k); padding an int, (p,), "same" or "valid"."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, activation, 1)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           groups=1, activation: str = "none") -> Tensor:
    """``act(conv2d(input, weight) + bias)``: input (N, C_in, H, W) or (C_in, H, W), weight
    (C_out, C_in/groups, kH, kW); padding an int, (ph, pw), "same" or "valid"."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, activation, 2)


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                     output_padding=0, groups=1, dilation=1) -> Tensor:
    """The adjoint of conv1d plus bias: input (N, C_in, L), weight (C_in, C_out/groups, k)."""
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 1)


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                     output_padding=0, groups=1, dilation=1) -> Tensor:
    """The adjoint of conv2d plus bias: input (N, C_in, H, W), weight (C_in, C_out/groups, kH, kW)."""
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 2)
