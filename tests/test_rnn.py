"""Recurrent layers on the fused kernels (nn.RNN/LSTM/GRU, the cells, F.rnn, nn.utils.rnn)
against torch.nn on copied weights: outputs, final states and every gradient."""
import itertools
import math

import numpy as np
import pytest
import torch

import unet
from gradcheck import gradcheck
from unet import _C, nn
from unet import functional as F
from unet.functional.rnn import GATES
from unet.nn.utils import rnn as rnn_utils

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

T, B, IN, H, P = 5, 3, 4, 5, 3
KINDS = ["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"]
RTOL = {np.float64: 1e-10, np.float32: 1e-5}


def rng(seed=0):
    return np.random.default_rng(seed)


def make(kind, input_size=IN, hidden_size=H, dtype=np.float64, **kw):
    """(unet module, torch module) with torch's weights loaded into unet's."""
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    if kind.startswith("lstm"):
        if kind == "lstm_proj":
            kw["proj_size"] = P
        pair = nn.LSTM, torch.nn.LSTM
    elif kind == "gru":
        pair = nn.GRU, torch.nn.GRU
    else:
        kw["nonlinearity"] = kind.split("_")[1]
        pair = nn.RNN, torch.nn.RNN
    theirs = pair[1](input_size, hidden_size, **kw).to(tdtype)
    ours = pair[0](input_size, hidden_size, dtype=np.dtype(dtype).name, **kw)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def state_shapes(kind, layers_dirs, batch, hidden=H):
    """Shapes of h0 (and c0) for a module of ``kind``; batch None: unbatched."""
    lead = (layers_dirs,) if batch is None else (layers_dirs, batch)
    out = P if kind == "lstm_proj" else hidden
    return [lead + (out,), lead + (hidden,)] if kind.startswith("lstm") else [lead + (out,)]


def close(ours, theirs, rtol, what):
    theirs = np.asarray(theirs, dtype=np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == theirs.shape, what
    scale = max(np.abs(theirs).max(initial=0.0), 1e-30)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale, err_msg=what)


def run_pair(ours, theirs, x, state, lengths, dtype, seed=7):
    """Forward both, back-propagate the same random projection of (output, h_n[, c_n]), compare
    values and the gradients of x, the initial states and every parameter."""
    rtol = RTOL[dtype]
    batch_first = ours.batch_first
    xu, xt = unet.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    su = None if state is None else [unet.tensor(s, requires_grad=True) for s in state]
    st = None if state is None else [torch.tensor(s, requires_grad=True) for s in state]
    lstm = isinstance(theirs, torch.nn.LSTM)

    def hx(s):
        return None if s is None else (tuple(s) if lstm else s[0])

    out_u, hn_u = ours(xu, hx(su), lengths=lengths)
    if lengths is None:
        out_t, hn_t = theirs(xt, hx(st))
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first,
                                                         enforce_sorted=False)
        out_t, hn_t = theirs(packed, hx(st))
        out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_t, batch_first=batch_first,
                                                          total_length=x.shape[1 if batch_first else 0])
    outs_u = [out_u] + (list(hn_u) if lstm else [hn_u])
    outs_t = [out_t] + (list(hn_t) if lstm else [hn_t])
    r = rng(seed)
    loss_u = loss_t = 0
    for name, u, t in zip(("output", "h_n", "c_n"), outs_u, outs_t):
        assert u.dtype == np.dtype(dtype)
        close(u.numpy(), t.detach().numpy(), rtol, name)
        w = r.standard_normal(u.shape).astype(dtype)
        loss_u = loss_u + (u * unet.tensor(w)).sum()
        loss_t = loss_t + (t * torch.from_numpy(w)).sum()
    loss_u.backward()
    loss_t.backward()
    close(xu.grad.numpy(), xt.grad.numpy(), rtol, "grad x")
    for k, (a, b) in enumerate(zip(su or [], st or [])):
        close(a.grad.numpy(), b.grad.numpy(), rtol, f"grad {('h0', 'c0')[k]}")
    tparams = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(tparams)
    for name, p in ours.named_parameters():
        close(p.grad.numpy(), tparams[name].grad.numpy(), rtol, f"grad {name}")


