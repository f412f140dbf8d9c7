"""An LSTM layer with layer normalization and/or zoneout, a GRU layer with zoneout, on the
fused whole-sequence CPU kernel ``unet._C.rnn_ln_forward`` / ``rnn_ln_backward`` (math in
``csrc/include/unet/rnn_ln.h``): one call per layer and direction, forward and backward.

Layer normalization (Ba et al. 2016), LSTM only, with gains γ and biases β::

    pre = LN(x W_ih^T; γ_ih, β_ih) + LN(h W_hh^T; γ_hh, β_hh) + b_ih + b_hh     (over 4H)
    i,f,g,o = σ,σ,tanh,σ(pre);  c' = f*c + i*g;  h' = o * tanh(LN(c'; γ_c, β_c))  (over H)

Zoneout (Krueger et al. 2016) with keep factors k (T, B, H): ``h_t = k_h h_{t-1} + (1-k_h) h'``
and, for the LSTM, ``c_t = k_c c_{t-1} + (1-k_c) c'``: 0/1 masks in training, the
probability p everywhere in evaluation (the expectation).

Variable lengths, reverse direction and autocast follow ``unet.functional.rnn``; there is
no projection (proj_size). CPU and CUDA (the CUDA kernel is compile-checked only so far).
"""
from __future__ import annotations

import numpy as np

from .. import _C, backend
from ..amp.autocast import cast_for_matmul
from ..autograd import Function
from ..backend import array_module, current_stream_ptr
from ..tensor import Tensor
from .rnn import _kernel_dtype, autocast_projection, check_layer_args

LAYER_NORM_NAMES = ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias")


class NormalizedRecurrentFunction(Function):
    """One layer, one direction: inputs (x, h0, c0, w_ih, w_hh, b_ih, b_hh, six layer-norm
    arrays), any of h0, c0, the biases and the layer-norm arrays None; outputs (y, h_n) or
    (y, h_n, c_n) for an LSTM. The keep factors are constants (keyword arguments)."""

    saves_inputs = True
    saves_outputs = True

    def forward(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh, *ln, mode, lengths, reverse, keep_h, keep_c, eps):
        xp = array_module(x)
        slots = (x, h0, c0, w_ih, w_hh, b_ih, b_hh) + ln
        self.mode, self.reverse, self.eps = mode, reverse, float(eps)
        self.present = tuple(a is not None for a in slots)
        self.dtypes = tuple(None if a is None else a.dtype for a in slots)
        out_dtype = x.dtype
        projection_dtype = autocast_projection(x.dtype)
        if projection_dtype:  # as functional.rnn: float32 outputs, a 16-bit input projection
            out_dtype = backend.float32
            x, h0, w_ih, w_hh, b_ih, b_hh = cast_for_matmul(x, h0, w_ih, w_hh, b_ih, b_hh)
        compute = _kernel_dtype(x.dtype)
        steps, batch, _ = x.shape
        hidden = w_hh.shape[1]
        self.sizes = (steps, batch, hidden)
        lstm = mode == "lstm"

        def arr(a):
            return None if a is None else xp.ascontiguousarray(a, dtype=compute)

        self.x, self.w_ih, self.w_hh, self.b_ih, self.b_hh = map(arr, (x, w_ih, w_hh, b_ih, b_hh))
        self.ln = tuple(map(arr, ln))
        self.keep_h, self.keep_c = arr(keep_h), arr(keep_c)
        self.h0 = arr(h0) if h0 is not None else xp.zeros((batch, hidden), compute)
        self.c0 = (arr(c0) if c0 is not None else xp.zeros((batch, hidden), compute)) if lstm else None
        self.lengths = None if lengths is None else xp.asarray(lengths, dtype=np.int64)
        self.y = xp.empty((steps, batch, hidden), compute)
        h_n = xp.empty((batch, hidden), compute)
        c_n = xp.empty((batch, hidden), compute) if lstm else None
        layer_norm = self.ln[0] is not None
        self.workspace = xp.empty(_C.rnn_ln_workspace_size(mode, steps, batch, hidden, layer_norm), compute)
        _C.rnn_ln_forward(*self._inputs(), self.y, h_n, c_n, self.workspace, current_stream_ptr(x),
                          projection_dtype)
        out = (self.y.astype(out_dtype, copy=False), h_n.astype(out_dtype, copy=False))
        return out + (c_n.astype(out_dtype, copy=False),) if lstm else out

    def _inputs(self):
        return (self.mode, self.x, self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.h0, self.c0,
                self.lengths, self.reverse) + self.ln + (self.eps, self.keep_h, self.keep_c)

    def backward(self, grad_y, grad_h_n, grad_c_n=None):
        xp = array_module(grad_y)
        compute = self.x.dtype

        def arr(g):
            return None if g is None else xp.ascontiguousarray(g, dtype=compute)

        wanted = iter(self.needs_input_grad)  # lists the present slots only
        want = [bool(next(wanted)) if p else False for p in self.present]
        likes = (self.x, self.h0, self.c0, self.w_ih, self.w_hh, self.b_ih, self.b_hh) + self.ln
        grads = [xp.empty_like(like) if w and like is not None else None for w, like in zip(want, likes)]
        gx, gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh = grads[:7]
        scratch = xp.empty(_C.rnn_ln_scratch_size(self.mode, *self.sizes), compute)
        _C.rnn_ln_backward(*self._inputs(), self.y, self.workspace, arr(grad_y), arr(grad_h_n),
                           arr(grad_c_n) if self.c0 is not None else None,
                           gx, gw_ih, gw_hh, gb_ih, gb_hh, gh0, gc0, *grads[7:], scratch,
                           current_stream_ptr(grad_y))
        return tuple(None if g is None else g.astype(dtype, copy=False)
                     for g, dtype, p in zip(grads, self.dtypes, self.present) if p)


