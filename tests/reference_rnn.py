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


def _layer_norm(a, gain, bias, eps):
    """LN over the last dimension, written out in ops (not unet's layer_norm kernel)."""
    centred = a - a.mean(dim=-1, keepdim=True)
    return centred / ((centred * centred).mean(dim=-1, keepdim=True) + eps).sqrt() * gain + bias


def _zone(keep, old, new):
    """Zoneout with keep factors ``keep`` (a numpy row, a constant): keep*old + (1-keep)*new."""
    if keep is None:
        return new
    k = Tensor(keep.astype(old.dtype))
    return old * k + new * Tensor((1.0 - keep).astype(old.dtype))


def composed_rnn_ln(mode, x, h0, c0, weights, layer_norm=None, keep_h=None, keep_c=None,
                    lengths=None, reverse=False, eps=1e-5):
    """Reference for ``unet.functional.rnn_ln`` from unet's autograd ops, one sequence and one
    step at a time (slow; for tests). Same arguments; ``keep_h``/``keep_c`` numpy arrays."""
    steps, batch, _ = x.shape
    w_ih, w_hh, b_ih, b_hh = (tuple(weights) + (None, None))[:4]
    hidden = w_hh.shape[1]
    lengths = [steps] * batch if lengths is None else [int(n) for n in lengths]
    zero_row = Tensor(array_module(x.data).zeros((1, hidden), dtype=x.dtype))
    ys, hs, cs = [], [], []
    for b in range(batch):
        h = h0[b:b + 1]
        c = c0[b:b + 1] if mode == "lstm" else None
        out = {}
        order = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        for t in order:
            kh = None if keep_h is None else keep_h[t, b:b + 1]
            xt = x[t, b:b + 1]
            if mode == "lstm":
                a_ih, a_hh = F.linear(xt, w_ih), F.linear(h, w_hh)
                if layer_norm is not None:
                    g_ih, bt_ih, g_hh, bt_hh, g_c, bt_c = layer_norm
                    a_ih, a_hh = _layer_norm(a_ih, g_ih, bt_ih, eps), _layer_norm(a_hh, g_hh, bt_hh, eps)
                pre = a_ih + a_hh if b_ih is None else a_ih + a_hh + b_ih + b_hh
                i, f, g, o = pre.split(hidden, dim=-1)
                c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
                cell = c_new if layer_norm is None else _layer_norm(c_new, g_c, bt_c, eps)
                h_new = o.sigmoid() * cell.tanh()
                c = _zone(None if keep_c is None else keep_c[t, b:b + 1], c, c_new)
            else:
                ir, iz, in_ = F.linear(xt, w_ih, b_ih).split(hidden, dim=-1)
                hr, hz, hn = F.linear(h, w_hh, b_hh).split(hidden, dim=-1)
                r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
                n = (in_ + r * hn).tanh()
                h_new = n + z * (h - n)
            h = _zone(kh, h, h_new)
            out[t] = h
        ys.append(F.stack([out.get(t, zero_row) for t in range(steps)], 0))
        hs.append(h)
        cs.append(c)
    y = F.cat(ys, dim=1)
    return y, F.cat(hs, dim=0), F.cat(cs, dim=0) if mode == "lstm" else None
