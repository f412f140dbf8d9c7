"""LSTM with layer normalization and zoneout, GRU with zoneout (unet.functional.rnn_ln,
nn.LSTM(layer_norm=, zoneout=), nn.GRU(zoneout=)): outputs, final states and every
gradient against the step-by-step composed reference (tests/reference_rnn.py) in float64,
finite differences, the plain path when both are off, validation, and the bindings fuzzed."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernel_checks
import unet
from gradcheck import gradcheck
from kernel_checks import FUZZ, check_mutation
from reference_rnn import composed_rnn_ln
from unet import _C, backend
from unet import functional as F
from unet import nn
from unet.functional.rnn_ln import LAYER_NORM_NAMES

T, B, I, H = 5, 3, 4, 6


def _tensor(rng, shape, scale=0.5, dtype=np.float64):
    return unet.tensor((rng.standard_normal(shape) * scale).astype(dtype), requires_grad=True)


def _layer(mode, seed, bias=True, layer_norm=True, dtype=np.float64):
    rng = np.random.default_rng(seed)
    G = 4 if mode == "lstm" else 3
    x = _tensor(rng, (T, B, I), 1.0, dtype)
    h0 = _tensor(rng, (B, H), 0.5, dtype)
    c0 = _tensor(rng, (B, H), 0.5, dtype) if mode == "lstm" else None
    weights = [_tensor(rng, (G * H, I), 0.4, dtype), _tensor(rng, (G * H, H), 0.4, dtype)]
    if bias:
        weights += [_tensor(rng, (G * H,), 0.3, dtype), _tensor(rng, (G * H,), 0.3, dtype)]
    ln = None
    if layer_norm:  # gains around 1, biases around 0, none trivial
        ln = tuple(unet.tensor((rng.standard_normal(n) * 0.3 + (1.0 if "weight" in name else 0.0)).astype(dtype),
                               requires_grad=True)
                   for name, n in zip(LAYER_NORM_NAMES, (G * H,) * 4 + (H,) * 2))
    return rng, x, h0, c0, weights, ln


def _keep(rng, kind):
    if kind is None:
        return None
    if kind == "mask":
        return (rng.random((T, B, H)) < 0.4).astype(np.float64)
    return rng.random((T, B, H))  # fractional keep factors: the blend formula everywhere


def _run_both(mode, seed, bias, layer_norm, keep, lengths, reverse):
    rng, x, h0, c0, weights, ln = _layer(mode, seed, bias, layer_norm)
    keep_h = _keep(rng, keep)
    keep_c = _keep(rng, keep) if mode == "lstm" else None
    rng_g = np.random.default_rng(seed + 1)
    grads = [rng_g.standard_normal(s) for s in ((T, B, H), (B, H), (B, H))]
    leaves = [x, h0] + ([c0] if c0 is not None else []) + weights + list(ln or ())
    results = []
    for fn in (F.rnn_ln, composed_rnn_ln):
        for t in leaves:
            t.grad = None
        y, h, c = fn(mode, x, h0, c0, weights, layer_norm=ln, keep_h=keep_h, keep_c=keep_c,
                     lengths=lengths, reverse=reverse)
        loss = (y * unet.tensor(grads[0])).sum() + (h * unet.tensor(grads[1])).sum()
        if c is not None:
            loss = loss + (c * unet.tensor(grads[2])).sum()
        loss.backward()
        outs = [y, h] + ([c] if c is not None else [])
        results.append(([o.numpy().copy() for o in outs], [t.grad.numpy().copy() for t in leaves]))
    return results


CASES = [  # mode, bias, layer_norm, keep, lengths, reverse
    ("lstm", True, True, None, None, False),
    ("lstm", False, True, None, None, True),
    ("lstm", True, True, "mask", None, False),
    ("lstm", True, True, "frac", [5, 2, 4], False),
    ("lstm", True, True, "mask", [3, 5, 1], True),
    ("lstm", True, False, "mask", [2, 5, 4], True),
    ("lstm", True, False, "frac", None, False),
    ("gru", True, False, "mask", None, False),
    ("gru", False, False, "frac", [4, 1, 5], True),
    ("gru", True, False, "mask", [5, 3, 2], False),
]


@pytest.mark.parametrize("mode,bias,layer_norm,keep,lengths,reverse", CASES)
def test_matches_composed_reference(mode, bias, layer_norm, keep, lengths, reverse):
    (outs, grads), (ref_outs, ref_grads) = _run_both(mode, 7, bias, layer_norm, keep, lengths, reverse)
    for got, want in zip(outs, ref_outs):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert len(grads) == len(ref_grads)
    for k, (got, want) in enumerate(zip(grads, ref_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11, err_msg=f"gradient {k}")


def test_layer_norm_gradients_are_not_trivial():
    """The gains' and biases' gradients the reference checks are not zeros by accident."""
    rng, x, h0, c0, weights, ln = _layer("lstm", 3)
    y, h, c = F.rnn_ln("lstm", x, h0, c0, weights, layer_norm=ln)
    (y.sum() * 1.7 + (c * c).sum()).backward()
    for name, t in zip(LAYER_NORM_NAMES, ln):
        assert np.abs(t.grad.numpy()).max() > 1e-3, name


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_gradcheck(mode):
    rng, x, h0, c0, weights, ln = _layer(mode, 11, layer_norm=mode == "lstm")
    keep_h = _keep(rng, "frac")
    keep_c = _keep(rng, "mask") if mode == "lstm" else None
    lengths = [5, 3, 4]
    inputs = [x, h0] + ([c0] if c0 is not None else []) + weights + list(ln or ())
    n_ln = 6 if ln else 0

    def fn(*args):
        args = list(args)
        x_, h_ = args[0], args[1]
        c_ = args[2] if mode == "lstm" else None
        rest = args[3:] if mode == "lstm" else args[2:]
        w, l = rest[:len(rest) - n_ln], rest[len(rest) - n_ln:]
        return F.rnn_ln(mode, x_, h_, c_, w, layer_norm=tuple(l) if l else None, keep_h=keep_h, keep_c=keep_c,
                        lengths=lengths, reverse=True)[:2 + (mode == "lstm")]

    gradcheck(fn, inputs)


def test_zoneout_eval_is_the_expectation():
    """nn.LSTM(zoneout=p).eval(): h_t = p h_{t-1} + (1-p) h_t', c likewise (the reference with p everywhere)."""
    p = 0.3
    model = nn.LSTM(I, H, layer_norm=True, zoneout=p, dtype="float64").eval()
    x = unet.tensor(np.random.default_rng(0).standard_normal((T, B, I)))
    y, (h_n, c_n) = model(x)
    full = np.full((T, B, H), p)
    zeros = unet.tensor(np.zeros((B, H)))
    ln = tuple(getattr(model, f"{name}_l0") for name in LAYER_NORM_NAMES)
    ry, rh, rc = composed_rnn_ln("lstm", x, zeros, zeros, model._weights(0, ""), layer_norm=ln, keep_h=full,
                                 keep_c=full)
    np.testing.assert_allclose(y.numpy(), ry.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_n.numpy()[0], rc.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_zoneout_train_masks_come_from_unets_generator(mode):
    """In training, the masks are random((T, B, H)) < p from unet's generator, h's then c's, per layer
    and direction; the result equals the reference run with those masks."""
    p = 0.35
    cls = nn.LSTM if mode == "lstm" else nn.GRU
    model = cls(I, H, bidirectional=True, zoneout=p, dtype="float64").train()
    x = unet.tensor(np.random.default_rng(1).standard_normal((T, B, I)))
    unet.manual_seed(123)
    y = model(x)[0]
    unet.manual_seed(123)
    gen = backend.random_state.generator(x.device)
    zeros = unet.tensor(np.zeros((B, H)))
    outs = []
    for d, suffix in enumerate(("", "_reverse")):
        keep_h = (gen.random((T, B, H)) < p).astype(np.float64)
        keep_c = (gen.random((T, B, H)) < p).astype(np.float64) if mode == "lstm" else None
        assert 0 < keep_h.mean() < 1
        outs.append(composed_rnn_ln(mode, x, zeros, zeros if mode == "lstm" else None, model._weights(0, suffix),
                                    keep_h=keep_h, keep_c=keep_c, reverse=d == 1)[0].numpy())
    np.testing.assert_allclose(y.numpy(), np.concatenate(outs, -1), rtol=1e-10, atol=1e-12)
    model.eval()
    assert not np.allclose(model(x)[0].numpy(), y.numpy())  # eval is the expectation, not a mask


@pytest.mark.parametrize("cls,kwargs", [(nn.LSTM, {}), (nn.GRU, {}), (nn.LSTM, {"proj_size": 2})])
def test_both_off_is_bitwise_the_plain_kernel(cls, kwargs):
    """layer_norm=False, zoneout=0: the module runs exactly the plain kernel (same bits as a module
    built without the options, with the same parameters), in training and evaluation, with
    gradients."""
    unet.manual_seed(5)
    plain = cls(I, H, num_layers=2, bidirectional=True, **kwargs)
    unet.manual_seed(5)
    off = cls(I, H, num_layers=2, bidirectional=True, zoneout=0.0, **kwargs,
              **({"layer_norm": False} if cls is nn.LSTM else {}))
    assert [n for n, _ in off.named_parameters()] == [n for n, _ in plain.named_parameters()]
    x = np.random.default_rng(2).standard_normal((T, B, I)).astype(np.float32)
    results = []
    for model in (plain, off):
        xt = unet.tensor(x, requires_grad=True)
        out = model(xt, lengths=[5, 2, 4])[0]
        out.sum().backward()
        results.append([out.numpy(), xt.grad.numpy()] + [p.grad.numpy() for p in model.parameters()])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_module_matches_reference_stacked_bidirectional_lengths():
    """Two layers, both directions, lengths, batch_first, layer norm and zoneout (eval)."""
    p = 0.2
    model = nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, layer_norm=True, zoneout=p,
                    dtype="float64").eval()
    rng = np.random.default_rng(4)
    for name, q in model.named_parameters():  # layer-norm gains and biases away from 1 and 0
        if name.startswith("ln_"):
            q.data[...] = rng.standard_normal(q.shape) * 0.3 + (1.0 if "_weight_" in name else 0.0)
    x = unet.tensor(rng.standard_normal((B, T, I)))
    lengths = [3, 5, 2]
    y, (h_n, c_n) = model(x, lengths=lengths)
    full = np.full((T, B, H), p)
    inp = x.transpose(0, 1)
    zeros = unet.tensor(np.zeros((B, H)))
    hs, cs = [], []
    for layer in range(2):
        outs = []
        for d, suffix in enumerate(("", "_reverse")):
            ln = tuple(getattr(model, f"{name}_l{layer}{suffix}") for name in LAYER_NORM_NAMES)
            ry, rh, rc = composed_rnn_ln("lstm", inp, zeros, zeros, model._weights(layer, suffix), layer_norm=ln,
                                         keep_h=full, keep_c=full, lengths=lengths, reverse=d == 1)
            outs.append(ry)
            hs.append(rh.numpy())
            cs.append(rc.numpy())
        inp = F.cat(outs, dim=-1)
    np.testing.assert_allclose(y.numpy(), inp.transpose(0, 1).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n.numpy(), np.stack(hs), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_n.numpy(), np.stack(cs), rtol=1e-10, atol=1e-12)


