"""unet._C.rnn_forward / rnn_backward (LSTM with optional projection, GRU, tanh/ReLU RNN)
called directly.

The CPU kernels are compared with a float64 numpy reference written here one sequence and
one step at a time, and with torch.nn.LSTM/GRU/RNN (packed sequences for lengths, the
reverse half of a bidirectional layer for reverse); every argument check is exercised, and
no bad argument may crash the process.
"""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernel_checks import FUZZ, MUTATIONS, FakeCudaArray, assert_names, check_mutation, junk_arguments, read_only

from unet import _C

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
MODES = list(GATES)
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-10}


# ---------------------------------------------------------------- reference ---------

def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def reference(mode, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse, gy, ghn, gcn):
    """Forward and backward of one layer in float64, one sequence and one step at a time.

    Returns (y, h_n, c_n) and the gradients of sum(y*gy) + sum(h_n*ghn) + sum(c_n*gcn)."""
    f64 = [None if a is None else np.asarray(a, np.float64)
           for a in (x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, gy, ghn, gcn)]
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, gy, ghn, gcn = f64
    T, B, _ = x.shape
    H, P = w_ih.shape[0] // GATES[mode], h0.shape[1]
    lstm = mode == "lstm"
    if b_ih is None:
        b_ih, b_hh = np.zeros(w_ih.shape[0]), np.zeros(w_ih.shape[0])
    y, h_n, c_n = np.zeros((T, B, P)), np.zeros((B, P)), np.zeros((B, H))
    g = {k: np.zeros_like(v) for k, v in dict(x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                                               h0=h0, c0=np.zeros((B, H))).items()}
    g["w_hr"] = np.zeros_like(w_hr) if w_hr is not None else None
    for b in range(B):
        steps = range(T if lengths is None else int(lengths[b]))
        h, c = h0[b], (c0[b] if lstm else None)
        saved = []
        for t in (reversed(steps) if reverse else steps):
            h_prev, c_prev = h, c
            xi, hh = w_ih @ x[t, b] + b_ih, w_hh @ h + b_hh
            if lstm:
                i, f, gg, o = (_sigmoid(xi[:H] + hh[:H]), _sigmoid(xi[H:2 * H] + hh[H:2 * H]),
                               np.tanh(xi[2 * H:3 * H] + hh[2 * H:3 * H]), _sigmoid(xi[3 * H:] + hh[3 * H:]))
                c = f * c + i * gg
                m = o * np.tanh(c)
                h = m if w_hr is None else w_hr @ m
                saved.append((t, h_prev, c_prev, i, f, gg, o, c, m))
            elif mode == "gru":
                r, z = _sigmoid(xi[:H] + hh[:H]), _sigmoid(xi[H:2 * H] + hh[H:2 * H])
                n = np.tanh(xi[2 * H:] + r * hh[2 * H:])
                h = (1 - z) * n + z * h
                saved.append((t, h_prev, r, z, n, hh[2 * H:]))
            else:
                a = xi + hh
                h = np.tanh(a) if mode == "rnn_tanh" else np.maximum(a, 0)
                saved.append((t, h_prev, a, h))
            y[t, b] = h
        h_n[b] = h
        if lstm:
            c_n[b] = c

        dh = ghn[b].copy() if ghn is not None else np.zeros(P)
        dc = gcn[b].copy() if gcn is not None else np.zeros(H)
        for s in reversed(saved):
            t, h_prev = s[0], s[1]
            dh = dh + gy[t, b]
            if lstm:
                _, _, c_prev, i, f, gg, o, c, m = s
                if w_hr is not None:
                    g["w_hr"] += np.outer(dh, m)
                    dh = w_hr.T @ dh
                tc = np.tanh(c)
                dc = dc + dh * o * (1 - tc ** 2)
                dzi = dzh = np.concatenate([dc * gg * i * (1 - i), dc * c_prev * f * (1 - f),
                                            dc * i * (1 - gg ** 2), dh * tc * o * (1 - o)])
                dc = dc * f
                direct = 0
            elif mode == "gru":
                _, _, r, z, n, hn = s
                dn = dh * (1 - z) * (1 - n ** 2)
                dr = dn * hn * r * (1 - r)
                dz = dh * (h_prev - n) * z * (1 - z)
                dzi, dzh = np.concatenate([dr, dz, dn]), np.concatenate([dr, dz, dn * r])
                direct = dh * z
            else:
                _, _, a, hout = s
                dzi = dzh = dh * (1 - hout ** 2 if mode == "rnn_tanh" else (a > 0))
                direct = 0
            g["x"][t, b] = w_ih.T @ dzi
            g["w_ih"] += np.outer(dzi, x[t, b])
            g["b_ih"] += dzi
            g["w_hh"] += np.outer(dzh, h_prev)
            g["b_hh"] += dzh
            dh = w_hh.T @ dzh + direct
        g["h0"][b], g["c0"][b] = dh, dc
    return (y, h_n, c_n if lstm else None), g


# ---------------------------------------------------------------- calling _C --------

def make_layer(mode, T, B, I, H, P=None, bias=True, dtype=np.float64, seed=0):
    """Arguments of rnn_forward up to `reverse`, weights scaled like torch's init."""
    rng = np.random.default_rng(seed)
    P = P or H
    G, k = GATES[mode], 1 / np.sqrt(max(H, 1))
    u = lambda *shape: rng.uniform(-k, k, shape).astype(dtype)
    return dict(
        mode=mode, x=rng.standard_normal((T, B, I)).astype(dtype), w_ih=u(G * H, I), w_hh=u(G * H, P),
        b_ih=u(G * H) if bias else None, b_hh=u(G * H) if bias else None,
        w_hr=u(P, H) if P != H else None, h0=rng.standard_normal((B, P)).astype(dtype),
        c0=rng.standard_normal((B, H)).astype(dtype) if mode == "lstm" else None)


