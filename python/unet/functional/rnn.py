"""Recurrent layers on the fused whole-sequence kernels: one call into ``unet._C`` per layer and
direction, forward and backward; Python never loops over time steps.

Gate order and formulas are torch's (see ``csrc/include/unet/rnn.h``)::

    lstm      i,f,g,o = σ,σ,tanh,σ(x W_ih^T + b_ih + h W_hh^T + b_hh)
              c' = f*c + i*g;  h' = o*tanh(c')  (times W_hr^T with a projection)
    gru       r,z = σ(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z})
              n = tanh(x W_in^T + b_in + r*(h W_hn^T + b_hn));  h' = (1-z)*n + z*h
    rnn_tanh  h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)   (rnn_relu: relu)

Variable lengths: sequence b is valid for its first ``lengths[b]`` steps; padded steps
leave the state as it was, output zeros and get no gradient, so ``h_n``/``c_n`` are
the states after each sequence's own last step, and a reverse direction starts there.

float16/bfloat16 tensors follow the mixed-precision rule of ``functional/linear.py``:
their values go through the kernel in float32 and the results are rounded back.
Under ``unet.amp.autocast`` the input x, the initial state h0 and every weight and bias
are rounded to the autocast dtype and the float32 kernel runs on those values (16-bit
inputs, float32 accumulation); the outputs are float32, and so are the gradients of
float32 tensors. The state carried from step to step inside the kernel stays float32.
The input projection x W_ih^T of the forward pass runs on the mixed-precision matmul
(``projection_dtype`` of the kernel: tensor cores on a GPU, AVX-512 BF16 on a CPU that has
it): the same exact products, summed in float32 in another order.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _C, backend
from ..amp.autocast import CASTABLE, cast_for_matmul, dtypes_mix, get_autocast_dtype, is_autocast_enabled
from ..autograd import Function
from ..backend import array_module, current_stream_ptr, is_cupy_array
from ..tensor import Tensor

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
_KERNEL_DTYPES = (backend.float32, backend.float64)


def _kernel_dtype(dtype):
    return dtype if dtype in _KERNEL_DTYPES else backend.float32


def autocast_projection(x_dtype):
    """The kernels' ``projection_dtype`` for a layer whose input has dtype ``x_dtype``: inside
    autocast (which rounds x and the weights) the autocast dtype's name, else None."""
    if is_autocast_enabled() and x_dtype in CASTABLE:
        return np.dtype(get_autocast_dtype()).name
    return None


