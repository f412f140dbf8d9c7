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
from .layers import _empty, _positive
from .module import Module


class LSTM(Module):
    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=None):
        super().__init__()
        self.input_size = _positive("input_size", input_size)
        self.hidden_size = _positive("hidden_size", hidden_size)
        self.num_layers = _positive("num_layers", num_layers)
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout}")
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional = bool(bidirectional)
        directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for suffix in ("", "_reverse")[:directions]:
                setattr(self, f"weight_ih_l{layer}{suffix}", _empty(4 * hidden_size, layer_input, dtype=dtype))
                setattr(self, f"weight_hh_l{layer}{suffix}", _empty(4 * hidden_size, hidden_size, dtype=dtype))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", _empty(4 * hidden_size, dtype=dtype))
                    setattr(self, f"bias_hh_l{layer}{suffix}", _empty(4 * hidden_size, dtype=dtype))
        self.reset_parameters()

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
        projected = F.linear(x, w_ih, b_ih)  # input projection for all steps at once
        outputs = []
        steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        for t in steps:
            gates = projected[t] + F.linear(h, w_hh, b_hh)
            i, f, g, o = gates.split(self.hidden_size, dim=-1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
            outputs.append(h)
        if reverse:
            outputs.reverse()
        return F.stack(outputs, 0), h, c

    def forward(self, x: Tensor, state=None):
        """x: (time, batch, input) — (batch, time, input) if batch_first — or unbatched (time, input)."""
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(f"x: expected (time, batch, {self.input_size}) or (time, {self.input_size}), "
                             f"got shape {x.shape}")
        unbatched = x.ndim == 2
        x = x.unsqueeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        directions = 2 if self.bidirectional else 1
        batch = x.shape[1]
        if state is None:
            shape = (self.num_layers * directions, batch, self.hidden_size)
            h0 = c0 = Tensor._wrap(array_module(x.data).zeros(shape, dtype=x.dtype))
        else:
            h0, c0 = state
            if unbatched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            expected = (self.num_layers * directions, batch, self.hidden_size)
            for name, s in (("h0", h0), ("c0", c0)):
                if s.shape != expected:
                    raise ValueError(f"{name}: expected shape {expected}, got {s.shape}")
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(("", "_reverse")[:directions]):
                k = layer * directions + d
                out, h, c = self._direction(x, h0[k], c0[k], layer, suffix, reverse=d == 1)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if directions == 1 else F.cat(outs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout)
        h_n, c_n = F.stack(h_n, 0), F.stack(c_n, 0)
        if unbatched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (x.transpose(0, 1) if self.batch_first else x), (h_n, c_n)

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
                f"{', batch_first=True' if self.batch_first else ''}"
                f"{', bidirectional=True' if self.bidirectional else ''}")