def test_layer_norm_parameters_init_and_names():
    model = nn.LSTM(I, H, bidirectional=True, layer_norm=True)
    names = [n for n, _ in model.named_parameters()]
    for suffix in ("", "_reverse"):
        for name in LAYER_NORM_NAMES:
            assert f"{name}_l0{suffix}" in names
    assert np.all(model.ln_ih_weight_l0.numpy() == 1) and np.all(model.ln_c_bias_l0_reverse.numpy() == 0)
    assert model.ln_hh_bias_l0.shape == (4 * H,) and model.ln_c_weight_l0.shape == (H,)


def test_float32_close_to_float64_and_deterministic():
    model = nn.LSTM(I, H, layer_norm=True, zoneout=0.25, dtype="float64").eval()
    x = np.random.default_rng(6).standard_normal((T, B, I))
    y64 = model(unet.tensor(x))[0].numpy()
    model32 = nn.LSTM(I, H, layer_norm=True, zoneout=0.25).eval()
    model32.load_state_dict({k: unet.tensor(v.numpy().astype(np.float32)) for k, v in model.state_dict().items()})
    first = model32(unet.tensor(x.astype(np.float32)))[0].numpy()
    again = model32(unet.tensor(x.astype(np.float32)))[0].numpy()
    assert first.dtype == np.float32 and np.array_equal(first, again)
    np.testing.assert_allclose(first, y64, rtol=1e-4, atol=1e-5)