def dims(layer):
    T, B, I = layer["x"].shape
    H = layer["w_ih"].shape[0] // GATES[layer["mode"]]
    return T, B, I, H, layer["h0"].shape[1]


def forward(layer, lengths=None, reverse=False):
    """rnn_forward with every output filled with NaN first: the kernel must overwrite."""
    T, B, I, H, P = dims(layer)
    dt, mode = layer["x"].dtype, layer["mode"]
    out = dict(y=np.full((T, B, P), np.nan, dt), h_n=np.full((B, P), np.nan, dt),
               c_n=np.full((B, H), np.nan, dt) if mode == "lstm" else None,
               workspace=np.full(_C.rnn_workspace_size(mode, T, B, H, P), np.nan, dt))
    _C.rnn_forward(**layer, lengths=lengths, reverse=reverse, **out)
    return out


GRAD_NAMES = ["grad_x", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh", "grad_w_hr", "grad_h0", "grad_c0"]


def backward(layer, fwd, gy, ghn=None, gcn=None, lengths=None, reverse=False, want=None):
    """rnn_backward for the gradients in `want` (default: all that exist), NaN-filled first."""
    T, B, I, H, P = dims(layer)
    dt, mode = layer["x"].dtype, layer["mode"]
    like = dict(grad_x=layer["x"], grad_w_ih=layer["w_ih"], grad_w_hh=layer["w_hh"], grad_b_ih=layer["b_ih"],
                grad_b_hh=layer["b_hh"], grad_w_hr=layer["w_hr"], grad_h0=layer["h0"], grad_c0=layer["c0"])
    want = [n for n in GRAD_NAMES if like[n] is not None] if want is None else want
    grads = {n: (np.full_like(like[n], np.nan) if n in want else None) for n in GRAD_NAMES}
    scratch = np.full(_C.rnn_backward_scratch_size(mode, T, B, H, P), np.nan, dt)
    _C.rnn_backward(**layer, lengths=lengths, reverse=reverse, y=fwd["y"], workspace=fwd["workspace"],
                    grad_y=gy, grad_h_n=ghn, grad_c_n=gcn, **grads, scratch=scratch)
    return grads


def output_grads(layer, seed=1, with_state=True):
    T, B, I, H, P = dims(layer)
    rng = np.random.default_rng(seed)
    dt = layer["x"].dtype
    gy = rng.standard_normal((T, B, P)).astype(dt)
    ghn = rng.standard_normal((B, P)).astype(dt) if with_state else None
    gcn = rng.standard_normal((B, H)).astype(dt) if with_state and layer["mode"] == "lstm" else None
    return gy, ghn, gcn


# ---------------------------------------------------------------- numerics ----------

# (name, T, B, I, H, lengths, reverse, bias)
CASES = [
    ("basic", 5, 3, 4, 6, None, False, True),
    ("nobias", 4, 2, 3, 5, None, False, False),
    ("reverse", 6, 3, 2, 4, None, True, True),
    ("lengths", 7, 5, 3, 4, [3, 7, 1, 5, 7], False, True),
    ("lengths-reverse", 7, 5, 3, 4, [3, 7, 1, 5, 7], True, True),
    ("lengths-all-T-reverse", 4, 3, 3, 5, [4, 4, 4], True, False),
    ("batch1", 4, 1, 3, 5, None, True, True),
    ("T1", 1, 3, 4, 5, [1, 1, 1], False, True),
    ("I1-H1", 3, 2, 1, 1, [2, 3], True, True),
]
# mode, projection size (None: P = H)
VARIANTS = [("lstm", None), ("lstm", "proj"), ("gru", None), ("rnn_tanh", None), ("rnn_relu", None)]


def check_against_reference(layer, lengths, reverse, tol, with_state=True):
    lengths_arr = None if lengths is None else np.array(lengths, np.int64)
    fwd = forward(layer, lengths_arr, reverse)
    gy, ghn, gcn = output_grads(layer, with_state=with_state)
    grads = backward(layer, fwd, gy, ghn, gcn, lengths_arr, reverse)
    args = {k: layer[k] for k in ["x", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "h0", "c0"]}
    (y, h_n, c_n), g = reference(layer["mode"], **args, lengths=lengths, reverse=reverse, gy=gy, ghn=ghn,
                                 gcn=gcn)
    close = lambda got, ref, what: np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, err_msg=what)
    close(fwd["y"], y, "y")
    close(fwd["h_n"], h_n, "h_n")
    if c_n is not None:
        close(fwd["c_n"], c_n, "c_n")
    for name in GRAD_NAMES:
        if grads[name] is not None:
            close(grads[name], g[name[5:]], name)
    return fwd, grads


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("variant", VARIANTS, ids=["lstm", "lstm-proj", "gru", "rnn_tanh", "rnn_relu"])
def test_matches_float64_reference(variant, case, dtype):
    mode, proj = variant
    _, T, B, I, H, lengths, reverse, bias = case
    if proj and H < 2:
        pytest.skip("a projection needs H >= 2")
    P = max(1, H // 2) if proj else None
    layer = make_layer(mode, T, B, I, H, P, bias, dtype, seed=T * 100 + B * 10 + H)
    check_against_reference(layer, lengths, reverse, TOL[dtype])


@pytest.mark.parametrize("variant", VARIANTS, ids=["lstm", "lstm-proj", "gru", "rnn_tanh", "rnn_relu"])
def test_matches_reference_past_the_block_sizes(variant):
    """H past the fused passes' column chunk (512), B*H past their threading threshold, and
    GEMMs large enough for every thread; without grad_h_n/grad_c_n (zero)."""
    mode, proj = variant
    layer = make_layer(mode, 4, 5, 37, 520, 200 if proj else None, True, np.float64, seed=7)
    check_against_reference(layer, [4, 2, 3, 4, 1], True, 1e-10, with_state=False)


@pytest.mark.parametrize("variant", VARIANTS, ids=["lstm", "lstm-proj", "gru", "rnn_tanh", "rnn_relu"])
def test_large_preactivations_stay_finite(variant):
    """Saturated gates (|z| ~ 1e3): sigmoid and tanh must not overflow into NaN."""
    mode, proj = variant
    layer = make_layer(mode, 3, 2, 4, 6, 3 if proj else None, True, np.float32, seed=3)
    layer["x"] *= np.float32(1e3)
    layer["w_ih"] *= np.float32(1e2)
    fwd, grads = check_against_reference(layer, None, False, 1e-4)
    outputs = [fwd["y"], fwd["h_n"], fwd["c_n"]] + list(grads.values())
    assert all(np.isfinite(a).all() for a in outputs if a is not None)


# ---------------------------------------------------------------- torch -------------

def torch_module(layer, bidirectional, reverse_layer=None):
    T, B, I, H, P = dims(layer)
    mode = layer["mode"]
    kw = dict(bias=layer["b_ih"] is not None, bidirectional=bidirectional, dtype=torch.float64
              if layer["x"].dtype == np.float64 else torch.float32)
    if mode == "lstm":
        m = torch.nn.LSTM(I, H, proj_size=0 if P == H else P, **kw)
    elif mode == "gru":
        m = torch.nn.GRU(I, H, **kw)
    else:
        m = torch.nn.RNN(I, H, nonlinearity=mode[4:], **kw)
    with torch.no_grad():
        for suffix, src in [("", layer)] + ([("_reverse", reverse_layer)] if bidirectional else []):
            for ours, theirs in [("w_ih", "weight_ih_l0"), ("w_hh", "weight_hh_l0"), ("b_ih", "bias_ih_l0"),
                                 ("b_hh", "bias_hh_l0"), ("w_hr", "weight_hr_l0")]:
                if src[ours] is not None:
                    getattr(m, theirs + suffix).copy_(torch.from_numpy(src[ours]))
    return m


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "lengths"])
@pytest.mark.parametrize("variant", VARIANTS, ids=["lstm", "lstm-proj", "gru", "rnn_tanh", "rnn_relu"])
def test_matches_torch_bidirectional(variant, packed, dtype):
    """Both directions of torch's bidirectional layer: ours forward and ours reverse, with
    lengths through pack_padded_sequence (unsorted), forward and backward."""
    mode, proj = variant
    T, B, I, H = 6, 4, 5, 8
    P = 3 if proj else None
    fw = make_layer(mode, T, B, I, H, P, True, dtype, seed=11)
    bw = make_layer(mode, T, B, I, H, P, True, dtype, seed=12)
    bw["x"] = fw["x"]
    P = P or H
    lengths = np.array([4, 6, 1, 5], np.int64) if packed else None
    m = torch_module(fw, True, bw)

    x = torch.tensor(fw["x"], requires_grad=True)
    h0 = torch.tensor(np.stack([fw["h0"], bw["h0"]]), requires_grad=True)
    state = h0
    if mode == "lstm":
        c0 = torch.tensor(np.stack([fw["c0"], bw["c0"]]), requires_grad=True)
        state = (h0, c0)
    if packed:
        seq = torch.nn.utils.rnn.pack_padded_sequence(x, torch.from_numpy(lengths), enforce_sorted=False)
        out, hn = m(seq, state)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    else:
        y, hn = m(x, state)
    hn, cn = hn if mode == "lstm" else (hn, None)

    gy, ghn, gcn = [], [], []
    for seed in (5, 6):
        a, b, c = output_grads(fw, seed=seed)
        gy.append(a), ghn.append(b), gcn.append(c)
    loss = (y * torch.from_numpy(np.concatenate(gy, axis=2))).sum() + (hn * torch.from_numpy(np.stack(ghn))).sum()
    if mode == "lstm":
        loss = loss + (cn * torch.from_numpy(np.stack(gcn))).sum()
    params = [x, h0] + ([c0] if mode == "lstm" else []) + list(m.parameters())
    tg = dict(zip(["x", "h0"] + (["c0"] if mode == "lstm" else []) + [n for n, _ in m.named_parameters()],
                  torch.autograd.grad(loss, params)))

    tol = TOL[dtype] if dtype == np.float64 else 1e-5
    close = lambda got, ref, what: np.testing.assert_allclose(got, ref.detach().numpy(), rtol=tol, atol=tol,
                                                              err_msg=what)
    grad_x = 0
    for d, (layer, suffix) in enumerate([(fw, ""), (bw, "_reverse")]):
        fwd = forward(layer, lengths, reverse=d == 1)
        close(fwd["y"], y[..., d * P:(d + 1) * P], f"y{suffix}")
        close(fwd["h_n"], hn[d], f"h_n{suffix}")
        if mode == "lstm":
            close(fwd["c_n"], cn[d], f"c_n{suffix}")
        g = backward(layer, fwd, gy[d], ghn[d], gcn[d], lengths, reverse=d == 1)
        grad_x = grad_x + g["grad_x"]
        close(g["grad_h0"], tg["h0"][d], f"grad_h0{suffix}")
        if mode == "lstm":
            close(g["grad_c0"], tg["c0"][d], f"grad_c0{suffix}")
        for ours, theirs in [("w_ih", "weight_ih_l0"), ("w_hh", "weight_hh_l0"), ("b_ih", "bias_ih_l0"),
                             ("b_hh", "bias_hh_l0"), ("w_hr", "weight_hr_l0")]:
            if layer[ours] is not None:
                close(g["grad_" + ours], tg[theirs + suffix], "grad_" + ours + suffix)
    close(grad_x, tg["x"], "grad_x")