def check_lengths(lengths, steps: int, batch: int, argname: str = "lengths"):
    """``lengths`` (list, numpy/CuPy array or Tensor of ints) as a host int64 array of ``batch``
    entries in [1, steps]; ValueError naming ``argname`` otherwise. A GPU array is copied to
    the host to be checked (one synchronisation), as every kernel trusts what it is given."""
    raw = lengths.data if isinstance(lengths, Tensor) else lengths
    if is_cupy_array(raw):
        raw = raw.get()
    if isinstance(raw, (numbers.Integral, np.integer)) and not isinstance(raw, (bool, np.bool_)):
        raw = [raw]
    try:
        array = np.asarray(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{argname}: expected a 1-D sequence of ints, got {type(lengths).__name__}") from None
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise ValueError(f"{argname}: expected a 1-D sequence of ints, got "
                         f"{'shape ' + str(array.shape) if array.dtype.kind in 'iu' else 'dtype ' + str(array.dtype)}"
                         f" ({_preview(array)})")
    if array.shape[0] != batch:
        raise ValueError(f"{argname}: expected one length per sequence ({batch}), got {array.shape[0]}")
    if array.size and (array.min() < 1 or array.max() > steps):
        raise ValueError(f"{argname}: expected every length in [1, {steps}] (the number of time steps), "
                         f"got {_preview(array)}")
    return array.astype(np.int64)


def _preview(array, limit=8):
    values = array.ravel().tolist()
    return str(values[:limit])[:-1] + (", ...]" if len(values) > limit else "]")


class RecurrentFunction(Function):
    """One layer, one direction, the whole sequence: inputs (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr),
    any of h0, c0, biases, w_hr may be None; outputs (y, h_n) or (y, h_n, c_n) for an LSTM."""

    saves_inputs = True
    saves_outputs = True  # backward reads y: an in-place change of the output must be refused

    def forward(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, *, mode, lengths, reverse):
        xp = array_module(x)
        self.mode, self.reverse = mode, reverse
        self.present = tuple(a is not None for a in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr))
        self.dtypes = tuple(None if a is None else a.dtype for a in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr))
        out_dtype = x.dtype
        projection_dtype = autocast_projection(x.dtype)
        if projection_dtype:  # the outputs of the float32 kernel, unrounded
            out_dtype = backend.float32
            x, h0, w_ih, w_hh, b_ih, b_hh, w_hr = cast_for_matmul(x, h0, w_ih, w_hh, b_ih, b_hh, w_hr)
        compute = _kernel_dtype(x.dtype)
        steps, batch, _ = x.shape
        hidden, proj = w_ih.shape[0] // GATES[mode], w_hh.shape[1]
        self.sizes = (steps, batch, hidden, proj)
        lstm = mode == "lstm"

        def arr(a):
            return None if a is None else xp.ascontiguousarray(a, dtype=compute)

        self.x, self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.w_hr = map(arr, (x, w_ih, w_hh, b_ih, b_hh, w_hr))
        self.h0 = arr(h0) if h0 is not None else xp.zeros((batch, proj), compute)
        self.c0 = (arr(c0) if c0 is not None else xp.zeros((batch, hidden), compute)) if lstm else None
        self.lengths = None if lengths is None else xp.asarray(lengths, dtype=np.int64)
        self.y = xp.empty((steps, batch, proj), compute)
        h_n = xp.empty((batch, proj), compute)
        c_n = xp.empty((batch, hidden), compute) if lstm else None
        self.workspace = xp.empty(_C.rnn_workspace_size(mode, steps, batch, hidden, proj), compute)
        _C.rnn_forward(mode, self.x, self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.w_hr, self.h0,
                       self.c0, self.lengths, reverse, self.y, h_n, c_n, self.workspace,
                       current_stream_ptr(x), projection_dtype)
        out = (self.y.astype(out_dtype, copy=False), h_n.astype(out_dtype, copy=False))
        return out + (c_n.astype(out_dtype, copy=False),) if lstm else out

    def backward(self, grad_y, grad_h_n, grad_c_n=None):
        xp = array_module(grad_y)
        compute = self.x.dtype

        def arr(g):
            return None if g is None else xp.ascontiguousarray(g, dtype=compute)

        # which of the 8 slots want a gradient (needs_input_grad lists the present ones only)
        wanted = iter(self.needs_input_grad)
        want = [bool(next(wanted)) if p else False for p in self.present]

        def out(k, like):
            return xp.empty_like(like) if want[k] else None

        grads = [out(0, self.x), out(1, self.h0), out(2, self.c0) if self.c0 is not None else None,
                 out(3, self.w_ih), out(4, self.w_hh),
                 out(5, self.b_ih) if self.b_ih is not None else None,
                 out(6, self.b_hh) if self.b_hh is not None else None,
                 out(7, self.w_hr) if self.w_hr is not None else None]
        scratch = xp.empty(_C.rnn_backward_scratch_size(self.mode, *self.sizes), compute)
        gx, gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh, gw_hr = grads
        _C.rnn_backward(self.mode, self.x, self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.w_hr,
                        self.h0, self.c0, self.lengths, self.reverse, self.y, self.workspace,
                        arr(grad_y), arr(grad_h_n), arr(grad_c_n) if self.c0 is not None else None,
                        gx, gw_ih, gw_hh, gb_ih, gb_hh, gw_hr, gh0, gc0, scratch,
                        current_stream_ptr(grad_y))
        return tuple(None if g is None else g.astype(dtype, copy=False)
                     for g, dtype, p in zip(grads, self.dtypes, self.present) if p)


def _unpack_weights(mode, weights):
    """torch's flat order per layer and direction: (w_ih, w_hh[, b_ih, b_hh][, w_hr]);
    a 5-tuple may hold None for the biases and w_hr."""
    if not isinstance(weights, (tuple, list)):
        raise TypeError(f"weights: expected a tuple (w_ih, w_hh[, b_ih, b_hh][, w_hr]), got "
                        f"{type(weights).__name__}")
    weights = tuple(weights)
    if len(weights) == 2:
        return weights + (None, None, None)
    if len(weights) == 3 and mode == "lstm":
        return weights[:2] + (None, None, weights[2])
    if len(weights) == 4:
        return weights + (None,)
    if len(weights) == 5:
        return weights
    raise ValueError(f"weights: expected (w_ih, w_hh), (w_ih, w_hh, b_ih, b_hh) or, for an lstm with a "
                     f"projection, (w_ih, w_hh, w_hr) / (w_ih, w_hh, b_ih, b_hh, w_hr); got {len(weights)} "
                     f"entries")


