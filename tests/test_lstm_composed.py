"""nn.LSTM (composed from autograd ops) against torch.nn.LSTM on copied weights."""
import itertools
import math

import numpy as np
import pytest
import torch

import unet
from gradcheck import gradcheck
from unet import nn

T, B, IN, H = 4, 3, 5, 6


def rng(seed=0):
    return np.random.default_rng(seed)


def twins(dtype=np.float64, **kw):
    """A torch LSTM and a unet LSTM carrying the torch one's weights (torch's state_dict loads as is)."""
    theirs = torch.nn.LSTM(IN, H, **kw).to(torch.float64 if dtype == np.float64 else torch.float32)
    ours = nn.LSTM(IN, H, dtype=dtype, **kw)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def run_both(ours, theirs, x, state, dtype, tol):
    """Forward, backward of a random projection of (out, h_n, c_n); compare values and every gradient."""
    def leaf_pair(a):
        return unet.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)

    xu, xt = leaf_pair(x)
    if state is None:
        (out_u, (h_u, c_u)), (out_t, (h_t, c_t)) = ours(xu), theirs(xt)
    else:
        (h0u, h0t), (c0u, c0t) = leaf_pair(state[0]), leaf_pair(state[1])
        (out_u, (h_u, c_u)), (out_t, (h_t, c_t)) = ours(xu, (h0u, c0u)), theirs(xt, (h0t, c0t))
    r = rng(7)
    loss_u = loss_t = 0
    for u, t in ((out_u, out_t), (h_u, h_t), (c_u, c_t)):
        assert u.shape == tuple(t.shape)
        np.testing.assert_allclose(u.numpy(), t.detach().numpy(), **tol)
        w = r.standard_normal(u.shape).astype(dtype)
        loss_u = loss_u + (u * unet.tensor(w)).sum()
        loss_t = loss_t + (t * torch.from_numpy(w)).sum()
    loss_u.backward()
    loss_t.backward()
    np.testing.assert_allclose(xu.grad.numpy(), xt.grad.numpy(), **tol)
    if state is not None:
        np.testing.assert_allclose(h0u.grad.numpy(), h0t.grad.numpy(), **tol)
        np.testing.assert_allclose(c0u.grad.numpy(), c0t.grad.numpy(), **tol)
    tparams = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(tparams)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tparams[name].grad.numpy(), **tol, err_msg=name)


TOL64 = dict(rtol=1e-7, atol=1e-6)
GRID = list(itertools.product([1, 2], [False, True], [False, True], [True, False], [False, True]))


@pytest.mark.parametrize("num_layers, bidirectional, batch_first, bias, with_state", GRID,
                         ids=lambda v: str(v))
def test_lstm_matches_torch_float64(num_layers, bidirectional, batch_first, bias, with_state):
    ours, theirs = twins(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias)
    r = rng(num_layers * 16 + bidirectional * 8 + batch_first * 4 + bias * 2 + with_state)
    x = r.standard_normal((B, T, IN) if batch_first else (T, B, IN))
    d = 2 if bidirectional else 1
    state = tuple(r.standard_normal((num_layers * d, B, H)) for _ in range(2)) if with_state else None
    run_both(ours, theirs, x, state, np.float64, TOL64)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_unbatched_matches_torch(bidirectional, with_state):
    ours, theirs = twins(num_layers=2, bidirectional=bidirectional, batch_first=True)
    r = rng(1)
    d = 2 if bidirectional else 1
    state = tuple(r.standard_normal((2 * d, H)) for _ in range(2)) if with_state else None
    run_both(ours, theirs, r.standard_normal((T, IN)), state, np.float64, TOL64)


def test_lstm_float32_matches_torch():
    ours, theirs = twins(np.float32, num_layers=2, bidirectional=True)
    run_both(ours, theirs, rng(2).standard_normal((T, B, IN)).astype(np.float32), None, np.float32,
             dict(rtol=1e-4, atol=1e-5))