# ---------------------------------------------------------------- padding -----------

@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("variant", VARIANTS, ids=["lstm", "lstm-proj", "gru", "rnn_tanh", "rnn_relu"])
def test_padded_steps_are_inert(variant, reverse):
    """y is zero at padded steps and grad_x too; what x and grad_y hold there (any finite
    values) changes nothing at all, and the final state is each sequence's own last one."""
    mode, proj = variant
    T, B = 6, 4
    lengths = np.array([2, 6, 1, 4], np.int64)
    pad = np.arange(T)[:, None] >= lengths[None, :]  # [T, B]
    layer = make_layer(mode, T, B, 3, 5, 2 if proj else None, True, np.float64, seed=21)
    gy, ghn, gcn = output_grads(layer)
    layer["x"][pad] = 0
    gy[pad] = 0
    fwd = forward(layer, lengths, reverse)
    grads = backward(layer, fwd, gy, ghn, gcn, lengths, reverse)
    assert (fwd["y"][pad] == 0).all() and (grads["grad_x"][pad] == 0).all()

    noisy = dict(layer, x=layer["x"].copy())
    rng = np.random.default_rng(0)
    noisy["x"][pad] = rng.standard_normal(noisy["x"][pad].shape) * 1e6
    gy2 = gy.copy()
    gy2[pad] = rng.standard_normal(gy2[pad].shape) * 1e6
    fwd2 = forward(noisy, lengths, reverse)
    grads2 = backward(noisy, fwd2, gy2, ghn, gcn, lengths, reverse)
    for k in ["y", "h_n", "c_n"]:
        if fwd[k] is not None:
            np.testing.assert_array_equal(fwd2[k], fwd[k], err_msg=k)
    for k, v in grads.items():
        if v is not None:
            np.testing.assert_array_equal(grads2[k], v, err_msg=k)

    # each sequence alone, unpadded, gives the same final state and outputs
    for b in range(B):
        alone = dict(layer, x=layer["x"][:lengths[b], b:b + 1].copy(), h0=layer["h0"][b:b + 1].copy(),
                     c0=None if layer["c0"] is None else layer["c0"][b:b + 1].copy())
        f1 = forward(alone, None, reverse)
        np.testing.assert_allclose(f1["h_n"][0], fwd["h_n"][b], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(f1["y"][:, 0], fwd["y"][:lengths[b], b], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("variant", VARIANTS, ids=["lstm", "lstm-proj", "gru", "rnn_tanh", "rnn_relu"])
def test_lengths_equal_to_T_are_the_same_as_none(variant):
    mode, proj = variant
    layer = make_layer(mode, 5, 3, 4, 6, 2 if proj else None, True, np.float32, seed=2)
    gy, ghn, gcn = output_grads(layer)
    for reverse in (False, True):
        full = np.full(3, 5, np.int64)
        f1, f2 = forward(layer, None, reverse), forward(layer, full, reverse)
        assert all(f1[k].tobytes() == f2[k].tobytes() for k in f1 if f1[k] is not None)
        g1 = backward(layer, f1, gy, ghn, gcn, None, reverse)
        g2 = backward(layer, f2, gy, ghn, gcn, full, reverse)
        assert all(g1[k].tobytes() == g2[k].tobytes() for k in g1 if g1[k] is not None)


# ---------------------------------------------------------------- special sizes -----

@pytest.mark.parametrize("mode", MODES)
def test_zero_steps_pass_the_state_through(mode):
    layer = make_layer(mode, 0, 3, 4, 5, dtype=np.float64)
    fwd = forward(layer)
    assert fwd["y"].shape == (0, 3, 5) and fwd["workspace"].size == 0
    np.testing.assert_array_equal(fwd["h_n"], layer["h0"])
    if mode == "lstm":
        np.testing.assert_array_equal(fwd["c_n"], layer["c0"])
    gy, ghn, gcn = output_grads(layer)
    g = backward(layer, fwd, gy, ghn, gcn)
    np.testing.assert_array_equal(g["grad_h0"], ghn)
    if mode == "lstm":
        np.testing.assert_array_equal(g["grad_c0"], gcn)
    for name in ["grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh"]:
        np.testing.assert_array_equal(g[name], 0)
    g = backward(layer, fwd, gy)  # no state gradients: zero
    np.testing.assert_array_equal(g["grad_h0"], 0)


@pytest.mark.parametrize("mode", MODES)
def test_empty_batch_and_zero_hidden_size(mode):
    layer = make_layer(mode, 4, 0, 3, 5, dtype=np.float32)
    fwd = forward(layer, lengths=np.zeros(0, np.int64))
    gy, ghn, gcn = output_grads(layer)
    g = backward(layer, fwd, gy, ghn, gcn)
    for name in ["grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh"]:
        np.testing.assert_array_equal(g[name], 0)
    layer = make_layer(mode, 3, 2, 4, 0, dtype=np.float32)
    layer["w_ih"], layer["w_hh"] = np.zeros((0, 4), np.float32), np.zeros((0, 0), np.float32)
    layer["b_ih"] = layer["b_hh"] = np.zeros(0, np.float32)
    layer["h0"] = np.zeros((2, 0), np.float32)
    layer["c0"] = np.zeros((2, 0), np.float32) if mode == "lstm" else None
    fwd = forward(layer)
    g = backward(layer, fwd, np.zeros((3, 2, 0), np.float32))
    np.testing.assert_array_equal(g["grad_x"], 0)


def test_input_size_zero_gives_the_bias_as_input():
    layer = make_layer("gru", 3, 2, 0, 4, dtype=np.float64)
    check_against_reference(layer, [3, 1], False, 1e-12)


# ---------------------------------------------------------------- gradients wanted --

@pytest.mark.parametrize("variant", VARIANTS, ids=["lstm", "lstm-proj", "gru", "rnn_tanh", "rnn_relu"])
def test_each_gradient_alone_equals_all_together(variant):
    mode, proj = variant
    layer = make_layer(mode, 5, 3, 4, 6, 2 if proj else None, True, np.float64, seed=4)
    lengths = np.array([5, 2, 3], np.int64)
    fwd = forward(layer, lengths, True)
    gy, ghn, gcn = output_grads(layer)
    full = backward(layer, fwd, gy, ghn, gcn, lengths, True)
    for name in GRAD_NAMES:
        if full[name] is None:
            continue
        part = backward(layer, fwd, gy, ghn, gcn, lengths, True, want=[name])
        np.testing.assert_array_equal(part[name], full[name], err_msg=name)
        assert all(part[n] is None for n in GRAD_NAMES if n != name)
    # nothing wanted: a valid call that does nothing
    backward(layer, fwd, gy, ghn, gcn, lengths, True, want=[])


def test_backward_leaves_its_inputs_alone():
    layer = make_layer("lstm", 4, 3, 5, 6, 3, True, np.float64, seed=8)
    fwd = forward(layer, np.array([4, 1, 3], np.int64), True)
    gy, ghn, gcn = output_grads(layer)
    before = {k: v.copy() for k, v in list(fwd.items()) + list(layer.items()) if isinstance(v, np.ndarray)}
    g1 = backward(layer, fwd, gy, ghn, gcn, np.array([4, 1, 3], np.int64), True)
    g2 = backward(layer, fwd, gy, ghn, gcn, np.array([4, 1, 3], np.int64), True)
    for k, v in list(fwd.items()) + list(layer.items()):
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert all(g1[k].tobytes() == g2[k].tobytes() for k in g1 if g1[k] is not None)


# ---------------------------------------------------------------- determinism -------

_DIGEST_SCRIPT = """
import hashlib, sys
import numpy as np
from unet import _C
sys.path.insert(0, {tests!r})
from test_rnn_kernel import make_layer, forward, backward, output_grads
h = hashlib.sha256()
# B*H and the GEMMs large enough for every thread; reverse with lengths takes the path that
# gathers each step's rows.
for mode, P, dtype, reverse in [("lstm", None, np.float32, True), ("lstm", 100, np.float64, False),
                                ("gru", None, np.float32, True), ("rnn_tanh", None, np.float64, True)]:
    layer = make_layer(mode, 4, 9, 70, 300, P, True, dtype, seed=1)
    lengths = np.array([4, 1, 3, 4, 2, 4, 4, 4, 3], np.int64)
    fwd = forward(layer, lengths, reverse)
    g = backward(layer, fwd, *output_grads(layer), lengths, reverse)
    for a in list(fwd.values()) + list(g.values()):
        if a is not None:
            h.update(a.tobytes())
# one step: the step products are gemm() calls with their own threads
for mode, P in [("gru", None), ("lstm", 100)]:
    layer = make_layer(mode, 1, 9, 70, 300, P, True, np.float32, seed=2)
    fwd = forward(layer, None, False)
    g = backward(layer, fwd, *output_grads(layer), None, False)
    for a in list(fwd.values()) + list(g.values()):
        if a is not None:
            h.update(a.tobytes())
print(h.hexdigest())
"""


def test_result_does_not_depend_on_thread_count():
    script = _DIGEST_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    digests = set()
    for threads in ["1", "2", "3"]:
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        digests.add(run.stdout.strip())
    assert len(digests) == 1


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_repeated_calls_are_bitwise_identical(dtype):
    layer = make_layer("lstm", 6, 7, 40, 300, 120, True, dtype, seed=9)
    lengths = np.array([6, 3, 1, 6, 2, 5, 4], np.int64)
    gy, ghn, gcn = output_grads(layer)
    results = []
    for _ in range(2):
        fwd = forward(layer, lengths, True)
        g = backward(layer, fwd, gy, ghn, gcn, lengths, True)
        results.append(hashlib.sha256(b"".join(a.tobytes() for a in list(fwd.values()) + list(g.values())
                                               if a is not None)).digest())
    assert results[0] == results[1]


_ISA_SCRIPT = """
import sys
import numpy as np
from unet import _C
sys.path.insert(0, {tests!r})
from test_rnn_kernel import VARIANTS, make_layer, check_against_reference
print(_C.info()["cpu_gemm_kernel"])
for mode, proj in VARIANTS:
    for dtype, tol in [(np.float32, 2e-5), (np.float64, 1e-10)]:
        layer = make_layer(mode, 5, 14, 30, 40, 13 if proj else None, True, dtype, seed=3)
        check_against_reference(layer, [5, 1, 4] + [5] * 10 + [2], True, tol)
"""


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_every_cpu_micro_kernel(isa):
    """The GEMMs inside run each micro-kernel the CPU supports (UNET_CPU_ISA, fresh process)."""
    flags = _C.info()["cpu_features"]
    if isa != "generic" and not {"avx512": "avx512f" in flags, "avx2": "avx2" in flags and "fma" in flags}[isa]:
        pytest.skip(f"this CPU has no {isa}")
    script = _ISA_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, UNET_CPU_ISA=isa),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == isa


# ---------------------------------------------------------------- sizes -------------

@pytest.mark.parametrize("mode", MODES)
def test_buffer_sizes(mode):
    G = GATES[mode]
    for T, B, H in [(0, 3, 4), (5, 0, 4), (7, 3, 5), (1, 1, 1)]:
        assert _C.rnn_workspace_size(mode, T, B, H, H) == T * B * ((G + 2) * H + H)
        assert _C.rnn_backward_scratch_size(mode, T, B, H, H) == T * B * 2 * G * H + 4 * B * 2 * H
    if mode == "lstm":
        assert _C.rnn_workspace_size(mode, 3, 2, 8, 3) == 3 * 2 * (6 * 8 + 3)


@pytest.mark.parametrize("args,error,name", [
    (("lstm", -1, 2, 3, 3), ValueError, "steps"),
    (("lstm", 1, -2, 3, 3), ValueError, "batch"),
    (("lstm", 1, 2, 3.0, 3), TypeError, "hidden_size"),
    (("lstm", 1, 2, 3, True), TypeError, "proj_size"),
    (("lstm", 1, 2, 3, 4), ValueError, "proj_size"),
    (("lstm", 1, 2, 3, 0), ValueError, "proj_size"),
    (("gru", 1, 2, 3, 2), ValueError, "proj_size"),
    (("LSTM", 1, 2, 3, 3), ValueError, "mode"),
    ((None, 1, 2, 3, 3), TypeError, "mode"),
    (("lstm", 2**40, 2**40, 3, 3), ValueError, "rnn_workspace_size"),
    (("lstm", 2**70, 2, 3, 3), ValueError, "steps"),
])
def test_buffer_size_arguments_are_checked(args, error, name):
    with pytest.raises(error) as excinfo:
        _C.rnn_workspace_size(*args)
    if name == "rnn_workspace_size":
        with pytest.raises(error):
            _C.rnn_backward_scratch_size(*args)
    assert_names(excinfo, name)


# ---------------------------------------------------------------- validation --------

def valid_forward(mode="lstm", proj=False, dtype=np.float64, T=3, B=2, I=4, H=5):
    layer = make_layer(mode, T, B, I, H, 2 if proj else None, True, dtype)
    P = layer["h0"].shape[1]
    return dict(layer, lengths=np.array([T] * B, np.int64), reverse=False, y=np.zeros((T, B, P), dtype),
                h_n=np.zeros((B, P), dtype), c_n=np.zeros((B, H), dtype) if mode == "lstm" else None,
                workspace=np.zeros(_C.rnn_workspace_size(mode, T, B, H, P), dtype))


def valid_backward(mode="lstm", proj=False, dtype=np.float64, T=3, B=2, I=4, H=5):
    f = valid_forward(mode, proj, dtype, T, B, I, H)
    P = f["h0"].shape[1]
    z = lambda a: None if a is None else np.zeros_like(a)
    return dict({k: f[k] for k in ["mode", "x", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "h0", "c0", "lengths",
                                   "reverse", "y", "workspace"]},
                grad_y=np.ones((T, B, P), dtype), grad_h_n=np.ones((B, P), dtype), grad_c_n=z(f["c_n"]),
                grad_x=z(f["x"]), grad_w_ih=z(f["w_ih"]), grad_w_hh=z(f["w_hh"]), grad_b_ih=z(f["b_ih"]),
                grad_b_hh=z(f["b_hh"]), grad_w_hr=z(f["w_hr"]), grad_h0=z(f["h0"]), grad_c0=z(f["c0"]),
                scratch=np.zeros(_C.rnn_backward_scratch_size(mode, T, B, H, P), dtype))


FWD_ARRAYS = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "h0", "c0", "y", "h_n", "c_n", "workspace"]
FWD_OUTPUTS = ["y", "h_n", "c_n", "workspace"]
BWD_ARRAYS = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "h0", "c0", "y", "workspace", "grad_y", "grad_h_n",
              "grad_c_n"] + GRAD_NAMES + ["scratch"]
