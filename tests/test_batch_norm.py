"""BatchNorm1d/2d and F.batch_norm against torch: outputs, gradients, running statistics over
several steps (momentum, cumulative), train/eval, state_dict names, finite differences, bad input."""
import numpy as np
import pytest
import torch

import unet
import unet.functional as F
from gradcheck import gradcheck
from unet import nn

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def data(shape, dtype, seed=0, scale=1.0, shift=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + shift).astype(dtype)


def twins(cls, dtype, **kwargs):
    ours = getattr(nn, cls)(4, dtype=np.dtype(dtype).name, **kwargs)
    theirs = getattr(torch.nn, cls)(4, dtype=TORCH_DTYPE[dtype], **kwargs)
    if ours.weight is not None:  # not the default 1/0, so the affine gradients are exercised
        ours.weight.data[...] = data(4, dtype, seed=7) + 1.0
        ours.bias.data[...] = data(4, dtype, seed=8)
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    return ours, theirs


def close(ours, theirs, dtype):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    np.testing.assert_allclose(ours.numpy() if isinstance(ours, unet.Tensor) else ours, theirs, **TOL[dtype])


def step(ours, theirs, x, dtype, seed):
    xu, xt = unet.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yu, yt = ours(xu), theirs(xt)
    close(yu, yt, dtype)
    cot = data(yu.shape, dtype, seed=seed + 100)
    yu.backward(cot)
    yt.backward(torch.from_numpy(cot))
    close(xu.grad, xt.grad, dtype)
    for name, p in theirs.named_parameters():
        close(getattr(ours, name).grad, p.grad, dtype)


SHAPES = {"BatchNorm1d": [(6, 4), (5, 4, 7)], "BatchNorm2d": [(3, 4, 5, 6)]}
CASES = [(cls, shape) for cls, shapes in SHAPES.items() for shape in shapes]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("cls,shape", CASES)
def test_training_steps_then_eval_match_torch(cls, shape, momentum, dtype):
    ours, theirs = twins(cls, dtype, momentum=momentum)
    for i in range(3):  # the statistics move: each batch has its own scale and shift
        step(ours, theirs, data(shape, dtype, seed=i, scale=1 + i, shift=i - 1), dtype, i)
        for name, buffer in theirs.named_buffers():
            np.testing.assert_allclose(ours.state_dict()[name].numpy(), buffer.numpy(), **TOL[dtype])
    assert int(ours.num_batches_tracked.item()) == 3
    ours.eval(), theirs.eval()
    step(ours, theirs, data(shape, dtype, seed=9), dtype, 9)
    assert int(ours.num_batches_tracked.item()) == 3  # eval reads the statistics, never writes them


@pytest.mark.parametrize("affine,track", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("cls,shape", CASES)
def test_affine_and_tracking_options_match_torch(cls, shape, affine, track):
    ours, theirs = twins(cls, np.float64, affine=affine, track_running_stats=track)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(n for n, _ in theirs.named_parameters())
    step(ours, theirs, data(shape, np.float64, seed=1, scale=3), np.float64, 1)
    ours.eval(), theirs.eval()  # untracked: eval still normalises with the batch's statistics
    step(ours, theirs, data(shape, np.float64, seed=2), np.float64, 2)


def test_state_dict_names_and_load_from_torch():
    theirs = torch.nn.BatchNorm2d(4)
    theirs.train()
    theirs(torch.randn(3, 4, 5, 5) * 2 + 1)
    ours = nn.BatchNorm2d(4)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert ours.num_batches_tracked.dtype == unet.int64 and ours.num_batches_tracked.shape == ()
    ours.load_state_dict(theirs.state_dict())
    assert int(ours.num_batches_tracked.item()) == 1
    ours.eval(), theirs.eval()
    x = data((2, 4, 3, 3), np.float32)
    close(ours(unet.tensor(x)), theirs(torch.tensor(x)), np.float32)
    ours.reset_running_stats()
    assert float(ours.running_var.numpy().min()) == 1.0 and int(ours.num_batches_tracked.item()) == 0


def test_to_double_keeps_the_counter_an_integer():
    layer = nn.BatchNorm1d(3).to("float64")
    assert layer.running_mean.dtype == unet.float64 and layer.num_batches_tracked.dtype == unet.int64
    assert "BatchNorm1d(3, eps=1e-05, momentum=0.1" in repr(layer)


def test_functional_matches_torch_and_updates_in_place():
    x = data((5, 3, 4), np.float64, scale=2)
    rm, rv = unet.zeros(3, dtype="float64"), unet.ones(3, dtype="float64")
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    w, b = unet.tensor(data(3, np.float64, 1)), unet.tensor(data(3, np.float64, 2))
    yu = F.batch_norm(unet.tensor(x), rm, rv, w, b, training=True, momentum=0.3)
    yt = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, torch.tensor(w.numpy()), torch.tensor(b.numpy()),
                                        training=True, momentum=0.3)
    close(yu, yt, np.float64)
    close(rm, trm, np.float64)
    close(rv, trv, np.float64)
    close(F.batch_norm(unet.tensor(x), rm, rv), torch.nn.functional.batch_norm(torch.tensor(x), trm, trv), np.float64)


