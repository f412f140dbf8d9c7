"""Primitive differentiable ops on Tensors: arithmetic, math, reductions, shapes, indexing.

Each op is a ``Function`` over raw arrays that works for numpy and CuPy alike
(``xp`` is taken from the data). Tensor methods and ``unet.functional`` are
thin wrappers over these.
"""
from __future__ import annotations

import numpy as np

from .amp import matmul as mixed
from .amp.autocast import HALF_DTYPES, cast_for_matmul
from .autograd import Function
from . import backend
from .backend import array_module


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    if lead:
        grad = grad.sum(axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _as(grad, like_dtype):
    return grad if grad.dtype == like_dtype else grad.astype(like_dtype)


def _erf(xp, x):
    if xp is np:
        from scipy.special import erf
    else:
        from cupyx.scipy.special import erf
    return erf(x)


# ---------------------------------------------------------------- arithmetic

class Add(Function):
    saves_inputs = False

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape, a.dtype, b.dtype)
        return a + b

    def backward(self, g):
        sa, sb, da, db = self.shapes
        return _as(unbroadcast(g, sa), da), _as(unbroadcast(g, sb), db)


class Sub(Function):
    saves_inputs = False

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape, a.dtype, b.dtype)
        return a - b

    def backward(self, g):
        sa, sb, da, db = self.shapes
        return _as(unbroadcast(g, sa), da), _as(unbroadcast(-g, sb), db)


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        a, b = self.a, self.b
        ga = _as(unbroadcast(g * b, a.shape), a.dtype) if self.needs_input_grad[0] else None
        gb = _as(unbroadcast(g * a, b.shape), b.dtype) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        a, b = self.a, self.b
        ga = _as(unbroadcast(g / b, a.shape), a.dtype) if self.needs_input_grad[0] else None
        gb = _as(unbroadcast(-g * a / (b * b), b.shape), b.dtype) if self.needs_input_grad[1] else None
        return ga, gb


class Pow(Function):
    saves_outputs = True

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, g):
        xp = array_module(g)
        a, b, out = self.a, self.b, self.out
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = _as(unbroadcast(g * b * a ** (b - 1), a.shape), a.dtype)
        if self.needs_input_grad[1]:
            # d(a^b)/db = a^b log a, taken as 0 where a == 0 (the limit used by torch)
            log_a = xp.log(xp.where(a > 0, a, 1))
            gb = _as(unbroadcast(g * out * log_a, b.shape), b.dtype)
        return ga, gb


