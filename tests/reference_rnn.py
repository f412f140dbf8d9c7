"""Test-only reference: an LSTM composed step by step from unet's autograd ops.

This was nn.LSTM's first implementation (a Python loop over time, every gate an op);
the fused whole-sequence kernels replaced it. It stays here as an independent
reference that exercises only the tensor layer and the linear kernel: same
parameters and call convention as ``unet.nn.LSTM`` (no proj_size, no lengths).
"""
from __future__ import annotations

from unet import functional as F
from unet import nn
from unet.backend import array_module
from unet.tensor import Tensor


class ComposedLSTM(nn.LSTM):
    """``nn.LSTM`` with the gate math of each step written out in ops (slow; for tests)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.proj_size:
            raise ValueError("proj_size: the composed reference has no projection")

    def _direction(self, x, h, c, layer, suffix, reverse):
        """One direction of one layer over x (time, batch, features):
        i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh); c' = σ(f) c + σ(i) tanh(g); h' = σ(o) tanh(c')."""
        w_ih = getattr(self, f"weight_ih_l{layer}{suffix}")
        w_hh = getattr(self, f"weight_hh_l{layer}{suffix}")
        b_ih = getattr(self, f"bias_ih_l{layer}{suffix}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l{layer}{suffix}") if self.bias else None
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

    def forward(self, x, hx=None, lengths=None):
        if lengths is not None:
            raise ValueError("lengths: the composed reference runs full-length sequences only")
        unbatched = x.ndim == 2
        x = x.unsqueeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        shape = (self.num_layers * self._directions, x.shape[1], self.hidden_size)
        if hx is None:
            zeros = Tensor._wrap(array_module(x.data).zeros(shape, dtype=x.dtype))
            h0, c0 = zeros, zeros
        else:
            h0, c0 = (s.unsqueeze(1) if unbatched else s for s in hx)
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