def test_half_precision_runs_and_stays_half():
    layer = nn.BatchNorm1d(4, dtype="bfloat16")
    y = layer(unet.tensor(data((8, 4, 5), np.float32), dtype="bfloat16"))
    assert y.dtype == unet.bfloat16
    mean = y.to("float32").numpy().mean(axis=(0, 2))
    np.testing.assert_allclose(mean, 0, atol=2e-2)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(training):
    rng = np.random.default_rng(0)
    x = unet.tensor(rng.standard_normal((3, 2, 4)), requires_grad=True)
    w = unet.tensor(rng.standard_normal(2) + 1, requires_grad=True)
    b = unet.tensor(rng.standard_normal(2), requires_grad=True)
    mean, var = unet.tensor(rng.standard_normal(2)), unet.tensor(rng.random(2) + 0.5)
    assert gradcheck(lambda x, w, b: F.batch_norm(x, mean, var, w, b, training=training, momentum=0.0), [x, w, b])


@pytest.mark.parametrize("call,error,match", [
    (lambda: nn.BatchNorm1d(0), ValueError, "num_features: expected a positive int"),
    (lambda: nn.BatchNorm1d(3, eps=0), ValueError, "eps: expected a positive finite number"),
    (lambda: nn.BatchNorm1d(3, momentum=1.5), ValueError, r"momentum: expected a number in \[0, 1\] or None"),
    (lambda: nn.BatchNorm1d(3, affine="no"), TypeError, "affine: expected a bool"),
    (lambda: nn.BatchNorm1d(3)(unet.zeros(2, 3, 4, 5)), ValueError, "input: BatchNorm1d expects a 2-D or 3-D"),
    (lambda: nn.BatchNorm2d(3)(unet.zeros(2, 3, 4)), ValueError, "input: BatchNorm2d expects a 4-D"),
    (lambda: nn.BatchNorm1d(3)(unet.zeros(2, 4)), ValueError, "input: expected 3 channels on axis 1"),
    (lambda: nn.BatchNorm1d(3)(unet.zeros(1, 3)), ValueError, "more than 1 value per channel when training"),
    (lambda: nn.BatchNorm1d(3)(np.zeros((2, 3))), TypeError, "input: expected a Tensor"),
    (lambda: F.batch_norm(unet.zeros(2, 3), unet.zeros(2), unet.ones(3)), ValueError,
     r"running_mean: expected a Tensor of shape \(3,\)"),
    (lambda: F.batch_norm(unet.zeros(2, 3), None, None), ValueError, "running_mean: needed when training=False"),
    (lambda: F.batch_norm(unet.zeros(2, 3), unet.zeros(3), None, training=True), ValueError,
     "running_mean, running_var: give both"),
    (lambda: F.batch_norm(unet.zeros(2, 3), unet.zeros(3), unet.ones(3), training=True, momentum=-1),
     ValueError, "momentum"),
    (lambda: F.batch_norm(unet.zeros(2, 3).long(), None, None, training=True), TypeError, "floating-point"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
