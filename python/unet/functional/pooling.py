"""Pooling and resampling over the trailing 1 or 2 spatial dims of (N, C, *spatial) input
(or unbatched (C, *spatial)), with torch's names and semantics.

Everything runs through the array module (numpy on the CPU, CuPy on a GPU). A sliding
window op reads its K kernel offsets as K strided slices of the padded input, so Python
loops over the few kernel offsets, never over output positions; backward adds each
offset's share back through the same slices. Adaptive average pooling and linear
interpolation are linear maps along each axis and run as products with small
(out, in) matrices; adaptive max pooling and nearest interpolation gather.
"""
from __future__ import annotations

import itertools
import math
import numbers

import numpy as np

from .. import backend
from ..autograd import Function
from ..backend import array_module
from ..ops import scatter_add
from ..tensor import Tensor
from .conv import _ints


# ---------------------------------------------------------------- argument checks

def _spatial_input(x, n, what):
    """Check ``x`` is a floating (C, *spatial) or (N, C, *spatial) Tensor; return it batched and whether it was."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input: expected a Tensor, got {type(x).__name__}")
    if x.ndim not in (n + 1, n + 2):
        raise ValueError(f"input: {what} expects a {n + 1}-D (C, {_axes(n)}) or {n + 2}-D (N, C, {_axes(n)}) "
                         f"tensor, got shape {x.shape}")
    if not backend.is_floating(x.dtype):
        raise TypeError(f"input: expected a floating-point tensor, got {x.dtype}")
    if 0 in x.shape[-n - 1:]:
        raise ValueError(f"input: expected non-empty channel and spatial dims, got shape {x.shape}")
    batched = x.ndim == n + 2
    return (x if batched else x.unsqueeze(0)), batched


def _axes(n):
    return "L" if n == 1 else "H, W"


def _unbatch(y, batched):
    return y if batched else y.squeeze(0)


def _accumulator(dtype):
    """Sums of 16-bit floats are kept in float32 (the mixed-precision rule)."""
    return np.dtype(np.float32) if np.dtype(dtype).itemsize < 4 else np.dtype(dtype)


# ---------------------------------------------------------------- sliding windows

class _Windows:
    """Geometry of a sliding-window op over the last n dims: output size, padding, per-offset slices."""

    def __init__(self, spatial, kernel, stride, padding, dilation, ceil_mode, what):
        self.n, self.spatial, self.kernel = len(spatial), tuple(spatial), kernel
        self.stride, self.padding, self.dilation = stride, padding, dilation
        for k, p in zip(kernel, padding):
            if p > k // 2:
                raise ValueError(f"padding: expected at most half the kernel size ({kernel}), got {padding}")
        self.out = tuple(self._out_size(*args, ceil_mode)
                         for args in zip(spatial, kernel, stride, padding, dilation))
        if min(self.out) < 1:
            raise ValueError(f"input: {what} with kernel_size={kernel}, stride={stride}, padding={padding}, "
                             f"dilation={dilation} gives output size {self.out} for spatial size {self.spatial}; "
                             "the input is too small")
        # the right pad reaches the end of the last window (ceil_mode may need more than `padding`)
        self.right = tuple(max(0, (o - 1) * s + d * (k - 1) + 1 - (n + p))
                           for o, s, d, k, n, p in zip(self.out, stride, dilation, kernel, spatial, padding))

    @staticmethod
    def _out_size(length, k, s, p, d, ceil_mode):
        room = length + 2 * p - d * (k - 1) - 1
        if room < 0:
            return 0
        out = (-(-room // s) if ceil_mode else room // s) + 1
        if ceil_mode and (out - 1) * s >= length + p:  # the last window must start inside the input or left pad
            out -= 1
        return out

    def offsets(self):
        """Kernel offsets in row-major order (torch's order within a window)."""
        return list(itertools.product(*(range(k) for k in self.kernel)))

    def window(self, offset):
        """The slice of the padded input that meets kernel ``offset`` at every output position."""
        return (Ellipsis,) + tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                                   for o, d, n, s in zip(offset, self.dilation, self.out, self.stride))

    def pad(self, x, value):
        widths = [(0, 0)] * (x.ndim - self.n) + list(zip(self.padding, self.right))
        if not any(any(w) for w in widths):
            return x
        return array_module(x).pad(x, widths, constant_values=value)

    def fold(self, shape, dtype, part, xp):
        """Input-shaped sum over offsets of ``part(i)`` (output-shaped) placed at offset i's window."""
        lead = shape[:-self.n]
        padded = xp.zeros(lead + tuple(n + p + r for n, p, r in zip(self.spatial, self.padding, self.right)),
                          dtype=dtype)
        for i, offset in enumerate(self.offsets()):
            padded[self.window(offset)] += part(i)
        crop = (Ellipsis,) + tuple(slice(p, p + n) for p, n in zip(self.padding, self.spatial))
        return padded[crop]

    def flat_index(self, arg, xp):
        """Where offset number ``arg`` (output-shaped ints) of each window lies in the flattened input plane:
        the window's start (a small per-position table) plus the offset's displacement."""
        planes = [int(np.prod(self.spatial[j + 1:], dtype=np.int64)) for j in range(self.n)]
        start = np.zeros((), dtype=np.int64)
        for o, s, p, plane in zip(self.out, self.stride, self.padding, planes):
            start = start[..., None] + (np.arange(o) * s - p) * plane
        shift = np.array([sum(k * d * plane for k, d, plane in zip(offset, self.dilation, planes))
                          for offset in self.offsets()], dtype=np.int64)
        return backend.to_device(start, backend.device_of(arg)) + backend.to_device(shift, backend.device_of(arg))[arg]