class Neg(Function):
    saves_inputs = False

    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class MatMul(Function):
    """numpy matmul semantics: 1-D operands are promoted and the promoted axis dropped.

    Under autocast the operands are rounded to its dtype; a float16 or bfloat16 pair is
    multiplied on ``unet._C.matmul`` (float32 accumulation, 16-bit output), forward and backward."""

    def forward(self, a, b):
        self.dtypes = (a.dtype, b.dtype)
        a, b = cast_for_matmul(a, b)
        self.a, self.b = a, b
        self.mixed = a.dtype == b.dtype and a.dtype in HALF_DTYPES
        if not self.mixed:
            return a @ b
        out = mixed.matmul(a[None, :] if a.ndim == 1 else a, b[:, None] if b.ndim == 1 else b, a.dtype)
        if b.ndim == 1:  # drop the promoted axes as numpy does: b's column, then a's row
            out = out[..., 0]
        if a.ndim == 1:
            out = out[..., 0, :] if b.ndim > 1 else out[..., 0]
        return out

    def backward(self, g):
        xp = array_module(g)
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # restore the axes numpy dropped: b's first (the last axis), then a's (1-D @ 1-D gives 0-d)
        g2 = xp.expand_dims(g, -1) if b.ndim == 1 else g
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        ga = gb = None
        if self.mixed:  # float32 products, summed over broadcast batch axes, then each input's dtype
            if self.needs_input_grad[0]:
                ga = unbroadcast(mixed.matmul(g2, b2, np.float32, trans_b=True), a2.shape)
                ga = ga.reshape(a.shape).astype(self.dtypes[0], copy=False)
            if self.needs_input_grad[1]:
                gb = unbroadcast(mixed.matmul(a2, g2, np.float32, trans_a=True), b2.shape)
                gb = gb.reshape(b.shape).astype(self.dtypes[1], copy=False)
            return ga, gb
        if self.needs_input_grad[0]:
            ga = unbroadcast(g2 @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            gb = unbroadcast(xp.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return ga, gb


# ---------------------------------------------------------------- elementwise math

class Exp(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a):
        self.out = array_module(a).exp(a)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    def forward(self, a):
        self.a = a
        return array_module(a).log(a)

    def backward(self, g):
        return g / self.a


class Sqrt(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a):
        self.out = array_module(a).sqrt(a)
        return self.out

    def backward(self, g):
        return g / (2 * self.out)


class Abs(Function):
    def forward(self, a):
        self.a = a
        return abs(a)

    def backward(self, g):
        return g * array_module(g).sign(self.a)


class Tanh(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a):
        self.out = array_module(a).tanh(a)
        return self.out

    def backward(self, g):
        return g * (1 - self.out * self.out)


class Sigmoid(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a):
        xp = array_module(a)
        # split by sign so exp never overflows
        e = xp.exp(-abs(a))
        self.out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return self.out

    def backward(self, g):
        return g * self.out * (1 - self.out)


class Relu(Function):
    saves_inputs = False

    def forward(self, a):
        self.mask = a > 0
        return array_module(a).where(self.mask, a, a.dtype.type(0))  # not a * mask: -inf * 0 is nan

    def backward(self, g):
        return g * self.mask


class Gelu(Function):
    """x * Phi(x), the exact (erf) form."""

    def forward(self, a):
        xp = array_module(a)
        self.a = a
        self.cdf = (0.5 * (1 + _erf(xp, a / np.sqrt(2)))).astype(a.dtype, copy=False)
        return a * self.cdf

    def backward(self, g):
        xp = array_module(g)
        pdf = xp.exp(-0.5 * self.a * self.a) / np.sqrt(2 * np.pi)
        return (g * (self.cdf + self.a * pdf)).astype(g.dtype, copy=False)


class Clamp(Function):
    saves_inputs = False

    def forward(self, a, lo, hi):
        xp = array_module(a)
        self.mask = xp.ones(a.shape, dtype=bool)
        if lo is not None:
            self.mask &= a >= lo
        if hi is not None:
            self.mask &= a <= hi
        return xp.clip(a, lo, hi)

    def backward(self, g):
        return g * self.mask


class Cast(Function):
    saves_inputs = False

    def forward(self, a, dtype):
        self.dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.dtype)


class ToDevice(Function):
    saves_inputs = False

    def forward(self, a, device):
        from .backend import device_of, to_device
        self.source = device_of(a)
        return to_device(a, device)

    def backward(self, g):
        from .backend import to_device
        return to_device(g, self.source)


# ---------------------------------------------------------------- reductions

def _normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for ax in axes:
        bound = max(ndim, 1)  # a 0-d tensor accepts dim 0 and -1 (and reduces nothing), like torch
        if not -bound <= ax < bound:
            raise IndexError(f"dim: {ax} is out of range for a tensor of {ndim} dimensions")
        out.append(ax % bound)
    if len(set(out)) != len(out):
        raise ValueError(f"dim: {axis} names a dimension twice")
    return tuple(out) if ndim else ()


def _expand_reduced(g, shape, axes, keepdims):
    """Broadcast a reduced gradient back to the input's ``shape``."""
    xp = array_module(g)
    if not keepdims:
        for ax in sorted(axes):
            g = xp.expand_dims(g, ax)
    return xp.broadcast_to(g, shape)


class Sum(Function):
    saves_inputs = False

    def forward(self, a, axis, keepdims):
        self.shape, self.axes, self.keepdims = a.shape, _normalize_axes(axis, a.ndim), keepdims
        return a.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        return _expand_reduced(g, self.shape, self.axes, self.keepdims).copy()


class Mean(Function):
    saves_inputs = False

    def forward(self, a, axis, keepdims):
        self.shape, self.axes, self.keepdims = a.shape, _normalize_axes(axis, a.ndim), keepdims
        self.count = int(np.prod([a.shape[ax] for ax in self.axes]))
        return a.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        return _expand_reduced(g / self.count, self.shape, self.axes, self.keepdims).astype(g.dtype)


class Var(Function):
    def forward(self, a, axis, correction, keepdims):
        xp = array_module(a)
        self.axes = _normalize_axes(axis, a.ndim)
        self.keepdims = keepdims
        n = int(np.prod([a.shape[ax] for ax in self.axes]))
        self.centered = a - a.mean(axis=self.axes, keepdims=True)
        self.denom = max(n - correction, 0)
        total = (self.centered * self.centered).sum(axis=self.axes, keepdims=keepdims)
        return (total / self.denom if self.denom else total * xp.nan).astype(a.dtype)

    def backward(self, g):
        g = _expand_reduced(g, self.centered.shape, self.axes, self.keepdims)
        scale = 2 / self.denom if self.denom else float("nan")  # no degrees of freedom left
        return (g * self.centered * scale).astype(g.dtype)


class MaxMin(Function):
    """max/min of all elements (the gradient is shared evenly by tied extremes, as in torch), or
    along one axis (the gradient goes to the element whose index is returned, the first extreme)."""
    saves_inputs = False

    def forward(self, a, axis, keepdims, largest):
        xp = array_module(a)
        self.shape, self.keepdims = a.shape, keepdims
        if axis is None or a.ndim == 0:
            if a.size == 0:
                raise ValueError("max/min of an empty tensor has no value")
            self.axis = None
            value = a.max() if largest else a.min()
            self.ties = a == value
            return xp.asarray(value).reshape((1,) * a.ndim if keepdims else ())
        (self.axis,) = _normalize_axes(axis, a.ndim)
        if a.shape[self.axis] == 0:
            raise ValueError(f"max/min over dim {axis} of size 0 has no value")
        idx = a.argmax(axis=self.axis) if largest else a.argmin(axis=self.axis)
        self.index = xp.expand_dims(idx, self.axis)
        values = xp.take_along_axis(a, self.index, axis=self.axis)
        return values if keepdims else values.squeeze(self.axis)

    def backward(self, g):
        xp = array_module(g)
        if self.axis is None:
            return (self.ties * (g.reshape(()) / self.ties.sum())).astype(g.dtype)
        grad = xp.zeros(self.shape, dtype=g.dtype)
        if not self.keepdims:
            g = xp.expand_dims(g, self.axis)
        xp.put_along_axis(grad, self.index, g, axis=self.axis)
        return grad


# ---------------------------------------------------------------- shapes

class Reshape(Function):
    saves_inputs = False

    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.shape)