BWD_OUTPUTS = GRAD_NAMES + ["scratch"]


# Sizes >= 2 so that transposed and strided views really are non-contiguous; H >= 3 so
# that a projection (P = 2) exists.
sizes = dict(T=st.integers(2, 4), B=st.integers(2, 4), I=st.integers(2, 5), H=st.integers(3, 6))
variants = st.sampled_from([("lstm", False), ("lstm", True), ("gru", False), ("rnn_tanh", False),
                            ("rnn_relu", False)])


@pytest.mark.fuzz
@FUZZ
@given(variant=variants, dtype=st.sampled_from(DTYPES), name=st.sampled_from(FWD_ARRAYS),
       mutation=st.sampled_from(sorted(MUTATIONS)), seed=st.integers(0, 2**16), **sizes)
def test_forward_rejects_bad_arrays(variant, dtype, name, mutation, seed, T, B, I, H):
    args = valid_forward(*variant, dtype, T, B, I, H)
    if args[name] is None:
        return
    check_mutation(_C.rnn_forward, args, name, mutation, np.random.default_rng(seed))


@pytest.mark.fuzz
@FUZZ
@given(variant=variants, dtype=st.sampled_from(DTYPES), name=st.sampled_from(BWD_ARRAYS),
       mutation=st.sampled_from(sorted(MUTATIONS)), seed=st.integers(0, 2**16), **sizes)