class _MaxPool(Function):
    """Max over sliding windows; with ``with_indices`` a second output: each maximum's flat index in
    the input plane."""
    saves_inputs = False

    def forward(self, x, windows, with_indices):
        xp = array_module(x)
        self.windows, self.shape = windows, x.shape
        padded = windows.pad(x, -np.inf)
        offsets = windows.offsets()
        values = padded[windows.window(offsets[0])].copy()
        self.arg = xp.zeros(values.shape, dtype=np.int32)
        better = xp.empty(values.shape, dtype=bool)
        for i, offset in enumerate(offsets[1:], 1):  # torch's scan: a larger value or any NaN takes over
            candidate = padded[windows.window(offset)]
            better = xp.greater(candidate, values, out=better)
            better |= xp.isnan(candidate)
            xp.copyto(values, candidate, where=better)
            xp.copyto(self.arg, i, where=better)
        return (values, windows.flat_index(self.arg, xp)) if with_indices else values

    def backward(self, g, *_):
        zero = g.dtype.type(0)
        xp = array_module(g)
        return self.windows.fold(self.shape, g.dtype, lambda i: xp.where(self.arg == i, g, zero), xp)


class _AvgPool(Function):
    saves_inputs = False

    def forward(self, x, windows, divisor):
        xp = array_module(x)
        self.windows, self.shape, self.divisor = windows, x.shape, divisor
        padded = windows.pad(x, 0)
        total = xp.zeros(x.shape[:-windows.n] + windows.out, dtype=_accumulator(x.dtype))
        for o in windows.offsets():
            total += padded[windows.window(o)]
        return (total / divisor).astype(x.dtype, copy=False)

    def backward(self, g):
        xp = array_module(g)
        share = (g.astype(self.divisor.dtype) / self.divisor).astype(g.dtype, copy=False)
        return self.windows.fold(self.shape, g.dtype, lambda i: share, xp)


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return bool(value)


def _window_args(n, kernel_size, stride, padding, dilation):
    kernel = _ints("kernel_size", kernel_size, n, 1)
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and not stride) \
        else _ints("stride", stride, n, 1)
    return kernel, stride, _ints("padding", padding, n, 0), _ints("dilation", dilation, n, 1)


def _with_indices(values, indices, batched, return_indices):
    values = _unbatch(values, batched)
    return (values, _unbatch(indices, batched)) if _flag("return_indices", return_indices) else values


