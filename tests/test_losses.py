"""Losses against torch: values and input gradients, every reduction; bad targets rejected."""
import numpy as np
import pytest
import torch

import unet
import unet.functional as F
from gradcheck import gradcheck
from unet import nn

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def rng(seed=0):
    return np.random.default_rng(seed)


def close(ours, theirs, dtype):
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **TOL[dtype])


def compare(ours, theirs, x, targets, dtype):
    """Loss value and d loss / d input against torch (through a random cotangent for 'none')."""
    xu, xt = unet.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    lu = ours(xu, *[unet.tensor(t) for t in targets])
    lt = theirs(xt, *[torch.from_numpy(np.asarray(t)) for t in targets])
    assert lu.shape == tuple(lt.shape) and lu.dtype == x.dtype
    close(lu, lt, dtype)
    cot = rng(9).standard_normal(lt.shape).astype(dtype)
    lu.backward(cot)
    lt.backward(torch.from_numpy(cot))
    close(xu.grad, xt.grad, dtype)
    return lu


# ---------------------------------------------------------------- MSE

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(dtype, reduction):
    x, y = rng().standard_normal((2, 3, 4)).astype(dtype), rng(1).standard_normal((2, 3, 4)).astype(dtype)
    compare(nn.MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction), x, [y], dtype)


def test_mse_target_gradient_and_numpy_target():
    x, y = unet.tensor([1.0, 2.0], requires_grad=True), unet.tensor([0.5, 4.0], requires_grad=True)
    F.mse_loss(x, y).backward()
    np.testing.assert_allclose(y.grad.numpy(), [-0.5, 2.0])
    loss = F.mse_loss(x, np.array([0.5, 4.0]))  # a float64 array does not promote a float32 loss
    assert loss.dtype == unet.float32 and abs(loss.item() - 2.125) < 1e-6


# ---------------------------------------------------------------- cross entropy / nll

def class_problem(shape, classes, dtype, seed=0):
    """Logits (N, C, d...) or (C,) and in-range targets, with a few set to ignore_index."""
    r = rng(seed)
    x = 2 * r.standard_normal(shape).astype(dtype)
    target_shape = (shape[0],) + shape[2:] if len(shape) >= 2 else ()
    t = r.integers(0, classes, target_shape)
    return x, t


SHAPES = [(6, 5), (3, 5, 2, 4), (5,)]
CE_OPTIONS = [
    dict(),
    dict(weight=True),
    dict(ignore_index=1),
    dict(ignore_index=-100, label_smoothing=0.2),
    dict(weight=True, label_smoothing=0.1),
    dict(weight=True, ignore_index=2, label_smoothing=0.3),
]


def make_pair(cls_ours, cls_theirs, options, reduction, dtype, classes=5):
    options = dict(options)
    if options.pop("weight", False):
        w = rng(5).uniform(0.2, 2.0, classes).astype(dtype)
        options["weight"] = (unet.tensor(w), torch.from_numpy(w))
    ours = cls_ours(reduction=reduction, **{k: v[0] if isinstance(v, tuple) else v for k, v in options.items()})
    theirs = cls_theirs(reduction=reduction, **{k: v[1] if isinstance(v, tuple) else v for k, v in options.items()})
    return ours, theirs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("options", CE_OPTIONS, ids=str)
def test_cross_entropy_matches_torch(dtype, reduction, shape, options):
    x, t = class_problem(shape, 5, dtype)
    ignore = options.get("ignore_index")
    if ignore is not None and t.ndim:
        t.reshape(-1)[::3] = ignore  # every third target ignored
    ours, theirs = make_pair(nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, options, reduction, dtype)
    compare(ours, theirs, x, [t], dtype)


def test_cross_entropy_unbatched_ignored_target():
    x, t = unet.tensor([1.0, 2.0, 3.0], requires_grad=True), unet.tensor(-100)
    loss = F.cross_entropy(x, t, reduction="sum")
    assert loss.item() == 0
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("options", [dict(), dict(weight=True), dict(weight=True, ignore_index=3)], ids=str)
def test_nll_matches_torch(dtype, reduction, shape, options):
    x, t = class_problem(shape, 5, dtype, seed=2)
    if "ignore_index" in options and t.ndim:
        t.reshape(-1)[1::2] = options["ignore_index"]
    logp = x - np.log(np.exp(x).sum(axis=1 if x.ndim > 1 else 0, keepdims=True))
    ours, theirs = make_pair(nn.NLLLoss, torch.nn.NLLLoss, options, reduction, dtype)
    compare(ours, theirs, logp, [t], dtype)