def test_autocast_runs_in_float32_on_rounded_inputs():
    model = nn.LSTM(I, H, layer_norm=True, zoneout=0.1).eval()
    x = unet.tensor(np.random.default_rng(8).standard_normal((T, B, I)).astype(np.float32), requires_grad=True)
    with unet.amp.autocast(dtype="bfloat16"):
        y = model(x)[0]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), model(x)[0].numpy(), atol=3e-2)
    y.sum().backward()
    assert x.grad.dtype == np.float32 and np.isfinite(x.grad.numpy()).all()


@pytest.mark.parametrize("build,name", [
    (lambda: nn.GRU(I, H, layer_norm=True), None),  # GRU has no layer_norm argument (TypeError)
    (lambda: nn.RNNBase("gru", I, H, layer_norm=True), "layer_norm"),
    (lambda: nn.RNN(I, H, zoneout=0.1), None),
    (lambda: nn.RNNBase("rnn_tanh", I, H, zoneout=0.1), "zoneout"),
    (lambda: nn.LSTM(I, H, zoneout=1.5), "zoneout"),
    (lambda: nn.LSTM(I, H, zoneout=-0.1), "zoneout"),
    (lambda: nn.LSTM(I, H, layer_norm="yes"), "layer_norm"),
    (lambda: nn.LSTM(I, H, proj_size=2, layer_norm=True), "proj_size"),
    (lambda: nn.LSTM(I, H, proj_size=2, zoneout=0.1), "proj_size"),
])
def test_module_validation(build, name):
    with pytest.raises((TypeError, ValueError)) as excinfo:
        build()
    if name:
        kernel_checks.assert_names(excinfo, name)