def _max_pool(n, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    what = f"max_pool{n}d"
    x, batched = _spatial_input(x, n, what)
    windows = _Windows(x.shape[-n:], *_window_args(n, kernel_size, stride, padding, dilation),
                       _flag("ceil_mode", ceil_mode), what)
    if _flag("return_indices", return_indices):
        return _with_indices(*_MaxPool.apply(x, windows, True), batched, True)
    return _unbatch(_MaxPool.apply(x, windows, False), batched)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over sliding windows of (N, C, L); with ``return_indices`` also each maximum's index in L."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over sliding windows of (N, C, H, W); indices are flat in H*W, as torch's."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _avg_pool(n, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    what = f"avg_pool{n}d"
    x, batched = _spatial_input(x, n, what)
    windows = _Windows(x.shape[-n:], *_window_args(n, kernel_size, stride, padding, 1),
                       _flag("ceil_mode", ceil_mode), what)
    xp = array_module(x.data)
    dtype = _accumulator(x.dtype)
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, numbers.Integral) \
                or divisor_override <= 0:
            raise ValueError(f"divisor_override: expected a positive int or None, got {divisor_override!r}")
        divisor = xp.asarray(divisor_override, dtype=dtype)
    else:
        divisor = xp.asarray(_divisor(windows, _flag("count_include_pad", count_include_pad)), dtype=dtype)
    return _unbatch(_AvgPool.apply(x, windows, divisor), batched)


def _divisor(w, count_include_pad):
    """Elements counted per window (torch: padding counts, the ceil_mode overhang never does)."""
    divisor = np.ones((), dtype=np.int64)
    for n, k, s, p, o in zip(w.spatial, w.kernel, w.stride, w.padding, w.out):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)
        counts = end - start if count_include_pad else np.minimum(end, n) - np.maximum(start, 0)
        divisor = divisor[..., None] * counts
    return divisor


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean over sliding windows of (N, C, L)."""
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over sliding windows of (N, C, H, W); ``divisor_override`` replaces the element count."""
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


# ---------------------------------------------------------------- adaptive pooling

def _output_size(name, output_size, spatial):
    """torch's ``output_size``: an int or a tuple whose None entries keep the input's size."""
    n = len(spatial)
    items = (output_size,) * n if not isinstance(output_size, (tuple, list)) else tuple(output_size)
    if len(items) != n or any(v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                                 or v < 1) for v in items):
        raise ValueError(f"{name}: expected a positive int or a tuple of {n} positive ints (or None), "
                         f"got {output_size!r}")
    return tuple(int(size if v is None else v) for v, size in zip(items, spatial))


def _adaptive_bounds(length, out):
    """torch's adaptive windows: [floor(i L / out), ceil((i + 1) L / out))."""
    i = np.arange(out)
    return (i * length) // out, -((-(i + 1) * length) // out)


def _adaptive_matrix(length, out, dtype):
    """The (out, length) averaging matrix of adaptive average pooling along one axis."""
    start, end = _adaptive_bounds(length, out)
    cols = np.arange(length)
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def _on_device(array, like):
    """A host-built constant (index or weight array) on the device of ``like`` (a Tensor or an array)."""
    return backend.to_device(np.ascontiguousarray(array), like.device if isinstance(like, Tensor)
                             else backend.device_of(like))


def _along_axes(x, matrices):
    """Apply one (out, in) matrix along each trailing axis (W last): a separable linear resampling."""
    y = x
    for axis, matrix in enumerate(reversed(matrices)):
        if matrix is None:
            continue
        m = Tensor._wrap(_on_device(matrix, x))
        if axis == 0:
            y = y @ m.T
        else:  # axis -2: (out, in) @ (..., in, W')
            y = m @ y
    return y


def _adaptive_avg(n, x, output_size):
    x, batched = _spatial_input(x, n, f"adaptive_avg_pool{n}d")
    spatial = x.shape[-n:]
    out = _output_size("output_size", output_size, spatial)
    dtype = _accumulator(x.dtype)
    matrices = [None if o == s else _adaptive_matrix(s, o, dtype) for s, o in zip(spatial, out)]
    y = _along_axes(x if dtype == x.dtype else x.to(dtype), matrices)
    return _unbatch(y if y.dtype == x.dtype else y.to(x.dtype), batched)


def adaptive_avg_pool1d(input, output_size):
    """Mean over ``output_size`` near-equal windows of (N, C, L); output_size=1 is global average pooling."""
    return _adaptive_avg(1, input, output_size)


def adaptive_avg_pool2d(input, output_size):
    return _adaptive_avg(2, input, output_size)


