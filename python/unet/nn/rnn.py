"""LSTM with torch's constructor, parameter names and call convention.

This first version composes each step from autograd ops (a Python loop over
time); the fused whole-sequence kernels replace its insides, not its interface.
"""
from __future__ import annotations

import math

from .. import functional as F
from ..backend import array_module
from ..tensor import Tensor
from . import init
from .layers import _empty, _flag, _positive, _probability
from .module import Module


class LSTM(Module):
    """Gates i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh), in torch's order;
    c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c')."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=None):
        super().__init__()
        self.input_size = _positive("input_size", input_size)
        self.hidden_size = _positive("hidden_size", hidden_size)
        self.num_layers = _positive("num_layers", num_layers)
        self.bias = _flag("bias", bias)
        self.batch_first = _flag("batch_first", batch_first)
        self.dropout = _probability("dropout", dropout)
        self.bidirectional = _flag("bidirectional", bidirectional)
        for layer in range(self.num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self._directions
            for suffix in self._suffixes:
                setattr(self, f"weight_ih_l{layer}{suffix}", _empty(4 * hidden_size, layer_input, dtype=dtype))
                setattr(self, f"weight_hh_l{layer}{suffix}", _empty(4 * hidden_size, hidden_size, dtype=dtype))
                if self.bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", _empty(4 * hidden_size, dtype=dtype))
                    setattr(self, f"bias_hh_l{layer}{suffix}", _empty(4 * hidden_size, dtype=dtype))
        self.reset_parameters()

    @property
    def _directions(self):
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self):
        return ("", "_reverse")[:self._directions]

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _direction(self, x, h, c, layer, suffix, reverse):
        """Run one direction of one layer over x (time, batch, features)."""
        w_ih = getattr(self, f"weight_ih_l{layer}{suffix}")
        w_hh = getattr(self, f"weight_hh_l{layer}{suffix}")
        b_ih = getattr(self, f"bias_ih_l{layer}{suffix}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l{layer}{suffix}") if self.bias else None
        # the input projection for all steps as one GEMM; split (not indexed) per step so that
        # backward concatenates the step gradients once instead of scattering into a full-size zero per step
        projected = [p.squeeze(0) for p in F.linear(x, w_ih, b_ih).split(1, dim=0)]
        outputs = []
        for t in (reversed(range(len(projected))) if reverse else range(len(projected))):
            i, f, g, o = (projected[t] + F.linear(h, w_hh, b_hh)).split(self.hidden_size, dim=-1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
            outputs.append(h)
        if reverse:
            outputs.reverse()
        return F.stack(outputs, 0), h, c

    def _initial_state(self, x, state, batch, unbatched):
        shape = (self.num_layers * self._directions, batch, self.hidden_size)
        if state is None:
            zeros = Tensor._wrap(array_module(x.data).zeros(shape, dtype=x.dtype))
            return zeros, zeros
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"state: expected a pair (h0, c0), got {type(state).__name__}")
        checked = []
        for name, s in zip(("h0", "c0"), state):
            if not isinstance(s, Tensor):
                raise TypeError(f"{name}: expected a Tensor, got {type(s).__name__}")
            expected = (shape[0], shape[2]) if unbatched else shape
            if s.shape != expected:
                raise ValueError(f"{name}: expected shape {expected}, got {s.shape}")
            if s.dtype != x.dtype or s.device != x.device:
                raise TypeError(f"{name}: expected {x.dtype} on {x.device} like x, got {s.dtype} on {s.device}")
            checked.append(s.unsqueeze(1) if unbatched else s)
        return tuple(checked)

    def forward(self, x: Tensor, state=None):
        """x: (time, batch, input) — (batch, time, input) if batch_first — or unbatched (time, input).

        Returns output (time, batch, directions * hidden) in x's layout, and (h_n, c_n),
        each (num_layers * directions, batch, hidden) — without the batch dim if x had none.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x: expected a Tensor, got {type(x).__name__}")
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(f"x: expected (time, batch, {self.input_size}) or (time, {self.input_size}), "
                             f"got shape {x.shape}")
        weight = self.weight_ih_l0
        if x.dtype != weight.dtype or x.device != weight.device:
            raise TypeError(f"x: expected {weight.dtype} on {weight.device} like the weights, "
                            f"got {x.dtype} on {x.device}")
        unbatched = x.ndim == 2
        x = x.unsqueeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        if x.shape[0] == 0:
            raise ValueError("x: expected at least one time step, got a sequence of length 0")
        h0, c0 = self._initial_state(x, state, x.shape[1], unbatched)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(self._suffixes):
                k = layer * self._directions + d
                out, h, c = self._direction(x, h0[k], c0[k], layer, suffix, reverse=d == 1)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if len(outs) == 1 else F.cat(outs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout)
        h_n, c_n = F.stack(h_n, 0), F.stack(c_n, 0)
        if unbatched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (x.transpose(0, 1) if self.batch_first else x), (h_n, c_n)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s
