"""The composed-from-ops LSTM (tests/reference_rnn.py) as a second, independent reference:
it matches torch.nn.LSTM, and the fused nn.LSTM matches it on the same weights."""
import itertools

import numpy as np
import pytest
import torch

import unet
from reference_rnn import ComposedLSTM
from unet import nn

T, B, IN, H = 4, 3, 5, 6


def rng(seed=0):
    return np.random.default_rng(seed)


def run(module, lib, x, state):
    """Outputs, final states and the gradients of x, the states and every parameter under a fixed
    random projection of (output, h_n, c_n), as float64 numpy arrays."""
    tensor = (lambda a: unet.tensor(a, requires_grad=True)) if lib == "unet" else \
        (lambda a: torch.tensor(a, requires_grad=True))
    numpy = (lambda t: t.numpy()) if lib == "unet" else (lambda t: t.detach().numpy())
    xl = tensor(x)
    sl = None if state is None else tuple(tensor(s) for s in state)
    out, (h, c) = module(xl) if sl is None else module(xl, sl)
    r = rng(7)
    loss = 0
    results = {}
    for name, t in (("output", out), ("h_n", h), ("c_n", c)):
        results[name] = numpy(t)
        w = r.standard_normal(tuple(t.shape)).astype(results[name].dtype)
        loss = loss + (t * (unet.tensor(w) if lib == "unet" else torch.from_numpy(w))).sum()
    loss.backward()
    results["grad x"] = numpy(xl.grad)
    for name, s in zip(("h0", "c0"), sl or ()):
        results["grad " + name] = numpy(s.grad)
    for name, p in module.named_parameters():
        results["grad " + name] = numpy(p.grad)
    return results


def compare(a, b, **tol):
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], err_msg=name, **tol)


TOL64 = dict(rtol=1e-9, atol=1e-11)
GRID = list(itertools.product([1, 2], [False, True], [False, True], [True, False], [False, True]))


def triplet(dtype=np.float64, **kw):
    """torch.nn.LSTM, ComposedLSTM and the fused nn.LSTM, all carrying torch's weights."""
    theirs = torch.nn.LSTM(IN, H, **kw).to(torch.float64 if dtype == np.float64 else torch.float32)
    composed = ComposedLSTM(IN, H, dtype=np.dtype(dtype).name, **kw)
    fused = nn.LSTM(IN, H, dtype=np.dtype(dtype).name, **kw)
    composed.load_state_dict(theirs.state_dict())
    fused.load_state_dict(theirs.state_dict())
    return theirs, composed, fused


@pytest.mark.parametrize("num_layers, bidirectional, batch_first, bias, with_state", GRID, ids=str)
def test_composed_matches_torch_and_fused_matches_composed(num_layers, bidirectional, batch_first, bias,
                                                           with_state):
    theirs, composed, fused = triplet(num_layers=num_layers, bidirectional=bidirectional,
                                      batch_first=batch_first, bias=bias)
    r = rng(num_layers * 16 + bidirectional * 8 + batch_first * 4 + bias * 2 + with_state)
    x = r.standard_normal((B, T, IN) if batch_first else (T, B, IN))
    d = 2 if bidirectional else 1
    state = tuple(r.standard_normal((num_layers * d, B, H)) for _ in range(2)) if with_state else None
    reference = run(composed, "unet", x, state)
    compare(reference, run(theirs, "torch", x, state), **TOL64)
    compare(run(fused, "unet", x, state), reference, **TOL64)


@pytest.mark.parametrize("with_state", [False, True])
def test_unbatched(with_state):
    theirs, composed, fused = triplet(num_layers=2, bidirectional=True, batch_first=True)
    r = rng(1)
    state = tuple(r.standard_normal((4, H)) for _ in range(2)) if with_state else None
    x = r.standard_normal((T, IN))
    reference = run(composed, "unet", x, state)
    compare(reference, run(theirs, "torch", x, state), **TOL64)
    compare(run(fused, "unet", x, state), reference, **TOL64)


def test_float32_fused_and_composed_agree():
    theirs, composed, fused = triplet(np.float32, num_layers=2, bidirectional=True)
    x = rng(2).standard_normal((T, B, IN)).astype(np.float32)
    compare(run(fused, "unet", x, None), run(composed, "unet", x, None), rtol=1e-5, atol=1e-6)


def test_same_dropout_masks_give_the_same_training_outputs():
    _, composed, fused = triplet(num_layers=3, dropout=0.5)
    x = unet.tensor(rng(3).standard_normal((T, B, IN)))
    unet.manual_seed(5)
    a = composed(x)[0].numpy()
    unet.manual_seed(5)
    b = fused(x)[0].numpy()
    np.testing.assert_allclose(b, a, **TOL64)