class _IndexedMax(Function):
    """Max over windows given as flat input-plane indices ``flat`` (*out, K); the second output is
    each maximum's flat index. The gradient goes to each maximum (windows may overlap: scatter-add)."""
    saves_inputs = False

    def forward(self, x, flat, n):
        xp = array_module(x)
        self.shape, self.n = x.shape, n
        windows = x.reshape(x.shape[:-n] + (-1,))[..., flat]  # (*lead, *out, K)
        arg = windows.argmax(axis=-1)[..., None]
        self.where = xp.take_along_axis(xp.broadcast_to(flat, windows.shape), arg, axis=-1)[..., 0]
        return xp.take_along_axis(windows, arg, axis=-1)[..., 0], self.where

    def backward(self, g, _):
        xp = array_module(g)
        rows = int(np.prod(self.shape[:-self.n], dtype=np.int64))
        grad = xp.zeros((rows, int(np.prod(self.shape[-self.n:], dtype=np.int64))), dtype=g.dtype)
        where = self.where.reshape(rows, -1)
        scatter_add(grad, (xp.arange(rows)[:, None], where), g.reshape(rows, -1))
        return grad.reshape(self.shape)


def _adaptive_max(n, x, output_size, return_indices):
    x, batched = _spatial_input(x, n, f"adaptive_max_pool{n}d")
    spatial = x.shape[-n:]
    out = _output_size("output_size", output_size, spatial)
    # each window's flat input indices as a (*out, *K) array; a window shorter than the widest
    # repeats its last element, which changes neither its maximum nor which one comes first
    index = np.zeros((1,) * 2 * n, dtype=np.int64)
    for j, (length, o) in enumerate(zip(spatial, out)):
        start, end = _adaptive_bounds(length, o)
        width = int((end - start).max())
        along = np.minimum(start[:, None] + np.arange(width), end[:, None] - 1)
        shape = [1] * 2 * n
        shape[j], shape[n + j] = o, width
        index = index + along.reshape(shape) * int(np.prod(spatial[j + 1:], dtype=np.int64))
    flat = _on_device(index.reshape(out + (-1,)), x)
    return _with_indices(*_IndexedMax.apply(x, flat, n), batched, return_indices)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """Max over ``output_size`` near-equal windows of (N, C, L); output_size=1 is max-over-time pooling."""
    return _adaptive_max(1, input, output_size, return_indices)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    return _adaptive_max(2, input, output_size, return_indices)


# ---------------------------------------------------------------- interpolation

INTERPOLATION_MODES = {"nearest": (1, 2), "linear": (1,), "bilinear": (2,)}  # mode -> spatial dims it takes


def _scale_factors(scale_factor, n):
    items = (scale_factor,) * n if not isinstance(scale_factor, (tuple, list)) else tuple(scale_factor)
    if len(items) != n or any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)
                              or v <= 0 for v in items):
        raise ValueError(f"scale_factor: expected a positive finite number or a tuple of {n} of them, "
                         f"got {scale_factor!r}")
    return tuple(float(v) for v in items)


def _nearest_index(length, out, factor):
    """torch's nearest source index: floor(dst * scale) in float32, with its exact 1x and 2x cases."""
    dst = np.arange(out)
    if out == length:
        return dst
    if out == 2 * length:
        return dst >> 1
    scale = np.float32(1.0 / factor if factor else length / out)
    return np.minimum(np.floor(dst.astype(np.float32) * scale).astype(np.int64), length - 1)


def _linear_matrix(length, out, factor, align_corners, dtype):
    """The (out, length) matrix of linear interpolation, with torch's source coordinates and precision."""
    real = np.float64 if dtype == np.float64 else np.float32
    if align_corners:
        scale = real((length - 1) / (out - 1) if out > 1 else 0.0)
        src = np.arange(out, dtype=real) * scale
    else:
        scale = real(1.0 / factor if factor else length / out)
        src = np.maximum(scale * (np.arange(out, dtype=real) + real(0.5)) - real(0.5), real(0))
    low = np.minimum(src.astype(np.int64), length - 1)
    high = low + (low < length - 1)
    weight = np.clip(src - low, 0, 1)
    matrix = np.zeros((out, length), dtype=np.float64)
    rows = np.arange(out)
    np.add.at(matrix, (rows, low), 1 - weight)
    np.add.at(matrix, (rows, high), weight)
    return matrix.astype(dtype)