class Permute(Function):
    saves_inputs = False

    def forward(self, a, dims):
        self.inverse = tuple(np.argsort(dims))
        return a.transpose(dims)

    def backward(self, g):
        return g.transpose(self.inverse)


class Expand(Function):
    saves_inputs = False

    def forward(self, a, shape):
        self.shape = a.shape
        return array_module(a).broadcast_to(a, shape)

    def backward(self, g):
        return unbroadcast(g, self.shape)


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (slice, int, np.integer, type(None), type(Ellipsis))) for i in items)


def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices."""
    if array_module(target) is np:
        np.add.at(target, index, values)
    elif backend.is_deterministic():  # the GPU's atomic adds land in a varying order
        cp = backend.require_cupy()
        host = cp.asnumpy(target)
        host_index = tuple(cp.asnumpy(i) if backend.is_cupy_array(i) else i for i in index) \
            if isinstance(index, tuple) else cp.asnumpy(index)
        np.add.at(host, host_index, cp.asnumpy(values))
        target[...] = cp.asarray(host)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)


class GetItem(Function):
    saves_inputs = False

    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        return a[index]

    def backward(self, g):
        xp = array_module(g)
        grad = xp.zeros(self.shape, dtype=self.dtype)
        if _is_basic_index(self.index):
            grad[self.index] = g  # a basic index never repeats an element
        else:
            scatter_add(grad, self.index, g)
        return grad


class Gather(Function):
    """torch.gather: ``index`` may be smaller than ``a`` outside ``axis``; it sets the output shape."""
    saves_inputs = False

    def forward(self, a, axis, index):
        self.shape, self.axis, self.index = a.shape, axis, index
        # take_along_axis broadcasts instead, so first cut ``a`` down to the index's extent
        window = tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(index.shape))
        return array_module(a).take_along_axis(a[window], index, axis=axis)

    def backward(self, g):
        xp = array_module(g)
        grad = xp.zeros(self.shape, dtype=g.dtype)
        full = list(xp.indices(self.index.shape, sparse=True))
        full[self.axis] = self.index
        scatter_add(grad, tuple(full), g)
        return grad


class Concat(Function):
    saves_inputs = False

    def forward(self, *arrays, axis):
        self.axis = axis
        self.sizes = [a.shape[axis] for a in arrays]
        return array_module(arrays[0]).concatenate(arrays, axis=axis)

    def backward(self, g):
        cuts = np.cumsum(self.sizes)[:-1].tolist()
        return tuple(array_module(g).split(g, cuts, axis=self.axis))


class Stack(Function):
    saves_inputs = False

    def forward(self, *arrays, axis):
        self.axis = axis
        return array_module(arrays[0]).stack(arrays, axis=axis)

    def backward(self, g):
        xp = array_module(g)
        return tuple(xp.take(g, i, axis=self.axis) for i in range(g.shape[self.axis]))


class Split(Function):
    saves_inputs = False

    def forward(self, a, sizes, axis):
        self.axis = axis
        cuts = np.cumsum(sizes)[:-1].tolist()
        return tuple(array_module(a).split(a, cuts, axis=axis))

    def backward(self, *grads):
        return array_module(grads[0]).concatenate(grads, axis=self.axis)


# ---------------------------------------------------------------- selection

class Where(Function):
    saves_inputs = False

    def forward(self, cond, a, b):
        self.cond = cond
        self.shapes = (a.shape, b.shape, a.dtype, b.dtype)
        return array_module(a).where(cond, a, b)

    def backward(self, g):
        sa, sb, da, db = self.shapes
        zero = g.dtype.type(0)
        ga = _as(unbroadcast(array_module(g).where(self.cond, g, zero), sa), da)
        gb = _as(unbroadcast(array_module(g).where(self.cond, zero, g), sb), db)
        return ga, gb


class MaskedFill(Function):
    saves_inputs = False

    def forward(self, a, mask, value):
        xp = array_module(a)
        self.mask, self.shape = mask, a.shape
        return xp.where(mask, xp.asarray(value, dtype=a.dtype), a)

    def backward(self, g):
        xp = array_module(g)
        return unbroadcast(xp.where(self.mask, g.dtype.type(0), g), self.shape)