def test_backward_rejects_bad_arrays(variant, dtype, name, mutation, seed, T, B, I, H):
    args = valid_backward(*variant, dtype, T, B, I, H)
    if args[name] is None:
        return
    check_mutation(_C.rnn_backward, args, name, mutation, np.random.default_rng(seed))


def test_valid_arguments_are_accepted():
    for mode, proj in VARIANTS:
        for dtype in DTYPES:
            _C.rnn_forward(**valid_forward(mode, bool(proj), dtype))
            _C.rnn_backward(**valid_backward(mode, bool(proj), dtype))


LENGTHS_BAD = [
    (lambda B, T: np.array([T] * (B - 1) + [0], np.int64), ValueError, r"lengths\[1\] = 0"),
    (lambda B, T: np.array([T + 1] + [T] * (B - 1), np.int64), ValueError, r"lengths\[0\] = 4"),
    (lambda B, T: np.array([-5] * B, np.int64), ValueError, r"lengths\[0\] = -5"),
    (lambda B, T: np.array([T] * B, np.int32), TypeError, "int64"),
    (lambda B, T: np.array([T] * B, np.uint64), TypeError, "int64"),
    (lambda B, T: np.array([T] * B, np.float64), TypeError, "int64"),
    (lambda B, T: np.array([T] * B, np.int64).astype(">i8"), TypeError, "int64"),
    (lambda B, T: np.array([T] * (B + 1), np.int64), ValueError, "shape"),
    (lambda B, T: np.array([[T] * B], np.int64), ValueError, "1-D"),
    (lambda B, T: np.array(T, np.int64), ValueError, "1-D"),
    (lambda B, T: np.array([T] * (2 * B), np.int64)[::2], ValueError, "contiguous"),
    (lambda B, T: [T] * B, TypeError, "list"),
    (lambda B, T: T, TypeError, "int"),
]