class _NearestAxis(Function):
    """``x.take(index, axis)`` for a non-decreasing host ``index`` (nearest resampling along one axis).

    Backward adds each output's gradient to its source. The outputs that share a source are a
    run; the j-th member of every run has a distinct source, so the sum is a few plain indexed
    additions (as many as the longest run), not a scatter.
    """
    saves_inputs = False

    def forward(self, x, index, axis):
        self.shape, self.axis = x.shape, axis
        first = np.searchsorted(index, index, side="left")  # where each output's run starts
        rank = np.arange(len(index)) - first
        # per rank j: (outputs, their distinct sources), as device index arrays
        self.groups = [(_indexer(np.flatnonzero(rank == j), x), _indexer(index[rank == j], x))
                       for j in range(int(rank.max()) + 1)]
        return array_module(x).take(x, _on_device(index, x), axis=axis)

    def backward(self, g):
        xp = array_module(g)
        grad = xp.zeros(self.shape, dtype=g.dtype)
        lead = (slice(None),) * self.axis
        for outputs, sources in self.groups:
            grad[lead + (sources,)] += g[lead + (outputs,)]
        return grad


def _indexer(index, like):
    """A strided slice where ``index`` is an arithmetic progression (integer scale factors: a fast
    view), else the index array on ``like``'s device."""
    steps = np.diff(index)
    if len(index) == 1 or (steps[0] > 0 and (steps == steps[0]).all()):
        step = int(steps[0]) if len(index) > 1 else 1
        return slice(int(index[0]), int(index[-1]) + 1, step)
    return _on_device(index, like)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """Resize (N, C, L) or (N, C, H, W) to ``size`` or by ``scale_factor``: 'nearest', 'linear' (3-D),
    'bilinear' (4-D); ``align_corners`` maps the corner pixels' centres onto each other (linear modes)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input: expected a Tensor, got {type(input).__name__}")
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"mode: expected one of {tuple(INTERPOLATION_MODES)}, got {mode!r}")
    n = input.ndim - 2
    if n not in INTERPOLATION_MODES[mode]:
        shapes = " or ".join(f"{d + 2}-D (N, C, {_axes(d)})" for d in INTERPOLATION_MODES[mode])
        raise ValueError(f"input: mode {mode!r} expects a {shapes} tensor, got shape {input.shape}")
    x, _ = _spatial_input(input, n, "interpolate")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"size, scale_factor: expected exactly one of them, got size={size!r}, "
                         f"scale_factor={scale_factor!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError(f"align_corners: only the interpolating modes ('linear', 'bilinear') take it, "
                         f"got {align_corners!r} with mode 'nearest'")
    align_corners = False if align_corners is None else _flag("align_corners", align_corners)
    spatial = x.shape[-n:]
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor: not meaningful with an explicit size; give scale_factor")
        out, factors = _ints("size", size, n, 1), (None,) * n
    else:
        factors = _scale_factors(scale_factor, n)
        out = tuple(int(math.floor(s * f)) for s, f in zip(spatial, factors))
        if min(out) < 1:
            raise ValueError(f"scale_factor: {scale_factor!r} gives output size {out} for input size {spatial}")
        if recompute_scale_factor is not None and _flag("recompute_scale_factor", recompute_scale_factor):
            factors = (None,) * n  # coordinates from the sizes, not the given factor
    if mode == "nearest":
        y = x
        for axis, (length, o, f) in enumerate(zip(spatial, out, factors), start=2):
            if o != length:
                y = _NearestAxis.apply(y, _nearest_index(length, o, f), axis)
        return y
    dtype = _accumulator(x.dtype)
    # an axis that keeps its size is copied whatever the factor (torch's rule, as for nearest)
    matrices = [None if length == o else _linear_matrix(length, o, f, align_corners, dtype)
                for length, o, f in zip(spatial, out, factors)]
    y = _along_axes(x if dtype == x.dtype else x.to(dtype), matrices)
    return y if y.dtype == x.dtype else y.to(x.dtype)