def _keep_array(keep, name, shape, x):
    """Keep factors as an array of x's array type, shape (T, B, H), or None."""
    if keep is None:
        return None
    raw = keep.data if isinstance(keep, Tensor) else keep
    xp = array_module(x.data)
    try:
        raw = xp.asarray(raw)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected an array of keep factors, got {type(keep).__name__}") from None
    if raw.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} (time, batch, hidden_size), got {raw.shape}")
    if raw.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected real keep factors, got dtype {raw.dtype}")
    if raw.dtype.kind != "b" and raw.size and not bool(((raw >= 0) & (raw <= 1)).all()):  # masks: always
        raise ValueError(f"{name}: expected keep factors in [0, 1], got values outside it")
    return raw


def rnn_ln(mode: str, x: Tensor, h0: Tensor | None = None, c0: Tensor | None = None, weights=(),
           layer_norm=None, keep_h=None, keep_c=None, lengths=None, reverse: bool = False,
           eps: float = 1e-5):
    """One LSTM (``mode='lstm'``) or GRU (``'gru'``) layer in one direction with layer
    normalization and/or zoneout, over a whole time-major sequence.

    ``x``, ``h0``, ``c0``, ``weights`` (w_ih, w_hh[, b_ih, b_hh]), ``lengths`` and ``reverse``
    as in ``unet.functional.rnn`` (no projection). ``layer_norm``: None or the six Tensors
    (ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias (4H,), ln_c_weight, ln_c_bias (H,)),
    LSTM only; ``eps`` its variance epsilon. ``keep_h``, ``keep_c`` (LSTM): zoneout keep
    factors (T, B, H) in [0, 1] (arrays or Tensors, no gradient), or None.
    Returns ``(y, h_n, c_n)`` as ``unet.functional.rnn`` does.
    """
    if mode not in ("lstm", "gru"):
        raise ValueError(f"mode: expected 'lstm' or 'gru', got {mode!r}")
    w_ih, w_hh, b_ih, b_hh, w_hr, lengths = check_layer_args(mode, x, h0, c0, weights, lengths, reverse)
    if w_hr is not None:
        raise ValueError("weights: expected no projection w_hr (proj_size) with layer norm or zoneout, got one")
    steps, batch, _ = x.shape
    hidden = w_hh.shape[1]
    ln = (None,) * 6
    if layer_norm is not None:
        if mode != "lstm":
            raise ValueError(f"layer_norm: expected None for mode {mode!r} (layer normalization is for 'lstm' "
                             "only), got the parameters")
        if not isinstance(layer_norm, (tuple, list)) or len(layer_norm) != 6:
            raise TypeError(f"layer_norm: expected a tuple of six Tensors {LAYER_NORM_NAMES}, got "
                            f"{type(layer_norm).__name__}")
        for name, t, size in zip(LAYER_NORM_NAMES, layer_norm, (4 * hidden,) * 4 + (hidden,) * 2):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}: expected a Tensor, got {type(t).__name__}")
            if t.shape != (size,):
                raise ValueError(f"{name}: expected shape ({size},), got {t.shape}")
            if t.device != x.device:
                raise ValueError(f"{name}: on {t.device}, x on {x.device}; move one with .to()")
        ln = tuple(layer_norm)
    if keep_c is not None and mode != "lstm":
        raise ValueError(f"keep_c: expected None for mode {mode!r} (a cell state exists for 'lstm' only), got an array")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps: expected a float > 0, got {eps!r}")
    keep_h = _keep_array(keep_h, "keep_h", (steps, batch, hidden), x)
    keep_c = _keep_array(keep_c, "keep_c", (steps, batch, hidden), x)
    out = NormalizedRecurrentFunction.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, *ln, mode=mode,
                                            lengths=lengths, reverse=bool(reverse), keep_h=keep_h,
                                            keep_c=keep_c, eps=eps)
    return (out[0], out[1], out[2]) if mode == "lstm" else (out[0], out[1], None)