def _shape(t):
    return t.shape if isinstance(t, Tensor) else type(t).__name__


def rnn(mode: str, x: Tensor, h0: Tensor | None = None, c0: Tensor | None = None, weights=(),
        lengths=None, reverse: bool = False):
    """One recurrent layer in one direction over a whole time-major sequence.

    ``x`` (T, B, I); ``weights`` = (w_ih (G*H, I), w_hh (G*H, P)[, b_ih, b_hh (G*H,)][, w_hr (P, H)])
    in torch's order, G = 4 (lstm), 3 (gru), 1 (rnn_tanh, rnn_relu); P = H unless an lstm has
    the projection w_hr. ``h0`` (B, P) and, for an lstm, ``c0`` (B, H) default to zeros.
    ``lengths``: B ints in [1, T] (list, array or Tensor) or None (all T).
    Returns ``(y, h_n, c_n)``: y (T, B, P), h_n (B, P), c_n (B, H) or None unless lstm.
    """
    w_ih, w_hh, b_ih, b_hh, w_hr, lengths = check_layer_args(mode, x, h0, c0, weights, lengths, reverse)
    out = RecurrentFunction.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mode=mode, lengths=lengths,
                                  reverse=bool(reverse))
    return (out[0], out[1], out[2]) if mode == "lstm" else (out[0], out[1], None)


def check_layer_args(mode, x, h0, c0, weights, lengths, reverse):
    """Validates ``rnn``'s arguments (errors name the argument); returns the unpacked weights
    (w_ih, w_hh, b_ih, b_hh, w_hr) and the lengths as a host int64 array, or None when every
    sequence is full."""
    if mode not in GATES:
        raise ValueError(f"mode: expected one of {tuple(GATES)}, got {mode!r}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a Tensor, got {type(x).__name__}")
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"x: expected a non-empty (time, batch, input_size) tensor, got shape {x.shape}")
    if not backend.is_floating(x.dtype):
        raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
    w_ih, w_hh, b_ih, b_hh, w_hr = _unpack_weights(mode, weights)
    steps, batch, inputs = x.shape
    gates = GATES[mode]
    named = (("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh), ("w_hr", w_hr),
             ("h0", h0), ("c0", c0))
    for name, t in named:
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(t).__name__}")
    if w_ih is None or w_ih.ndim != 2 or w_ih.shape[0] % gates or w_ih.shape[0] == 0 \
            or w_ih.shape[1] != inputs:
        raise ValueError(f"w_ih: expected ({gates}*hidden_size, {inputs}) for mode {mode!r} and x of shape "
                         f"{x.shape}, got {_shape(w_ih)}")
    hidden = w_ih.shape[0] // gates
    if w_hr is not None and mode != "lstm":
        raise ValueError(f"w_hr: a projection exists for mode 'lstm' only, got one for {mode!r}")
    if w_hr is not None and (w_hr.ndim != 2 or w_hr.shape[1] != hidden or not 0 < w_hr.shape[0]):
        raise ValueError(f"w_hr: expected (proj_size, {hidden}), got {w_hr.shape}")
    proj = hidden if w_hr is None else w_hr.shape[0]
    expected = {"w_hh": (gates * hidden, proj), "b_ih": (gates * hidden,), "b_hh": (gates * hidden,),
                "h0": (batch, proj), "c0": (batch, hidden)}
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"{'b_hh' if b_hh is None else 'b_ih'}: expected both biases or neither, got one")
    if c0 is not None and mode != "lstm":
        raise ValueError(f"c0: a cell state exists for mode 'lstm' only, got one for {mode!r}")
    for name, t in named:
        if t is None:
            continue
        if name in expected and t.shape != expected[name]:
            raise ValueError(f"{name}: expected shape {expected[name]}, got {t.shape}")
        if not dtypes_mix(t.dtype, x.dtype):
            raise TypeError(f"{name}: dtype {t.dtype} differs from x's {x.dtype}; cast one with .to()")
        if t.device != x.device:
            raise ValueError(f"{name}: on {t.device}, x on {x.device}; move one with .to()")
    if not isinstance(reverse, (bool, np.bool_)):
        raise TypeError(f"reverse: expected a bool, got {reverse!r}")
    if lengths is not None:
        lengths = check_lengths(lengths, steps, batch)
        if lengths.min() == steps:  # every sequence full: the plain path
            lengths = None
    return w_ih, w_hh, b_ih, b_hh, w_hr, lengths