def lengths_for(variant, batch, steps, r):
    if variant == "full":
        return None
    if variant == "equal":
        return [steps] * batch
    # mixed: any order, with a length-1 sequence and a full one
    lengths = r.integers(1, steps + 1, size=batch)
    lengths[0], lengths[-1] = 1, steps
    return r.permutation(lengths).tolist()


SWEEP = list(itertools.product(KINDS, [1, 2, 3], [False, True], [False, True], ["full", "mixed", "equal"]))


@pytest.mark.parametrize("kind, layers, bidirectional, batch_first, variant", SWEEP, ids=str)
def test_matches_torch_float64(kind, layers, bidirectional, batch_first, variant):
    ours, theirs = make(kind, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    seed = SWEEP.index((kind, layers, bidirectional, batch_first, variant))
    r = rng(seed)
    x = r.standard_normal((B, T, IN) if batch_first else (T, B, IN))
    with_state = seed % 2 == 0
    d = 2 if bidirectional else 1
    state = [r.standard_normal(s) for s in state_shapes(kind, layers * d, B)] if with_state else None
    run_pair(ours, theirs, x, state, lengths_for(variant, B, T, r), np.float64, seed)


@pytest.mark.parametrize("kind, bidirectional, variant",
                         list(itertools.product(KINDS, [False, True], ["full", "mixed"])), ids=str)
def test_matches_torch_float32(kind, bidirectional, variant):
    ours, theirs = make(kind, dtype=np.float32, num_layers=2, bidirectional=bidirectional)
    r = rng(11)
    x = r.standard_normal((T, B, IN)).astype(np.float32)
    state = [r.standard_normal(s).astype(np.float32) for s in state_shapes(kind, 2 * (1 + bidirectional), B)]
    run_pair(ours, theirs, x, state, lengths_for(variant, B, T, r), np.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["batch1", "batch1_lengths", "no_state", "one_step", "all_length_1",
                                  "unbatched", "unbatched_state"])
def test_edge_shapes_match_torch(kind, case):
    ours, theirs = make(kind, num_layers=2, bidirectional=True)
    r = rng(3)
    steps, batch, lengths, state = T, B, None, None
    if case.startswith("batch1"):
        batch = 1
        lengths = [3] if case == "batch1_lengths" else None
    if case == "one_step":
        steps = 1
    if case == "all_length_1":
        lengths = [1] * batch
    if case.startswith("unbatched"):
        x = r.standard_normal((steps, IN))
        if case == "unbatched_state":
            state = [r.standard_normal(s) for s in state_shapes(kind, 4, None)]
        run_pair(ours, theirs, x, state, None, np.float64)
        return
    x = r.standard_normal((steps, batch, IN))
    if case != "no_state":
        state = [r.standard_normal(s) for s in state_shapes(kind, 4, batch)]
    run_pair(ours, theirs, x, state, lengths, np.float64)


@pytest.mark.parametrize("hidden, inputs, steps, batch", [(33, 17, 12, 9), (64, 8, 20, 16)])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_larger_shapes_match_torch_float32(kind, hidden, inputs, steps, batch):
    ours, theirs = make(kind, input_size=inputs, hidden_size=hidden, dtype=np.float32, bidirectional=True)
    r = rng(5)
    x = r.standard_normal((steps, batch, inputs)).astype(np.float32)
    run_pair(ours, theirs, x, None, r.integers(1, steps + 1, size=batch).tolist(), np.float32)


# ---------------------------------------------------------------- cells

CELLS = {"lstm": (nn.LSTMCell, torch.nn.LSTMCell, {}), "gru": (nn.GRUCell, torch.nn.GRUCell, {}),
         "rnn_tanh": (nn.RNNCell, torch.nn.RNNCell, {}),
         "rnn_relu": (nn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "relu"})}


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("batched, with_state, bias", [(True, True, True), (True, False, True),
                                                        (False, True, True), (False, False, False),
                                                        (True, True, False)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cells_match_torch(kind, batched, with_state, bias, dtype):
    ours_cls, theirs_cls, kw = CELLS[kind]
    theirs = theirs_cls(IN, H, bias=bias, **kw).to(torch.float64 if dtype == np.float64 else torch.float32)
    ours = ours_cls(IN, H, bias=bias, dtype=np.dtype(dtype).name, **kw)
    ours.load_state_dict(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert repr(ours) == repr(theirs)
    r = rng(9)
    lead = (B,) if batched else ()
    x = r.standard_normal(lead + (IN,)).astype(dtype)
    lstm = kind == "lstm"
    states = [r.standard_normal(lead + (H,)).astype(dtype) for _ in range(2 if lstm else 1)] if with_state else None
    xu, xt = unet.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    su = None if states is None else [unet.tensor(s, requires_grad=True) for s in states]
    st = None if states is None else [torch.tensor(s, requires_grad=True) for s in states]
    hx_u = None if su is None else (tuple(su) if lstm else su[0])
    hx_t = None if st is None else (tuple(st) if lstm else st[0])
    out_u, out_t = ours(xu, hx_u), theirs(xt, hx_t)
    out_u = list(out_u) if lstm else [out_u]
    out_t = list(out_t) if lstm else [out_t]
    rtol = RTOL[dtype]
    loss_u = loss_t = 0
    for u, t in zip(out_u, out_t):
        close(u.numpy(), t.detach().numpy(), rtol, "output")
        w = r.standard_normal(u.shape).astype(dtype)
        loss_u = loss_u + (u * unet.tensor(w)).sum()
        loss_t = loss_t + (t * torch.from_numpy(w)).sum()
    loss_u.backward()
    loss_t.backward()
    close(xu.grad.numpy(), xt.grad.numpy(), rtol, "grad x")
    for a, b in zip(su or [], st or []):
        close(a.grad.numpy(), b.grad.numpy(), rtol, "grad state")
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        close(p.grad.numpy(), q.grad.numpy(), rtol, f"grad {name}")


# ---------------------------------------------------------------- the functional entry point

def _functional_case(mode, r, with_proj=False, bias=True):
    steps, batch, inputs, hidden = 3, 2, 3, 2
    gates = GATES[mode]
    proj = 1 if with_proj else hidden

    def leaf(*shape):
        return unet.tensor(r.standard_normal(shape), dtype="float64", requires_grad=True)

    weights = [leaf(gates * hidden, inputs), leaf(gates * hidden, proj)]
    if bias:
        weights += [leaf(gates * hidden), leaf(gates * hidden)]
    if with_proj:
        weights.append(leaf(proj, hidden))
    x = leaf(steps, batch, inputs)
    h0 = leaf(batch, proj)
    c0 = leaf(batch, hidden) if mode == "lstm" else None
    return x, h0, c0, weights


@pytest.mark.parametrize("mode, with_proj, bias, reverse, lengths", [
    ("lstm", False, True, False, None), ("lstm", False, True, True, [3, 1]), ("lstm", True, True, True, [2, 3]),
    ("lstm", True, False, False, [1, 3]), ("gru", False, True, False, [2, 3]), ("gru", False, True, True, [3, 1]),
    ("gru", False, False, False, None), ("rnn_tanh", False, True, True, [1, 2]),
    ("rnn_tanh", False, True, False, None), ("rnn_relu", False, True, False, [3, 2]),
    ("rnn_relu", False, False, True, None)], ids=str)
def test_functional_gradcheck(mode, with_proj, bias, reverse, lengths):
    x, h0, c0, weights = _functional_case(mode, rng(21), with_proj, bias)
    inputs = [x, h0] + ([c0] if c0 is not None else []) + weights

    def fn(x, h0, *rest):
        c = rest[0] if mode == "lstm" else None
        w = rest[1:] if mode == "lstm" else rest
        y, h, c = F.rnn(mode, x, h0, c, tuple(w), lengths=lengths, reverse=reverse)
        return (y, h) if c is None else (y, h, c)

    assert gradcheck(fn, inputs)


def test_functional_returns_and_defaults():
    r = rng(2)
    x, h0, c0, weights = _functional_case("lstm", r)
    y, h, c = F.rnn("lstm", x, weights=tuple(weights))
    assert y.shape == (3, 2, 2) and h.shape == (2, 2) and c.shape == (2, 2)
    y2, h2, c2 = F.rnn("lstm", x, unet.zeros(2, 2, dtype="float64"), unet.zeros(2, 2, dtype="float64"),
                       tuple(weights))
    assert np.array_equal(y.numpy(), y2.numpy()) and np.array_equal(c.numpy(), c2.numpy())
    y, h, c = F.rnn("gru", x, weights=tuple(_functional_case("gru", r)[3]))
    assert c is None and np.array_equal(y.numpy()[-1], h.numpy())


def test_padded_steps_are_zero_and_do_not_matter():
    """Outputs past a sequence's length are 0, its final state is the one at its last step, and
    what the padding holds changes nothing (value or gradient)."""
    lstm = nn.LSTM(IN, H, bidirectional=True, dtype="float64")
    r = rng(4)
    x = r.standard_normal((T, B, IN))
    lengths = [2, 5, 1]
    x2 = x.copy()
    for b, n in enumerate(lengths):
        x2[n:, b] = 1e3 * r.standard_normal((T - n, IN))
    results = []
    for data in (x, x2):
        xu = unet.tensor(data, requires_grad=True)
        out, (h, c) = lstm(xu, lengths=lengths)
        (out.sum() + h.sum() + c.sum()).backward()
        results.append((out.numpy(), h.numpy(), c.numpy(), xu.grad.numpy()))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    out, h, _, gx = results[0]
    for b, n in enumerate(lengths):
        assert not out[n:, b].any() and not gx[n:, b].any()
        # each direction's own sequence, run alone, gives the same numbers
        alone, (h1, _) = lstm(unet.tensor(x[:n, b:b + 1]))
        np.testing.assert_allclose(out[:n, b:b + 1], alone.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(h[:, b], h1.numpy()[:, 0], rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- packed sequences

def test_pack_padded_sequence_like_torch():
    lstm, theirs = make("lstm", batch_first=True, bidirectional=True)
    r = rng(6)
    x = r.standard_normal((B, T, IN))
    lengths = [5, 3, 2]
    packed = rnn_utils.pack_padded_sequence(unet.tensor(x), lengths, batch_first=True)
    assert packed.batch_sizes.tolist() == torch.nn.utils.rnn.pack_padded_sequence(
        torch.tensor(x), lengths, batch_first=True).batch_sizes.tolist()
    out, (h, c) = lstm(packed)
    assert isinstance(out, rnn_utils.PackedSequence)
    padded, lens = rnn_utils.pad_packed_sequence(out, batch_first=True, padding_value=-1.0, total_length=7)
    t_out, (t_h, _) = theirs(torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), lengths, batch_first=True))
    t_padded, t_lens = torch.nn.utils.rnn.pad_packed_sequence(t_out, batch_first=True, padding_value=-1.0,
                                                              total_length=7)
    assert lens.tolist() == t_lens.tolist()
    close(padded.numpy(), t_padded.detach().numpy(), 1e-10, "padded")
    close(h.numpy(), t_h.detach().numpy(), 1e-10, "h_n")
    direct, _ = lstm(unet.tensor(x), lengths=lengths)
    np.testing.assert_array_equal(rnn_utils.pad_packed_sequence(out, batch_first=True)[0].numpy(), direct.numpy())


def test_pack_padded_sequence_checks_lengths():
    x = unet.randn(T, B, IN)
    with pytest.raises(ValueError, match="^lengths.*decreasing"):
        rnn_utils.pack_padded_sequence(x, [2, 5, 1])
    packed = rnn_utils.pack_padded_sequence(x, [2, 5, 1], enforce_sorted=False)
    assert packed.data.shape == (5, B, IN) and packed.lengths.tolist() == [2, 5, 1]
    with pytest.raises(ValueError, match="^lengths"):
        rnn_utils.pack_padded_sequence(x, [6, 5, 1])
    with pytest.raises(ValueError, match="^total_length"):
        rnn_utils.pad_packed_sequence(packed, total_length=4)


def test_pad_and_pack_sequence_like_torch():
    r = rng(8)
    seqs = [r.standard_normal((n, 2)) for n in (4, 2, 3)]
    ours = rnn_utils.pad_sequence([unet.tensor(s) for s in seqs], batch_first=True, padding_value=9.0)
    theirs = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True, padding_value=9.0)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    with pytest.raises(ValueError, match="^lengths"):
        rnn_utils.pack_sequence([unet.tensor(s) for s in seqs])
    packed = rnn_utils.pack_sequence([unet.tensor(s) for s in seqs], enforce_sorted=False)
    assert packed.lengths.tolist() == [4, 2, 3]


def test_nn_utils_reexports_clipping():
    assert nn.utils.clip_grad_norm_ is unet.optim.clip_grad_norm_
    assert nn.utils.clip_grad_value_ is unet.optim.clip_grad_value_


# ---------------------------------------------------------------- module behaviour

@pytest.mark.parametrize("kind", KINDS)
def test_parameters_match_torch_in_names_shapes_order_init_and_repr(kind):
    kw = dict(num_layers=2, bidirectional=True)
    unet.manual_seed(0)
    ours, theirs = make(kind, 40, 50, np.float32, **kw)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert repr(ours) == repr(theirs)
    ours.reset_parameters()
    bound = 1 / math.sqrt(50)
    values = np.concatenate([p.numpy().ravel() for p in ours.parameters()])
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.99 * bound
    assert abs(values.std() / (bound / math.sqrt(3)) - 1) < 0.03


@pytest.mark.parametrize("kw", [dict(bias=False), dict(bias=False, proj_size=2, batch_first=True),
                                dict(num_layers=3, dropout=0.5, bidirectional=True, proj_size=1)], ids=str)
def test_lstm_variants_names_and_repr(kw):
    ours, theirs = nn.LSTM(3, 4, **kw), torch.nn.LSTM(3, 4, **kw)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert repr(ours) == repr(theirs)


def test_eval_dropout_matches_torch_and_train_dropout_is_seeded():
    ours, theirs = make("lstm", num_layers=3, dropout=0.5)
    ours.eval(), theirs.eval()
    x = rng(3).standard_normal((T, B, IN))
    run_pair(ours, theirs, x, None, None, np.float64)
    ours.train()
    xu = unet.tensor(x)
    unet.manual_seed(1)
    a = ours(xu)[0].numpy()
    b = ours(xu)[0].numpy()
    unet.manual_seed(1)
    assert not np.allclose(a, b) and np.array_equal(ours(xu)[0].numpy(), a)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_deterministic_bitwise(kind):
    ours, _ = make(kind, input_size=24, hidden_size=48, dtype=np.float32, num_layers=2, bidirectional=True)
    r = rng(12)
    x = r.standard_normal((16, 12, 24)).astype(np.float32)
    lengths = r.integers(1, 17, size=12)

    def once():
        ours.zero_grad()
        xu = unet.tensor(x, requires_grad=True)
        out, hn = ours(xu, lengths=lengths)
        hn = hn[0] if isinstance(hn, tuple) else hn
        (out.sum() + (hn * hn).sum()).backward()
        return [out.numpy().copy(), hn.numpy().copy(), xu.grad.numpy().copy()] + \
            [p.grad.numpy().copy() for p in ours.parameters()]

    for a, b in zip(once(), once()):
        assert a.tobytes() == b.tobytes()


def test_backward_twice_with_retain_graph_and_no_grad_forward():
    lstm = nn.LSTM(IN, H, num_layers=2, bidirectional=True, proj_size=2, dtype="float64")
    x = unet.tensor(rng(1).standard_normal((T, B, IN)), requires_grad=True)
    out, (h, c) = lstm(x, lengths=[5, 2, 4])
    loss = out.sum() + c.sum()
    loss.backward(retain_graph=True)
    first = [x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in lstm.parameters()]
    x.grad = None
    lstm.zero_grad()
    loss.backward()  # the workspace forward left is still intact: the same gradients again
    for a, b in zip(first, [x.grad.numpy()] + [p.grad.numpy() for p in lstm.parameters()]):
        np.testing.assert_array_equal(a, b)
    with unet.no_grad():
        out2, _ = lstm(x, lengths=[5, 2, 4])
    assert not out2.requires_grad and np.array_equal(out2.numpy(), out.numpy())


def test_one_kernel_call_per_layer_and_direction(monkeypatch):
    calls = {"rnn_forward": 0, "rnn_backward": 0}
    for name in calls:
        real = getattr(_C, name)

        def counted(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(_C, name, counted)
    lstm = nn.LSTM(IN, H, num_layers=3, bidirectional=True)
    x = unet.randn(20, B, IN, requires_grad=True)
    out, (h, c) = lstm(x)
    assert calls == {"rnn_forward": 6, "rnn_backward": 0}
    (out.sum() + h.sum()).backward()
    assert calls == {"rnn_forward": 6, "rnn_backward": 6}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_half_precision_runs_through_float32(kind, dtype):
    ours, _ = make(kind, dtype=np.float32, bidirectional=True)
    half, _ = make(kind, dtype=np.float32, bidirectional=True)
    half.load_state_dict(ours.state_dict())
    half.to(dtype)
    ours.load_state_dict({k: v.to(dtype).float() for k, v in half.state_dict().items()})
    x = unet.randn(T, B, IN).to(dtype)
    xh = x.detach().requires_grad_()
    out_h, _ = half(xh, lengths=[5, 1, 3])
    out_f, _ = ours(x.float(), lengths=[5, 1, 3])
    assert out_h.dtype == unet.backend.resolve_dtype(dtype)
    np.testing.assert_array_equal(out_h.numpy(), out_f.numpy().astype(out_h.dtype))
    out_h.float().sum().backward()
    assert xh.grad.dtype == xh.dtype and half.weight_hh_l0.grad.dtype == xh.dtype


def test_gru_and_rnn_modules_call_convention():
    gru = nn.GRU(IN, H, num_layers=2, batch_first=True)
    out, h = gru(unet.randn(B, T, IN))
    assert out.shape == (B, T, H) and h.shape == (2, B, H)
    out, h = gru(unet.randn(T, IN), unet.zeros(2, H))
    assert out.shape == (T, H) and h.shape == (2, H)
    rnn = nn.RNN(IN, H, 1, "relu", bidirectional=True)
    out, h = rnn(unet.randn(T, B, IN), lengths=unet.tensor([1, 5, 2]))
    assert rnn.nonlinearity == "relu" and out.shape == (T, B, 2 * H) and h.shape == (2, B, H)


def _bad_calls():
    x = lambda *s, **kw: unet.randn(*s, **kw)  # noqa: E731
    lstm = lambda **kw: nn.LSTM(IN, H, **kw)  # noqa: E731
    return [
        (lambda: lstm()(x(T, B, IN + 1)), ValueError, "input"),
        (lambda: lstm()(x(T, B, 1, IN)), ValueError, "input"),
        (lambda: lstm()(x(0, B, IN)), ValueError, "input"),
        (lambda: lstm()(x(T, B, IN, dtype="float64")), TypeError, "input"),
        (lambda: lstm()(np.zeros((T, B, IN), np.float32)), TypeError, "input"),
        (lambda: lstm()(x(T, B, IN), (unet.zeros(1, B + 1, H), unet.zeros(1, B, H))), ValueError, "h0"),
        (lambda: lstm()(x(T, B, IN), (unet.zeros(1, B, H), unet.zeros(2, B, H))), ValueError, "c0"),
        (lambda: lstm()(x(T, IN), (unet.zeros(1, B, H), unet.zeros(1, B, H))), ValueError, "h0"),
        (lambda: lstm()(x(T, B, IN), (unet.zeros(1, B, H, dtype="float64"), unet.zeros(1, B, H))),
         TypeError, "h0"),
        (lambda: lstm()(x(T, B, IN), unet.zeros(1, B, H)), TypeError, "hx"),
        (lambda: lstm(proj_size=2)(x(T, B, IN), (unet.zeros(1, B, H), unet.zeros(1, B, H))), ValueError, "h0"),
        (lambda: nn.GRU(IN, H)(x(T, B, IN), (unet.zeros(1, B, H),)), TypeError, "hx"),
        (lambda: lstm()(x(T, B, IN), lengths=[1, 2]), ValueError, "lengths"),
        (lambda: lstm()(x(T, B, IN), lengths=[1, 0, 2]), ValueError, "lengths"),
        (lambda: lstm()(x(T, B, IN), lengths=[1, T + 1, 2]), ValueError, "lengths"),
        (lambda: lstm()(x(T, B, IN), lengths=[1.0, 2.0, 3.0]), ValueError, "lengths"),
        (lambda: lstm()(x(T, B, IN), lengths=[[1, 2, 3]]), ValueError, "lengths"),
        (lambda: lstm()(x(T, B, IN), lengths=[True, True, True]), ValueError, "lengths"),
        (lambda: lstm()(x(T, B, IN), lengths="abc"), ValueError, "lengths"),
        (lambda: lstm()(x(T, B, IN), lengths=unet.tensor([1.5, 2, 3])), ValueError, "lengths"),
        (lambda: nn.LSTM(0, 3), ValueError, "input_size"),
        (lambda: nn.LSTM(3, 0), ValueError, "hidden_size"),
        (lambda: nn.LSTM(3, 3, num_layers=0), ValueError, "num_layers"),
        (lambda: nn.LSTM(3, 3, dropout=1.5), ValueError, "dropout"),
        (lambda: nn.LSTM(3, 3, bidirectional="yes"), TypeError, "bidirectional"),
        (lambda: nn.LSTM(3, 3, batch_first=1), TypeError, "batch_first"),
        (lambda: nn.LSTM(3, 3, proj_size=3), ValueError, "proj_size"),
        (lambda: nn.LSTM(3, 3, proj_size=-1), ValueError, "proj_size"),
        (lambda: nn.GRU(3, 3, proj_size=1), TypeError, None),
        (lambda: nn.RNN(3, 3, nonlinearity="sigmoid"), ValueError, "nonlinearity"),
        (lambda: nn.RNNCell(3, 3, nonlinearity="gelu"), ValueError, "nonlinearity"),
        (lambda: nn.LSTMCell(IN, H)(x(B, IN + 1)), ValueError, "input"),
        (lambda: nn.LSTMCell(IN, H)(x(B, IN), unet.zeros(B, H)), TypeError, "hx"),
        (lambda: nn.GRUCell(IN, H)(x(B, IN), unet.zeros(B + 1, H)), ValueError, "hx"),
        (lambda: nn.LSTMCell(IN, H)(x(IN), (unet.zeros(B, H), unet.zeros(B, H))), ValueError, "h"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_input_is_rejected_with_the_argument_named(index):
    bad, err, name = _bad_calls()[index]
    with pytest.raises(err, match=None if name is None else rf"^{name}\b"):
        bad()


def _bad_functional_calls():
    r = rng(0)
    x, h0, c0, w = _functional_case("lstm", r)
    g = _functional_case("gru", r)[3]
    return [
        (lambda: F.rnn("LSTM", x, h0, c0, tuple(w)), ValueError, "mode"),
        (lambda: F.rnn("lstm", x.numpy(), h0, c0, tuple(w)), TypeError, "x"),
        (lambda: F.rnn("lstm", x[0], h0, c0, tuple(w)), ValueError, "x"),
        (lambda: F.rnn("lstm", x, h0, c0, w[0]), TypeError, "weights"),
        (lambda: F.rnn("lstm", x, h0, c0, tuple(w[:1])), ValueError, "weights"),
        (lambda: F.rnn("lstm", x, h0, c0, (w[1], w[1]) + tuple(w[2:])), ValueError, "w_ih"),
        (lambda: F.rnn("lstm", x, h0, c0, (w[0], w[0]) + tuple(w[2:])), ValueError, "w_hh"),
        (lambda: F.rnn("lstm", x, h0, c0, (w[0], w[1], w[2], None, None)), ValueError, "b_hh"),
        (lambda: F.rnn("lstm", x, h0, c0, (w[0], w[1], w[2], w[2][:-1])), ValueError, "b_hh"),
        (lambda: F.rnn("lstm", x, h0, c0, (w[0], w[1], unet.zeros(2, 3, dtype="float64"))), ValueError, "w_hr"),
        (lambda: F.rnn("gru", x, h0, c0, tuple(g)), ValueError, "c0"),
        (lambda: F.rnn("lstm", x, h0[:1], c0, tuple(w)), ValueError, "h0"),
        (lambda: F.rnn("lstm", x, h0, c0.float(), tuple(w)), TypeError, "c0"),
        (lambda: F.rnn("lstm", x, h0, c0, (w[0].float(),) + tuple(w[1:])), TypeError, "w_ih"),
        (lambda: F.rnn("lstm", x, h0, c0, tuple(w), lengths=[4, 1]), ValueError, "lengths"),
        (lambda: F.rnn("lstm", x, h0, c0, tuple(w), reverse=1), TypeError, "reverse"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_functional_calls())))
def test_functional_bad_input_is_rejected(index):
    bad, err, name = _bad_functional_calls()[index]
    with pytest.raises(err, match=rf"^{name}\b"):
        bad()


# ---------------------------------------------------------------- the model on top

def test_unet_founding_example_runs_and_trains():
    x = np.random.randn(10, 10)
    model = unet.UNet()
    y = model.forward(x)
    model.backward(y, np.random.randn(10, 10))
    assert y.shape == (10, 10)
    r = rng(0)
    X = r.standard_normal((16, 6, 3)).astype(np.float32)
    Y = np.cumsum(X, axis=1) * 0.3
    model = unet.UNet(hidden_size=16, seed=0)
    history = model.fit(X, Y, epochs=15, batch_size=8, lr=1e-2, verbose=False)
    assert history["loss"][-1] < 0.5 * history["loss"][0]


@pytest.mark.parametrize("kind", KINDS)
def test_hardening_sweep_uneven_lengths_no_state_non_contiguous(kind):
    """The hardening bar (PyTorch's own: float64, atol 5e-5): lengths [7,5,5,2,1,1], absent
    initial states and a time-major input that is a transposed (non-contiguous) view."""
    lengths = [7, 5, 5, 2, 1, 1]
    ours, theirs = make(kind, num_layers=2, bidirectional=True)
    base = rng(3).standard_normal((len(lengths), 7, IN))  # batch-major storage
    xu_base = unet.tensor(base, requires_grad=True)
    xt_base = torch.tensor(base, requires_grad=True)
    xu, xt = xu_base.transpose(0, 1), xt_base.transpose(0, 1)  # (T, B, IN) views
    assert not xu.numpy().flags.c_contiguous
    out_u, _ = ours(xu, lengths=lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(theirs(packed)[0], total_length=7)
    np.testing.assert_allclose(out_u.numpy(), out_t.detach().numpy(), atol=5e-5, rtol=0)
    w = rng(4).standard_normal(out_u.shape)
    (out_u * unet.tensor(w)).sum().backward()
    (out_t * torch.from_numpy(w)).sum().backward()
    np.testing.assert_allclose(xu_base.grad.numpy(), xt_base.grad.numpy(), atol=5e-5, rtol=0)
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tparams[name].grad.numpy(), atol=5e-5, rtol=0, err_msg=name)