@pytest.mark.parametrize("bad,error,match", LENGTHS_BAD)
@pytest.mark.parametrize("fn,valid", [(_C.rnn_forward, valid_forward), (_C.rnn_backward, valid_backward)],
                         ids=["forward", "backward"])
def test_lengths_are_checked(fn, valid, bad, error, match):
    args = valid("gru", T=3, B=2)
    args["lengths"] = bad(2, 3)
    with pytest.raises(error, match=match) as excinfo:
        fn(**args)
    assert_names(excinfo, "lengths")


def test_lengths_with_zero_steps_are_refused():
    args = valid_forward("rnn_tanh", T=3, B=2)
    args.update(x=np.zeros((0, 2, 4)), y=np.zeros((0, 2, 5)), workspace=np.zeros(0), lengths=np.ones(2, np.int64))
    with pytest.raises(ValueError, match=r"\[1, T=0\]") as excinfo:
        _C.rnn_forward(**args)
    assert_names(excinfo, "lengths")


@pytest.mark.parametrize("fn,valid,names", [(_C.rnn_forward, valid_forward, FWD_OUTPUTS),
                                            (_C.rnn_backward, valid_backward, BWD_OUTPUTS)],
                         ids=["forward", "backward"])
def test_read_only_outputs_are_rejected(fn, valid, names):
    for name in names:
        args = valid("lstm", True)
        args[name] = read_only(args[name])
        with pytest.raises(ValueError, match="writeable") as excinfo:
            fn(**args)
        assert_names(excinfo, name)