def test_loss_modules_keep_class_weights_as_buffers():
    loss = nn.CrossEntropyLoss(weight=[1.0, 2.0, 0.5])  # a list is accepted and stored as a Tensor
    assert list(loss.state_dict()) == ["weight"] and list(loss.parameters()) == []
    theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]))
    assert list(theirs.state_dict()) == ["weight"]
    loss.double()
    assert loss.weight.dtype == unet.float64
    x, t = rng().standard_normal((4, 3)), np.array([0, 1, 2, 1])
    np.testing.assert_allclose(loss(unet.tensor(x), t).item(),
                               theirs.double()(torch.from_numpy(x), torch.from_numpy(t)).item(), rtol=1e-12)


# ---------------------------------------------------------------- BCE with logits

BCE_OPTIONS = [dict(), dict(weight=True), dict(pos_weight=True), dict(weight=True, pos_weight=True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", BCE_OPTIONS, ids=str)
def test_bce_with_logits_matches_torch(dtype, reduction, options):
    r = rng(3)
    x = 3 * r.standard_normal((4, 3)).astype(dtype)
    x[0] = [100.0, -100.0, 0.0]  # extremes stay finite; 0 is where abs/relu subgradients went wrong
    y = r.uniform(0, 1, (4, 3)).astype(dtype)
    y[1] = [0.0, 1.0, 1.0]
    kw_ours, kw_theirs = {}, {}
    for name, shape in (("weight", (4, 3)), ("pos_weight", (3,))):
        if options.get(name):
            value = r.uniform(0.5, 3.0, shape).astype(dtype)
            kw_ours[name], kw_theirs[name] = unet.tensor(value), torch.from_numpy(value)
    lu = compare(nn.BCEWithLogitsLoss(reduction=reduction, **kw_ours),
                 torch.nn.BCEWithLogitsLoss(reduction=reduction, **kw_theirs), x, [y], dtype)
    assert np.isfinite(lu.numpy()).all()


def test_bce_with_logits_gradient_at_zero_is_sigmoid_minus_target():
    x = unet.tensor([0.0, 0.0], dtype="float64", requires_grad=True)
    F.binary_cross_entropy_with_logits(x, [0.0, 1.0], reduction="sum").backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.5, -0.5])


def test_bce_with_logits_target_gradient():
    x = unet.tensor([0.3, -1.2], dtype="float64")
    y = unet.tensor([0.2, 0.9], dtype="float64", requires_grad=True)
    xt, yt = torch.tensor([0.3, -1.2], dtype=torch.float64), torch.tensor([0.2, 0.9], dtype=torch.float64,
                                                                          requires_grad=True)
    pw = [2.0, 0.5]
    F.binary_cross_entropy_with_logits(x, y, pos_weight=pw).backward()
    torch.nn.functional.binary_cross_entropy_with_logits(xt, yt, pos_weight=torch.tensor(pw, dtype=torch.float64)
                                                         ).backward()
    np.testing.assert_allclose(y.grad.numpy(), yt.grad.numpy(), rtol=1e-12)


# ---------------------------------------------------------------- gradcheck (float64)

