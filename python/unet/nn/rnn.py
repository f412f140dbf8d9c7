"""Recurrent layers (RNN, LSTM, GRU and their cells) with torch.nn's constructors, parameter
names, initialisation and call conventions, on the fused whole-sequence kernels
(``unet.functional.rnn``): one kernel call per layer and direction, forward and backward.

Beyond torch: ``forward(x, hx, lengths=...)`` takes the lengths of a padded batch
directly (``nn.utils.rnn.pack_padded_sequence`` wraps the same thing torch's way).
Under ``unet.amp.autocast`` the inputs and weights are rounded to 16 bits, the float32
kernel runs on them and the outputs are float32 (see ``unet.functional.rnn``).
"""
from __future__ import annotations

import math
import numbers
import warnings

from .. import functional as F
from ..amp.autocast import dtypes_mix
from .. import backend
from ..backend import array_module
from ..functional.rnn import GATES, check_lengths
from ..functional.rnn_ln import LAYER_NORM_NAMES
from ..tensor import Tensor
from . import init
from .layers import _empty, _flag, _positive, _probability
from .module import Module
from .utils.rnn import PackedSequence

_MODE_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}


class RNNBase(Module):
    """Stacked, optionally bidirectional recurrent layers of one ``mode`` ('lstm', 'gru',
    'rnn_tanh', 'rnn_relu'). Parameters per layer k and direction (suffix '' or '_reverse'):
    ``weight_ih_l{k}`` (G*H, in), ``weight_hh_l{k}`` (G*H, P), ``bias_ih_l{k}``, ``bias_hh_l{k}``
    (G*H,), ``weight_hr_l{k}`` (P, H) when proj_size > 0, registered in torch's order.

    Beyond torch (LSTM and GRU; see ``unet.functional.rnn_ln``): ``layer_norm=True`` (LSTM)
    adds, after each layer's weights, ``ln_ih_weight_l{k}``, ``ln_ih_bias_l{k}``,
    ``ln_hh_weight_l{k}``, ``ln_hh_bias_l{k}`` (4H,) and ``ln_c_weight_l{k}``, ``ln_c_bias_l{k}``
    (H,) (gains init 1, biases 0); ``zoneout=p``: in training each unit of h (and c) keeps its
    previous value with probability p, masks drawn from unet's generator per layer and
    direction (h's, then c's, each ``random((T, B, H)) < p``); in evaluation
    h_t = p h_{t-1} + (1-p) h_t'. Neither works with proj_size."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None,
                 layer_norm=False, zoneout=0.0):
        super().__init__()
        if mode not in GATES:
            raise ValueError(f"mode: expected one of {tuple(GATES)}, got {mode!r}")
        self.mode = mode
        self.input_size = _positive("input_size", input_size)
        self.hidden_size = _positive("hidden_size", hidden_size)
        self.num_layers = _positive("num_layers", num_layers)
        self.bias = _flag("bias", bias)
        self.batch_first = _flag("batch_first", batch_first)
        self.dropout = _probability("dropout", dropout)
        self.bidirectional = _flag("bidirectional", bidirectional)
        if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral) or proj_size < 0:
            raise ValueError(f"proj_size: expected a non-negative int (0: no projection), got {proj_size!r}")
        if proj_size and mode != "lstm":
            raise ValueError(f"proj_size: a projection exists for LSTM only, not {_MODE_NAMES[mode]}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size: expected less than hidden_size={hidden_size}, got {proj_size}")
        self.proj_size = int(proj_size)
        self.layer_norm = _flag("layer_norm", layer_norm)
        self.zoneout = _probability("zoneout", zoneout)
        if self.layer_norm and mode != "lstm":
            raise ValueError(f"layer_norm: expected False for {_MODE_NAMES[mode]} (layer normalization exists for "
                             "LSTM only), got True")
        if self.zoneout and mode not in ("lstm", "gru"):
            raise ValueError(f"zoneout: expected 0 for {_MODE_NAMES[mode]} (zoneout exists for LSTM and GRU only), "
                             f"got {self.zoneout}")
        if self.proj_size and (self.layer_norm or self.zoneout):
            raise ValueError(f"proj_size: expected 0 with layer_norm or zoneout (whether the norm and "
                             f"zoneout act before or after the projection is not settled), got {self.proj_size}")
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(f"dropout: applied between stacked layers only, so dropout={self.dropout} with "
                          "num_layers=1 does nothing", stacklevel=3)
        gates = GATES[mode] * self.hidden_size
        out = self.proj_size or self.hidden_size
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else out * self._directions
            for suffix in self._suffixes:
                setattr(self, f"weight_ih_l{layer}{suffix}", _empty(gates, layer_input, dtype=dtype))
                setattr(self, f"weight_hh_l{layer}{suffix}", _empty(gates, out, dtype=dtype))
                if self.bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", _empty(gates, dtype=dtype))
                    setattr(self, f"bias_hh_l{layer}{suffix}", _empty(gates, dtype=dtype))
                if self.proj_size:
                    setattr(self, f"weight_hr_l{layer}{suffix}", _empty(self.proj_size, self.hidden_size,
                                                                          dtype=dtype))
                if self.layer_norm:
                    for name in LAYER_NORM_NAMES:
                        size = self.hidden_size if name.startswith("ln_c") else gates
                        setattr(self, f"{name}_l{layer}{suffix}", _empty(size, dtype=dtype))
        self.reset_parameters()
        if device is not None:
            self.to(device)

    @property
    def _directions(self):
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self):
        return ("", "_reverse")[:self._directions]

    @property
    def _has_cell(self):
        return self.mode == "lstm"

    def reset_parameters(self):
        """torch's init: every weight and bias U(-1/sqrt(hidden_size), 1/sqrt(hidden_size));
        layer-norm gains 1, their biases 0."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if not name.startswith("ln_"):
                init.uniform_(p, -bound, bound)
            elif "_weight_" in name:
                init.ones_(p)
            else:
                init.zeros_(p)

    def flatten_parameters(self):
        """Nothing to do (the kernels read the parameters where they are); kept for torch code."""

    def _weights(self, layer, suffix):
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else ()) + \
            (("weight_hr",) if self.proj_size else ())
        return tuple(getattr(self, f"{name}_l{layer}{suffix}") for name in names)

    @property
    def all_weights(self):
        return [list(self._weights(layer, suffix)) for layer in range(self.num_layers)
                for suffix in self._suffixes]

    # ------------------------------------------------------------ calling
    def _check_state(self, name, s, x, batch, size, unbatched):
        if not isinstance(s, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(s).__name__}")
        expected = (self.num_layers * self._directions,) + (() if unbatched else (batch,)) + (size,)
        if s.shape != expected:
            layout = "(num_layers * num_directions, " + ("" if unbatched else "batch, ") + "size)"
            raise ValueError(f"{name}: expected shape {expected} {layout}"
                             f"{' for unbatched x' if unbatched else ''}, got {s.shape}")
        if not dtypes_mix(s.dtype, x.dtype) or s.device != x.device:
            raise TypeError(f"{name}: expected {x.dtype} on {x.device} like x, got {s.dtype} on {s.device}")
        return s.unsqueeze(1) if unbatched else s

    def _initial_state(self, hx, x, batch, unbatched):
        """(h0, c0) as (layers*dirs, batch, ·) tensors or None (zeros)."""
        if hx is None:
            return None, None
        out = self.proj_size or self.hidden_size
        if self._has_cell:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx: expected a pair (h0, c0) for an LSTM, got {type(hx).__name__}")
            return (self._check_state("h0", hx[0], x, batch, out, unbatched),
                    self._check_state("c0", hx[1], x, batch, self.hidden_size, unbatched))
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"hx: expected a Tensor h0 for a {_MODE_NAMES[self.mode]}, got a "
                            f"{type(hx).__name__}")
        return self._check_state("h0", hx, x, batch, out, unbatched), None

    def forward(self, input, hx=None, lengths=None):
        """``input``: (time, batch, input_size) — (batch, time, input_size) if batch_first —,
        unbatched (time, input_size), or a ``PackedSequence``.
        ``hx``: (h0, c0) for an LSTM, h0 otherwise, each (num_layers * num_directions, batch, ·),
        or None (zeros). ``lengths``: per-sequence lengths in [1, time] of a padded batch, or None.

        Returns ``(output, h_n)`` — ``(output, (h_n, c_n))`` for an LSTM: output
        (time, batch, num_directions * P) in input's layout (zero past each sequence's length;
        a PackedSequence for a PackedSequence input); h_n (num_layers * num_directions, batch, P);
        c_n (..., hidden_size); P = proj_size or hidden_size. Unbatched input: no batch dims.
        """
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths: a PackedSequence carries its own lengths; pass one or the other")
            x, lengths, unbatched = input.data, input.lengths, False
        else:
            x = input
            if not isinstance(x, Tensor):
                raise TypeError(f"input: expected a Tensor or PackedSequence, got {type(x).__name__}")
            if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
                raise ValueError(f"input: expected (time, batch, {self.input_size}) or (time, "
                                 f"{self.input_size}), got shape {x.shape}")
            unbatched = x.ndim == 2
            x = x.unsqueeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        weight = self.weight_ih_l0
        if not dtypes_mix(x.dtype, weight.dtype) or x.device != weight.device:
            raise TypeError(f"input: expected {weight.dtype} on {weight.device} like the weights, "
                            f"got {x.dtype} on {x.device}")
        if 0 in x.shape:
            raise ValueError(f"input: expected at least one time step and one sequence, got shape "
                             f"{tuple(x.shape)} (time-major)")
        steps, batch = x.shape[0], x.shape[1]
        if lengths is not None:  # checked once here, on the host, before any kernel
            lengths = check_lengths(lengths, steps, batch)
        h0, c0 = self._initial_state(hx, x, batch, unbatched)
        # one split each (not an index per layer): backward joins the states' gradients once
        h0 = None if h0 is None else [s.squeeze(0) for s in h0.split(1, 0)]
        c0 = None if c0 is None else [s.squeeze(0) for s in c0.split(1, 0)]
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(self._suffixes):
                k = layer * self._directions + d
                state = (None if h0 is None else h0[k], None if c0 is None else c0[k])
                if self.layer_norm or self.zoneout:
                    y, h, c = self._normalized_direction(x, *state, layer, suffix, lengths, d == 1)
                else:  # the plain kernels, untouched
                    y, h, c = F.rnn(self.mode, x, *state, self._weights(layer, suffix), lengths=lengths,
                                    reverse=d == 1)
                outs.append(y)
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if len(outs) == 1 else F.cat(outs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout)
        h_n = F.stack(h_n, 0)
        c_n = F.stack(c_n, 0) if self._has_cell else None
        if unbatched:
            x, h_n, c_n = x.squeeze(1), h_n.squeeze(1), None if c_n is None else c_n.squeeze(1)
        elif packed:
            x = PackedSequence(x, input.lengths)
        elif self.batch_first:
            x = x.transpose(0, 1)
        return (x, (h_n, c_n)) if self._has_cell else (x, h_n)

    def _normalized_direction(self, x, h0, c0, layer, suffix, lengths, reverse):
        """One layer and direction through ``F.rnn_ln``, with this call's zoneout keep factors."""
        keep_h = keep_c = None
        if self.zoneout:
            shape = (x.shape[0], x.shape[1], self.hidden_size)
            keep_h = self._keep_factors(shape, x)
            keep_c = self._keep_factors(shape, x) if self._has_cell else None
        ln = tuple(getattr(self, f"{name}_l{layer}{suffix}") for name in LAYER_NORM_NAMES) \
            if self.layer_norm else None
        return F.rnn_ln(self.mode, x, h0, c0, self._weights(layer, suffix), layer_norm=ln,
                        keep_h=keep_h, keep_c=keep_c, lengths=lengths, reverse=reverse)

    def _keep_factors(self, shape, x):
        """Training: 0/1 masks, 1 with probability zoneout; evaluation: zoneout everywhere."""
        if not self.training:
            return array_module(x.data).full(shape, self.zoneout)
        return backend.random_state.generator(x.device).random(shape) < self.zoneout

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False),
                              ("layer_norm", False), ("zoneout", 0.0)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s