OPTIONAL_FWD = {"b_ih", "b_hh", "w_hr", "lengths"}  # for an LSTM with projection
OPTIONAL_BWD = {"b_ih", "b_hh", "w_hr", "lengths", "grad_h_n", "grad_c_n"} | set(GRAD_NAMES)


@pytest.mark.parametrize("fn,valid,names,optional", [
    (_C.rnn_forward, valid_forward, FWD_ARRAYS + ["lengths"], OPTIONAL_FWD),
    (_C.rnn_backward, valid_backward, BWD_ARRAYS + ["lengths"], OPTIONAL_BWD)], ids=["forward", "backward"])
def test_none_only_where_allowed(fn, valid, names, optional):
    for name in names:
        args = valid("lstm", True)
        args[name] = None
        if name in {"b_ih", "b_hh"}:  # both or neither
            with pytest.raises(ValueError, match="both biases or neither"):
                fn(**args)
            for k in ["b_ih", "b_hh", "grad_b_ih", "grad_b_hh"]:
                if k in args:
                    args[k] = None
        if name == "w_hr":  # then P = H, and the rest must follow
            with pytest.raises(ValueError):
                fn(**args)
            continue
        if name in optional:
            fn(**args)
            continue
        with pytest.raises((TypeError, ValueError)) as excinfo:
            fn(**args)
        assert_names(excinfo, name)


@pytest.mark.parametrize("mode", ["gru", "rnn_tanh", "rnn_relu"])
def test_cell_state_and_projection_only_for_lstm(mode):
    lstm_f, lstm_b = valid_forward("lstm", True), valid_backward("lstm", True)
    for name in ["c0", "c_n", "w_hr"]:
        args = valid_forward(mode)
        args[name] = lstm_f[name]
        with pytest.raises(ValueError, match="LSTM") as excinfo:
            _C.rnn_forward(**args)
        assert_names(excinfo, name)
    for name in ["c0", "grad_c_n", "grad_c0", "w_hr"]:
        args = valid_backward(mode)
        args[name] = lstm_b[name]
        with pytest.raises(ValueError, match="LSTM") as excinfo:
            _C.rnn_backward(**args)
        assert_names(excinfo, name)


def test_missing_cell_state_for_lstm():
    for name in ["c0", "c_n"]:
        args = valid_forward("lstm")
        args[name] = None
        with pytest.raises(ValueError, match="cell state") as excinfo:
            _C.rnn_forward(**args)
        assert_names(excinfo, name)


def test_projection_rules():
    args = valid_forward("lstm", H=5)
    for P in [5, 6]:  # a projection must shrink
        args["w_hr"] = np.zeros((P, 5))
        with pytest.raises(ValueError, match="P < H") as excinfo:
            _C.rnn_forward(**args)
        assert_names(excinfo, "w_hr")
    args = valid_backward("lstm", proj=False)
    args["grad_w_hr"] = np.zeros((2, 5))
    with pytest.raises(ValueError, match="no projection") as excinfo:
        _C.rnn_backward(**args)
    assert_names(excinfo, "grad_w_hr")
    args = valid_backward("gru")
    args.update(b_ih=None, b_hh=None)
    for name in ["grad_b_ih", "grad_b_hh"]:
        a = dict(args, **{n: None for n in ["grad_b_ih", "grad_b_hh"]})
        a[name] = np.zeros(15)
        with pytest.raises(ValueError, match="no bias") as excinfo:
            _C.rnn_backward(**a)
        assert_names(excinfo, name)


def test_gate_count_must_divide_w_ih():
    args = valid_forward("gru", H=5)
    args["w_ih"] = np.zeros((14, 4))
    with pytest.raises(ValueError, match="divisible by G=3") as excinfo:
        _C.rnn_forward(**args)
    assert_names(excinfo, "w_ih")


@pytest.mark.parametrize("fn,valid", [(_C.rnn_forward, valid_forward), (_C.rnn_backward, valid_backward)],
                         ids=["forward", "backward"])
