"""nn.init: torch's formulas (bounds and standard deviations checked statistically), seeding."""
import math

import numpy as np
import pytest
import torch

import unet
from unet import nn
from unet.nn import init


def param(*shape, dtype="float32"):
    return nn.Parameter(np.zeros(shape, dtype=dtype))


def std_ok(values, expected, rel=0.03):
    """Sample std within ``rel`` of ``expected`` (tensors here hold >= 10k values: ~1% noise)."""
    assert abs(values.std() / expected - 1) < rel, (values.std(), expected)
    assert abs(values.mean()) < 3 * expected / math.sqrt(values.size) + 1e-12


def bound_ok(values, bound):
    """Inside [-bound, bound] and filling it (a narrower interval would fail the second check)."""
    assert np.abs(values).max() <= bound * (1 + 1e-6)
    assert np.abs(values).max() > 0.97 * bound
    std_ok(values, bound / math.sqrt(3))


@pytest.mark.parametrize("name, param_", [
    ("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None), ("selu", None),
    ("conv1d", None), ("conv2d", None), ("conv3d", None), ("conv_transpose2d", None),
    ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0), ("leaky_relu", 3),
])
def test_calculate_gain_matches_torch(name, param_):
    assert init.calculate_gain(name, param_) == pytest.approx(torch.nn.init.calculate_gain(name, param_), rel=1e-12)


@pytest.mark.parametrize("args", [("swish",), ("leaky_relu", "big"), ("leaky_relu", True)])
def test_calculate_gain_rejects(args):
    with pytest.raises(ValueError, match=r"^(nonlinearity|param)\b"):
        init.calculate_gain(*args)


def test_uniform_normal_constant():
    unet.manual_seed(0)
    t = init.uniform_(param(200, 100), -2.0, 3.0).numpy()
    assert t.min() >= -2.0 and t.max() < 3.0 and abs(t.mean() - 0.5) < 0.03
    assert abs(t.std() / (5 / math.sqrt(12)) - 1) < 0.02
    t = init.normal_(param(200, 100, dtype="float64"), 1.5, 0.5).numpy()
    assert abs(t.mean() - 1.5) < 0.01 and abs(t.std() - 0.5) < 0.01
    assert np.all(init.constant_(param(3, 2), 0.25).numpy() == 0.25)
    p = param(4)
    assert init.ones_(p) is p and np.all(p.numpy() == 1)
    assert init.zeros_(p) is p and np.all(p.numpy() == 0)


def test_init_bumps_the_version_and_keeps_requires_grad():
    p = param(3, 3)
    before = p._version
    init.normal_(p)
    assert p._version > before and p.requires_grad and p.is_leaf


@pytest.mark.parametrize("shape", [(300, 200), (64, 32, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_xavier(shape, gain):
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    bound_ok(init.xavier_uniform_(param(*shape), gain).numpy(), gain * math.sqrt(6 / (fan_in + fan_out)))
    std_ok(init.xavier_normal_(param(*shape), gain).numpy(), gain * math.sqrt(2 / (fan_in + fan_out)))


@pytest.mark.parametrize("shape", [(300, 200), (64, 32, 3, 3)])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity, a", [("leaky_relu", 0.0), ("leaky_relu", math.sqrt(5)), ("relu", 0.0),
                                             ("tanh", 0.0), ("linear", 0.0)])
def test_kaiming(shape, mode, nonlinearity, a):
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    std = torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    bound_ok(init.kaiming_uniform_(param(*shape), a=a, mode=mode, nonlinearity=nonlinearity).numpy(),
             math.sqrt(3) * std)
    std_ok(init.kaiming_normal_(param(*shape), a=a, mode=mode, nonlinearity=nonlinearity).numpy(), std)


@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (5, 5), (6, 2, 3)])
@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_orthogonal(shape, gain):
    q = init.orthogonal_(param(*shape, dtype="float64"), gain).numpy().reshape(shape[0], -1) / gain
    rows, cols = q.shape
    small = q.T @ q if rows >= cols else q @ q.T  # orthonormal columns (tall) or rows (wide)
    np.testing.assert_allclose(small, np.eye(min(rows, cols)), atol=1e-12)


def test_orthogonal_is_uniformly_signed():
    """Without the sign fix QR's diagonal convention would bias the (0, 0) entry's sign."""
    unet.manual_seed(3)
    signs = [np.sign(init.orthogonal_(param(3, 3, dtype="float64")).numpy()[0, 0]) for _ in range(400)]
    assert abs(np.mean(signs)) < 0.15


def test_seeding_makes_init_reproducible():
    def build():
        return nn.Sequential(nn.Linear(5, 4), nn.Embedding(6, 3), nn.LSTM(3, 2), nn.LayerNorm(2))

    unet.manual_seed(123)
    a = build().state_dict()
    unet.manual_seed(123)
    b = build().state_dict()
    c = build().state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    assert any(not np.array_equal(b[k].numpy(), c[k].numpy()) for k in a)
    unet.manual_seed(5)
    x = init.orthogonal_(param(4, 4)).numpy()
    unet.manual_seed(5)
    np.testing.assert_array_equal(x, init.orthogonal_(param(4, 4)).numpy())


def test_init_keeps_dtype_and_handles_empty():
    assert init.xavier_uniform_(param(4, 3, dtype="float64")).dtype == unet.float64
    assert init.normal_(param(4, 3, dtype="bfloat16")).dtype == unet.bfloat16
    for fn in (init.uniform_, init.normal_, init.xavier_uniform_, init.kaiming_normal_, init.orthogonal_):
        assert fn(param(0, 3)).shape == (0, 3)  # zero elements: a no-op, as in torch


@pytest.mark.parametrize("bad, err, name", [
    (lambda: init.xavier_uniform_(param(5)), ValueError, "tensor"),
    (lambda: init.kaiming_normal_(param(5)), ValueError, "tensor"),
    (lambda: init.orthogonal_(param(5)), ValueError, "tensor"),
    (lambda: init.kaiming_uniform_(param(3, 3), mode="fan_avg"), ValueError, "mode"),
    (lambda: init.kaiming_uniform_(param(3, 3), nonlinearity="swish"), ValueError, "nonlinearity"),
    (lambda: init.normal_(np.zeros(3)), TypeError, "tensor"),
    (lambda: init.xavier_normal_(np.zeros((3, 3))), TypeError, "tensor"),
])
def test_bad_input_is_rejected_with_the_argument_named(bad, err, name):
    with pytest.raises(err, match=rf"^{name}\b"):
        bad()