def test_functional_validation():
    rng, x, h0, c0, weights, ln = _layer("lstm", 0)
    bad = [
        (dict(mode="rnn_tanh"), "mode"),
        (dict(layer_norm=ln[:5]), "layer_norm"),
        (dict(layer_norm=ln[:5] + (unet.tensor(np.ones(H + 1)),)), "ln_c_bias"),
        (dict(keep_h=np.zeros((T, B, H + 1))), "keep_h"),
        (dict(keep_c=np.full((T, B, H), 1.5)), "keep_c"),
        (dict(keep_h=np.full((T, B, H), np.nan)), "keep_h"),
        (dict(eps=0.0), "eps"),
        (dict(lengths=[6, 1, 1]), "lengths"),
    ]
    for kwargs, name in bad:
        args = dict(mode="lstm", x=x, h0=h0, c0=c0, weights=weights, layer_norm=ln)
        args.update(kwargs)
        with pytest.raises((TypeError, ValueError)) as excinfo:
            F.rnn_ln(**args)
        kernel_checks.assert_names(excinfo, name)
    _, xg, hg, _, wg, _ = _layer("gru", 0, layer_norm=False)
    with pytest.raises(ValueError) as excinfo:
        F.rnn_ln("gru", xg, hg, None, wg, layer_norm=ln)
    kernel_checks.assert_names(excinfo, "layer_norm")
    with pytest.raises(ValueError) as excinfo:
        F.rnn_ln("gru", xg, hg, None, wg, keep_c=np.zeros((T, B, H)))
    kernel_checks.assert_names(excinfo, "keep_c")


# ------------------------------------------------------------------ the bindings ------

def valid_forward(mode="lstm", layer_norm=True, zoneout=True, dtype=np.float64, T_=3, B_=2, I_=3, H_=4):
    rng = np.random.default_rng(0)
    G = 4 if mode == "lstm" else 3
    lstm = mode == "lstm"

    def a(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    args = dict(mode=mode, x=a(T_, B_, I_), w_ih=a(G * H_, I_), w_hh=a(G * H_, H_), b_ih=a(G * H_), b_hh=a(G * H_),
                h0=a(B_, H_), c0=a(B_, H_) if lstm else None, lengths=None, reverse=False)
    for name in LAYER_NORM_NAMES:
        args[name] = a(H_ if name.startswith("ln_c") else G * H_) if layer_norm and lstm else None
    args.update(eps=1e-5, keep_h=rng.random((T_, B_, H_)).astype(dtype) if zoneout else None,
                keep_c=rng.random((T_, B_, H_)).astype(dtype) if zoneout and lstm else None,
                y=np.empty((T_, B_, H_), dtype), h_n=np.empty((B_, H_), dtype),
                c_n=np.empty((B_, H_), dtype) if lstm else None,
                workspace=np.empty(_C.rnn_ln_workspace_size(mode, T_, B_, H_, layer_norm and lstm), dtype))
    return args


def valid_backward(*args, **kwargs):
    f = valid_forward(*args, **kwargs)
    _C.rnn_ln_forward(**f)
    mode, dtype = f["mode"], f["x"].dtype
    lstm, ln = mode == "lstm", f["ln_ih_weight"] is not None
    b = {k: v for k, v in f.items() if k not in ("h_n", "c_n")}
    b.update(grad_y=np.ones_like(f["y"]), grad_h_n=np.ones_like(f["h_n"]),
             grad_c_n=np.ones_like(f["c_n"]) if lstm else None,
             grad_x=np.empty_like(f["x"]), grad_w_ih=np.empty_like(f["w_ih"]), grad_w_hh=np.empty_like(f["w_hh"]),
             grad_b_ih=np.empty_like(f["b_ih"]), grad_b_hh=np.empty_like(f["b_hh"]),
             grad_h0=np.empty_like(f["h0"]), grad_c0=np.empty_like(f["c0"]) if lstm else None)
    for name in LAYER_NORM_NAMES:
        b["grad_" + name] = np.empty_like(f[name]) if ln else None
    T_, B_, _ = f["x"].shape
    b["scratch"] = np.empty(_C.rnn_ln_scratch_size(mode, T_, B_, f["h0"].shape[1]), dtype)
    return b


VARIANTS = [("lstm", True, True), ("lstm", True, False), ("lstm", False, True), ("gru", False, True)]
FWD_ARRAYS = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0", *LAYER_NORM_NAMES, "keep_h", "keep_c", "y", "h_n",
              "c_n", "workspace"]