def leaf(array):
    return unet.tensor(array, dtype="float64", requires_grad=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_gradcheck(reduction):
    r = rng(11)
    x = leaf(r.standard_normal((4, 3)))
    y = leaf(r.standard_normal((4, 3)))
    t = unet.tensor([0, 2, 1, 2])
    w = unet.tensor([0.5, 1.0, 2.0], dtype="float64")
    assert gradcheck(lambda x, y: F.mse_loss(x, y, reduction), [x, y])
    assert gradcheck(lambda x: F.nll_loss(x, t, w, reduction=reduction), [x])
    assert gradcheck(lambda x: F.cross_entropy(x, unet.tensor([0, -100, 1, 2]), w, reduction=reduction,
                                               label_smoothing=0.2), [x])
    probs = leaf(r.uniform(0, 1, (4, 3)))
    weight, pos_weight = unet.tensor(r.uniform(0.5, 2, (4, 3))), unet.tensor([1.0, 2.0, 0.5], dtype="float64")
    assert gradcheck(lambda x, y: F.binary_cross_entropy_with_logits(
        x, y, weight=weight, reduction=reduction, pos_weight=pos_weight), [x, probs])


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("loss", [F.cross_entropy, F.nll_loss])
@pytest.mark.parametrize("bad", [5, -1, -7])
def test_out_of_range_target_names_target_and_value(loss, bad):
    with pytest.raises(IndexError, match=rf"^target: .*{bad}"):
        loss(unet.randn(3, 5), unet.tensor([0, bad, 4]))
    with pytest.raises(IndexError, match=rf"^target: .*{bad}"):
        loss(unet.randn(2, 5, 3), unet.tensor([[0, 1, 2], [3, 4, bad]]))
    loss(unet.randn(3, 5), unet.tensor([0, bad, 4]), ignore_index=bad)  # ignored: no error


@pytest.mark.parametrize("bad, err, name", [
    (lambda: F.cross_entropy(unet.randn(3, 5), unet.tensor([0, 1])), ValueError, "target"),
    (lambda: F.cross_entropy(unet.randn(3, 5, 2), unet.tensor([0, 1, 2])), ValueError, "target"),
    (lambda: F.cross_entropy(unet.randn(5), unet.tensor([1])), ValueError, "target"),
    (lambda: F.cross_entropy(unet.randn(3, 5), unet.tensor([0.0, 1.0, 2.0])), TypeError, "target"),
    (lambda: F.nll_loss(unet.randn(3, 5), unet.tensor([[0, 1, 2]])), ValueError, "target"),
    (lambda: F.cross_entropy(unet.randn(3, 5), unet.tensor([0, 1, 2]), weight=unet.ones(4)), ValueError, "weight"),
    (lambda: F.cross_entropy(unet.randn(3, 5), unet.tensor([0, 1, 2]), label_smoothing=1.5), ValueError,
     "label_smoothing"),
    (lambda: F.cross_entropy(unet.randn(3, 5), unet.tensor([0, 1, 2]), ignore_index=1.0), TypeError,
     "ignore_index"),
    (lambda: F.cross_entropy(unet.tensor(1.0), unet.tensor(0)), ValueError, "input"),
    (lambda: F.cross_entropy(np.zeros((3, 5)), unet.tensor([0, 1, 2])), TypeError, "input"),
    (lambda: F.mse_loss(unet.randn(3, 4), unet.randn(4, 3)), ValueError, "target"),
    (lambda: F.mse_loss(unet.randn(3, 4), unet.randn(3, 4), reduction="avg"), ValueError, "reduction"),
    (lambda: F.binary_cross_entropy_with_logits(unet.randn(3, 4), unet.rand(3)), ValueError, "target"),
    (lambda: F.binary_cross_entropy_with_logits(unet.randn(3, 4), unet.rand(3, 4), pos_weight=unet.ones(3)),
     ValueError, "pos_weight"),
    (lambda: F.binary_cross_entropy_with_logits(unet.randn(3, 4), unet.rand(3, 4), weight=unet.ones(2, 4)),
     ValueError, "weight"),
    (lambda: nn.MSELoss(reduction="mean_sum"), ValueError, "reduction"),
    (lambda: nn.CrossEntropyLoss(label_smoothing=-0.1), ValueError, "label_smoothing"),
    (lambda: nn.CrossEntropyLoss(weight=[[1.0, 2.0]]), ValueError, "weight"),
    (lambda: nn.NLLLoss(ignore_index="pad"), TypeError, "ignore_index"),
    (lambda: nn.BCEWithLogitsLoss(pos_weight="heavy"), TypeError, "pos_weight"),
])
def test_bad_input_is_rejected_with_the_argument_named(bad, err, name):
    with pytest.raises(err, match=rf"^{name}\b"):
        bad()