class LSTM(RNNBase):
    """Gates i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh), in torch's order;
    c' = σ(f) c + σ(i) tanh(g), h' = σ(o) tanh(c') (times W_hr^T when proj_size > 0).

    ``output, (h_n, c_n) = lstm(x, (h0, c0), lengths=None)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None,
                 layer_norm=False, zoneout=0.0):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype, layer_norm=layer_norm,
                         zoneout=zoneout)


class GRU(RNNBase):
    """r, z = σ(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z}),
    n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)), h' = (1 - z) n + z h.

    ``output, h_n = gru(x, h0, lengths=None)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, zoneout=0.0):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype, zoneout=zoneout)


class RNN(RNNBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (relu with nonlinearity='relu').

    ``output, h_n = rnn(x, h0, lengths=None)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity  # torch's repr leaves it out; so does this one


# ---------------------------------------------------------------- cells

class RNNCellBase(Module):
    """One step, on the same kernel with T = 1 (the fused gate pass). Parameters
    ``weight_ih`` (G*H, in), ``weight_hh`` (G*H, H), ``bias_ih``, ``bias_hh`` (G*H,)."""

    def __init__(self, mode, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        self.mode = mode
        self.input_size = _positive("input_size", input_size)
        self.hidden_size = _positive("hidden_size", hidden_size)
        self.bias = _flag("bias", bias)
        gates = GATES[mode] * self.hidden_size
        self.weight_ih = _empty(gates, self.input_size, dtype=dtype)
        self.weight_hh = _empty(gates, self.hidden_size, dtype=dtype)
        self.register_parameter("bias_ih", _empty(gates, dtype=dtype) if self.bias else None)
        self.register_parameter("bias_hh", _empty(gates, dtype=dtype) if self.bias else None)
        self.reset_parameters()
        if device is not None:
            self.to(device)

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _check_state(self, name, s, x, unbatched):
        if not isinstance(s, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(s).__name__}")
        expected = (self.hidden_size,) if unbatched else (x.shape[0], self.hidden_size)
        if s.shape != expected:
            raise ValueError(f"{name}: expected shape {expected}, got {s.shape}")
        if not dtypes_mix(s.dtype, x.dtype) or s.device != x.device:
            raise TypeError(f"{name}: expected {x.dtype} on {x.device} like input, got {s.dtype} on {s.device}")
        return s.unsqueeze(0) if unbatched else s

    def _step(self, input, hx):
        if not isinstance(input, Tensor):
            raise TypeError(f"input: expected a Tensor, got {type(input).__name__}")
        if input.ndim not in (1, 2) or input.shape[-1] != self.input_size or 0 in input.shape:
            raise ValueError(f"input: expected (batch, {self.input_size}) or ({self.input_size},), "
                             f"got shape {input.shape}")
        if not dtypes_mix(input.dtype, self.weight_ih.dtype) or input.device != self.weight_ih.device:
            raise TypeError(f"input: expected {self.weight_ih.dtype} on {self.weight_ih.device} like the "
                            f"weights, got {input.dtype} on {input.device}")
        unbatched = input.ndim == 1
        x = input.reshape(1, 1, self.input_size) if unbatched else input.unsqueeze(0)
        h0 = c0 = None
        if hx is not None:
            if self.mode == "lstm":
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"hx: expected a pair (h, c) for an LSTMCell, got {type(hx).__name__}")
                h0 = self._check_state("h", hx[0], input, unbatched)
                c0 = self._check_state("c", hx[1], input, unbatched)
            else:
                h0 = self._check_state("hx", hx, input, unbatched)
        weights = (self.weight_ih, self.weight_hh) + ((self.bias_ih, self.bias_hh) if self.bias else ())
        _, h, c = F.rnn(self.mode, x, h0, c0, weights)
        if unbatched:
            h, c = h.squeeze(0), None if c is None else c.squeeze(0)
        return h, c

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s


class LSTMCell(RNNCellBase):
    """``h', c' = cell(x, (h, c))``; x (batch, input_size) or (input_size,); state zeros if omitted."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("lstm", input_size, hidden_size, bias, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        return self._step(input, hx)


class GRUCell(RNNCellBase):
    """``h' = cell(x, h)``."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("gru", input_size, hidden_size, bias, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        return self._step(input, hx)[0]


class RNNCell(RNNCellBase):
    """``h' = cell(x, h)``, h' = tanh (or relu) (x W_ih^T + b_ih + h W_hh^T + b_hh)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, bias, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        return self._step(input, hx)[0]