BWD_ARRAYS = ["x", "w_hh", "ln_c_weight", "keep_h", "y", "workspace", "grad_y", "grad_h_n", "grad_c_n", "grad_x",
              "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_h0", "grad_c0", "grad_ln_ih_weight", "grad_ln_c_bias",
              "scratch"]


def test_binding_valid_arguments_and_sizes():
    for variant in VARIANTS:
        for dtype in (np.float32, np.float64):
            _C.rnn_ln_backward(**valid_backward(*variant, dtype=dtype))
    assert _C.rnn_ln_workspace_size("lstm", 3, 2, 4, True) == 3 * 2 * (16 * 4 + 3)
    assert _C.rnn_ln_workspace_size("gru", 3, 2, 4, False) == 3 * 2 * 5 * 4
    assert _C.rnn_ln_scratch_size("lstm", 3, 2, 4) == 3 * 2 * 13 * 4
    for call, name in [(lambda: _C.rnn_ln_workspace_size("gru", 1, 1, 1, True), "layer_norm"),
                       (lambda: _C.rnn_ln_workspace_size("rnn_tanh", 1, 1, 1, False), "mode"),
                       (lambda: _C.rnn_ln_scratch_size("lstm", -1, 1, 1), "steps")]:
        with pytest.raises(ValueError) as excinfo:
            call()
        kernel_checks.assert_names(excinfo, name)


def test_binding_refuses_partial_layer_norm_and_bad_keep():
    args = valid_forward()
    args["ln_hh_bias"] = None
    with pytest.raises(ValueError) as excinfo:
        _C.rnn_ln_forward(**args)
    kernel_checks.assert_names(excinfo, "ln_hh_bias")
    args = valid_forward()
    args["keep_h"] = args["keep_h"] + 1.0
    with pytest.raises(ValueError) as excinfo:
        _C.rnn_ln_forward(**args)
    kernel_checks.assert_names(excinfo, "keep_h")
    args = valid_forward()
    args["lengths"] = np.array([0, 3], np.int64)
    with pytest.raises(ValueError) as excinfo:
        _C.rnn_ln_forward(**args)
    kernel_checks.assert_names(excinfo, "lengths")


variants = st.sampled_from(VARIANTS)


@pytest.mark.fuzz
@FUZZ
@given(variant=variants, dtype=st.sampled_from([np.float32, np.float64]), name=st.sampled_from(FWD_ARRAYS),
       mutation=st.sampled_from(sorted(kernel_checks.MUTATIONS)), seed=st.integers(0, 2**16))
def test_forward_rejects_bad_arrays(variant, dtype, name, mutation, seed):
    args = valid_forward(*variant, dtype=dtype)
    if args[name] is None:
        return
    check_mutation(_C.rnn_ln_forward, args, name, mutation, np.random.default_rng(seed))


@pytest.mark.fuzz
@FUZZ
@given(variant=variants, dtype=st.sampled_from([np.float32, np.float64]), name=st.sampled_from(BWD_ARRAYS),
       mutation=st.sampled_from(sorted(kernel_checks.MUTATIONS)), seed=st.integers(0, 2**16))