def test_mode_reverse_and_stream_are_checked(fn, valid):
    for key, bad, error in [("mode", "LSTM", ValueError), ("mode", "rnn", ValueError), ("mode", "", ValueError),
                            ("mode", None, TypeError), ("mode", 1, TypeError), ("mode", b"lstm", TypeError),
                            ("reverse", 1, TypeError), ("reverse", None, TypeError), ("reverse", "yes", TypeError),
                            ("reverse", np.bool_(True), TypeError),
                            ("stream", "0", TypeError), ("stream", -1, ValueError), ("stream", 2**70, ValueError)]:
        args = valid("gru")
        args[key] = bad
        with pytest.raises(error) as excinfo:
            fn(**args)
        assert_names(excinfo, key)


def test_outputs_may_not_alias_inputs_or_each_other():
    # h_n over h0 / c_n over c0: same shapes, one buffer
    for out, src in [("h_n", "h0"), ("c_n", "c0"), ("y", "x"), ("h_n", "y")]:
        args = valid_forward("lstm", I=5, H=5)
        if out == "h_n" and src == "y":
            args["h_n"] = args["y"][0]
        else:
            args[out] = args[src]
        with pytest.raises(ValueError, match="memory shared") as excinfo:
            _C.rnn_forward(**args)
        assert_names(excinfo, out)
    # a partial overlap: the workspace starts inside x's buffer
    args = valid_forward("gru")
    n_x, n_ws = args["x"].size, args["workspace"].size
    buf = np.zeros(n_x + n_ws)
    args["x"] = buf[:n_x].reshape(args["x"].shape)
    args["workspace"] = buf[n_x - 1:n_x - 1 + n_ws]
    with pytest.raises(ValueError, match="memory shared") as excinfo:
        _C.rnn_forward(**args)
    assert_names(excinfo, "workspace")

    for out, src in [("grad_x", "x"), ("grad_w_ih", "w_ih"), ("grad_h0", "grad_h_n"), ("grad_h0", "h0"),
                     ("grad_c0", "grad_c_n"), ("grad_b_ih", "grad_b_hh"), ("scratch", "workspace")]:
        args = valid_backward("lstm")
        if out == "scratch":
            buf = np.zeros(args["scratch"].size + args["workspace"].size)
            args["workspace"] = buf[:args["workspace"].size]
            args["scratch"] = buf[1:1 + args["scratch"].size]
        else:
            args[out] = args[src]
        with pytest.raises(ValueError, match="memory shared") as excinfo:
            _C.rnn_backward(**args)
        assert_names(excinfo, out)
    # an output over lengths' buffer
    args = valid_backward("gru")
    raw = np.zeros(args["grad_h0"].size)
    args["lengths"] = raw.view(np.int64)[:2]
    args["lengths"][:] = 3
    args["grad_h0"] = raw.reshape(args["grad_h0"].shape)
    with pytest.raises(ValueError, match="memory shared") as excinfo:
        _C.rnn_backward(**args)
    assert_names(excinfo, "grad_h0")
    assert_names(excinfo, "lengths")


def test_error_messages_name_the_dimensions():
    args = valid_forward("lstm", T=3, B=2, I=4, H=8)
    args["w_hh"] = np.zeros((32, 9))
    with pytest.raises(ValueError) as excinfo:
        _C.rnn_forward(**args)
    assert str(excinfo.value) == (
        "w_hh: expected a 2-D array of shape (G*H=32, P=8) for mode 'lstm' (G=4) with T=3, B=2, I=4 (x), "
        "H=8 (w_ih), P=8 (= H, no w_hr), got shape (32, 9)")


def test_fake_cuda_arrays_are_refused():
    for name, typestr in [("x", "<f8"), ("lengths", "<i8"), ("workspace", "<f8")]:
        args = valid_forward("gru")
        args[name] = FakeCudaArray(np.shape(args[name]), typestr)
        with pytest.raises(ValueError) as excinfo:
            _C.rnn_forward(**args)
        assert_names(excinfo, name)
        if not _C.info()["cuda_compiled"]:
            assert "without CUDA" in str(excinfo.value)


# Anything at all in any argument position: a result or a ValueError/TypeError, never a crash.
_junk = junk_arguments(1, booleans=True)


@pytest.mark.fuzz
@FUZZ
@given(args=st.lists(_junk, min_size=24, max_size=24), mode=st.sampled_from(MODES + ["bogus", None]))
def test_never_crashes_on_junk(args, mode):
    for fn, n in [(_C.rnn_forward, 14), (_C.rnn_backward, 24)]:
        try:
            fn(mode, *args[:n])
        except (ValueError, TypeError):
            pass


@pytest.mark.fuzz
@FUZZ
@given(variant=variants, T=st.integers(0, 3), B=st.integers(0, 3), I=st.integers(0, 3), H=st.integers(3, 4),
       lengths=st.lists(st.integers(-1, 4), min_size=0, max_size=4), reverse=st.booleans(),
       drop=st.sets(st.sampled_from(["b_ih", "b_hh", "w_hr", "c0", "c_n", "grad_h_n", "grad_c_n", "grad_x"])))
def test_never_crashes_on_near_valid_arguments(variant, T, B, I, H, lengths, reverse, drop):
    """Valid layers with odd sizes and arbitrary lengths, some optional arguments dropped:
    each call either runs (NaN-free for finite inputs) or raises ValueError/TypeError."""
    f = valid_forward(*variant, np.float64, T, B, I, H)
    b = valid_backward(*variant, np.float64, T, B, I, H)
    for args in (f, b):
        args["lengths"] = np.array(lengths, np.int64)
        args["reverse"] = reverse
        for name in drop & set(args):
            args[name] = None
    for fn, args in [(_C.rnn_forward, f), (_C.rnn_backward, b)]:
        try:
            fn(**args)
        except (ValueError, TypeError):
            continue
        for v in args.values():
            if isinstance(v, np.ndarray) and v.dtype == np.float64:
                assert np.isfinite(v).all()