def test_lstm_eval_dropout_matches_torch_and_train_dropout_is_random():
    ours, theirs = twins(num_layers=2, dropout=0.5)
    ours.eval(), theirs.eval()
    run_both(ours, theirs, rng(3).standard_normal((T, B, IN)), None, np.float64, TOL64)
    ours.train()
    x = unet.tensor(rng(3).standard_normal((T, B, IN)))
    assert not np.allclose(ours(x)[0].numpy(), ours(x)[0].numpy())


def test_lstm_gradcheck():
    unet.manual_seed(0)
    lstm = nn.LSTM(2, 2, num_layers=2, bidirectional=True, dtype="float64")
    r = rng(4)
    x = unet.tensor(r.standard_normal((3, 1, 2)), requires_grad=True)
    h0 = unet.tensor(r.standard_normal((4, 1, 2)), requires_grad=True)
    c0 = unet.tensor(r.standard_normal((4, 1, 2)), requires_grad=True)
    params = list(lstm.parameters())

    def fn(x, h0, c0, *weights):
        out, (h, c) = lstm(x, (h0, c0))
        return out, h, c

    assert gradcheck(fn, [x, h0, c0] + params)


def test_lstm_parameters_match_torch_in_names_shapes_and_init():
    kw = dict(num_layers=2, bidirectional=True, bias=True)
    theirs = torch.nn.LSTM(40, 50, **kw)
    unet.manual_seed(0)
    ours = nn.LSTM(40, 50, **kw)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert [n for n, _ in nn.LSTM(3, 4, bias=False).named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    bound = 1 / math.sqrt(50)
    values = np.concatenate([p.numpy().ravel() for p in ours.parameters()])
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.99 * bound
    assert abs(values.std() / (bound / math.sqrt(3)) - 1) < 0.02
    assert repr(ours) == repr(theirs)
    assert repr(nn.LSTM(3, 4, bias=False, batch_first=True, dropout=0.5, num_layers=2)) == \
        repr(torch.nn.LSTM(3, 4, bias=False, batch_first=True, dropout=0.5, num_layers=2))


@pytest.mark.parametrize("bad, err, name", [
    (lambda m: m(unet.randn(T, B, IN + 1)), ValueError, "x"),
    (lambda m: m(unet.randn(T, B, 1, IN)), ValueError, "x"),
    (lambda m: m(unet.randn(0, B, IN)), ValueError, "x"),
    (lambda m: m(unet.randn(T, B, IN, dtype="float64")), TypeError, "x"),
    (lambda m: m(np.zeros((T, B, IN), np.float32)), TypeError, "x"),
    (lambda m: m(unet.randn(T, B, IN), (unet.zeros(1, B + 1, H), unet.zeros(1, B, H))), ValueError, "h0"),
    (lambda m: m(unet.randn(T, B, IN), (unet.zeros(1, B, H), unet.zeros(2, B, H))), ValueError, "c0"),
    (lambda m: m(unet.randn(T, IN), (unet.zeros(1, B, H), unet.zeros(1, B, H))), ValueError, "h0"),
    (lambda m: m(unet.randn(T, B, IN), (unet.zeros(1, B, H, dtype="float64"), unet.zeros(1, B, H))),
     TypeError, "h0"),
    (lambda m: m(unet.randn(T, B, IN), unet.zeros(1, B, H)), TypeError, "state"),
    (lambda m: nn.LSTM(0, 3), ValueError, "input_size"),
    (lambda m: nn.LSTM(3, 0), ValueError, "hidden_size"),
    (lambda m: nn.LSTM(3, 3, num_layers=0), ValueError, "num_layers"),
    (lambda m: nn.LSTM(3, 3, dropout=1.5), ValueError, "dropout"),
    (lambda m: nn.LSTM(3, 3, bidirectional="yes"), TypeError, "bidirectional"),
    (lambda m: nn.LSTM(3, 3, batch_first=1), TypeError, "batch_first"),
])
def test_bad_input_is_rejected_with_the_argument_named(bad, err, name):
    with pytest.raises(err, match=rf"^{name}\b"):
        bad(nn.LSTM(IN, H))