def test_backward_rejects_bad_arrays(variant, dtype, name, mutation, seed):
    args = valid_backward(*variant, dtype=dtype)
    if args[name] is None:
        return
    check_mutation(_C.rnn_ln_backward, args, name, mutation, np.random.default_rng(seed))


_junk = kernel_checks.junk_arguments(0.5, booleans=True)


@pytest.mark.fuzz
@FUZZ
@given(args=st.lists(_junk, min_size=37, max_size=37), mode=st.sampled_from(["lstm", "gru", "bogus", None]),
       sizes=st.lists(st.integers(-2, 3), min_size=3, max_size=3), flag=st.booleans())
def test_never_crashes_on_junk(args, mode, sizes, flag):
    for fn, n in [(_C.rnn_ln_forward, 22), (_C.rnn_ln_backward, 37)]:
        try:
            fn(mode, *args[:n])
        except (ValueError, TypeError):
            pass
    for fn, extra in [(_C.rnn_ln_workspace_size, [flag]), (_C.rnn_ln_scratch_size, [])]:
        try:
            fn(mode, *sizes, *extra)
        except (ValueError, TypeError):
            pass


@pytest.mark.fuzz
@FUZZ
@given(variant=variants, T_=st.integers(0, 3), B_=st.integers(0, 3), I_=st.integers(0, 3), H_=st.integers(1, 4),
       lengths=st.lists(st.integers(-1, 4), min_size=0, max_size=4), reverse=st.booleans(),
       drop=st.sets(st.sampled_from(["b_ih", "b_hh", "c0", "c_n", "keep_h", "keep_c", "ln_c_bias", "grad_h_n",
                                     "grad_x", "grad_ln_ih_weight"])))
def test_never_crashes_on_near_valid_arguments(variant, T_, B_, I_, H_, lengths, reverse, drop):
    """Valid layers with odd sizes and arbitrary lengths, some optional arguments dropped: each
    call either runs (finite results) or raises ValueError/TypeError."""
    f = valid_forward(*variant, T_=T_, B_=B_, I_=I_, H_=H_)
    try:
        b = valid_backward(*variant, T_=T_, B_=B_, I_=I_, H_=H_)
    except (ValueError, TypeError):
        b = None
    for args in (f, b):
        if args is None:
            continue
        args["lengths"] = np.array(lengths, np.int64)
        args["reverse"] = reverse
        for name in drop & set(args):
            args[name] = None
    for fn, args in [(_C.rnn_ln_forward, f), (_C.rnn_ln_backward, b)]:
        if args is None:
            continue
        try:
            fn(**args)
        except (ValueError, TypeError):
            continue
        if fn is _C.rnn_ln_forward:
            assert np.isfinite(args["y"]).all()


_THREADS_SCRIPT = """
import numpy as np, sys, unet
from unet import functional as F
rng = np.random.default_rng(0)
T, B, I, H = 4, 40, 8, 128   # big enough for the threads to share the sequences (20 each)
t = lambda *s: unet.tensor((rng.standard_normal(s) * 0.3).astype(sys.argv[2]), requires_grad=True)
x, h0, c0 = t(T, B, I), t(B, H), t(B, H)
w = [t(4 * H, I), t(4 * H, H), t(4 * H), t(4 * H)]
ln = [t(4 * H), t(4 * H), t(4 * H), t(4 * H), t(H), t(H)]
keep = (rng.random((T, B, H)) < 0.3).astype(np.float64)
y, h, c = F.rnn_ln("lstm", x, h0, c0, w, layer_norm=ln, keep_h=keep, keep_c=keep[::-1].copy(),
                   lengths=[T - b % T for b in range(B)], reverse=True)
(y.sum() + (h * c).sum()).backward()
np.savez(sys.argv[1], y.numpy(), *[p.grad.numpy() for p in [x, h0, c0] + w + ln])
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_results_do_not_depend_on_the_thread_count(tmp_path, dtype):
    import os
    import subprocess
    import sys
    script = tmp_path / "run.py"
    script.write_text(_THREADS_SCRIPT)
    outs = []
    for threads in ("1", "2"):
        path = tmp_path / f"out{threads}.npz"
        package_root = os.path.dirname(os.path.dirname(unet.__file__))
        env = {**os.environ, "OMP_NUM_THREADS": threads,
               "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, str(script), str(path), dtype], check=True, env=env, timeout=300)
        outs.append(np.load(path))
    for key in outs[0].files:
        assert np.array_equal(outs[0][key], outs[1][key]), key
