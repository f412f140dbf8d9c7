"""Convolutions under unet.amp.autocast: 16-bit inputs, float32 accumulation, output in the autocast
dtype; bitwise the float32 kernel run on rounded values; float32 gradients for float32 tensors."""
import ml_dtypes
import numpy as np
import pytest

import unet
import unet.functional as F
from unet import amp, nn, optim

LOW = {"bf16": np.dtype(ml_dtypes.bfloat16), "fp16": np.dtype(np.float16)}

# (functional op, input shape, weight shape, keyword arguments)
CASES = {
    "conv1d": (F.conv1d, (2, 3, 9), (4, 3, 3), dict(stride=2, padding=1)),
    "conv1d_relu": (F.conv1d, (2, 3, 9), (4, 3, 3), dict(padding="same", activation="relu")),
    "conv2d": (F.conv2d, (2, 4, 7, 6), (6, 2, 3, 2), dict(padding=1, dilation=(1, 2), groups=2)),
    "conv_transpose1d": (F.conv_transpose1d, (2, 3, 5), (3, 4, 3), dict(stride=2, output_padding=1)),
    "conv_transpose2d": (F.conv_transpose2d, (2, 4, 4, 5), (4, 3, 3, 3), dict(stride=(2, 1), padding=1)),
}


def leaf(array):
    return unet.tensor(array, dtype="float32", requires_grad=True)


@pytest.mark.parametrize("name", sorted(LOW))
@pytest.mark.parametrize("case", sorted(CASES))
def test_conv_under_autocast_is_the_float32_kernel_on_rounded_values(name, case):
    low = LOW[name]
    op, x_shape, w_shape, kwargs = CASES[case]
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape) * 0.5
    bias_size = w_shape[1] * kwargs.get("groups", 1) if "transpose" in case else w_shape[0]
    b = rng.standard_normal(bias_size)
    xa, wa, ba = leaf(x), leaf(w), leaf(b)
    xr, wr, br = (leaf(np.asarray(a, np.float32).astype(low).astype(np.float32)) for a in (x, w, b))
    with amp.autocast(name):
        out = op(xa, wa, ba, **kwargs)
    ref = op(xr, wr, br, **kwargs)
    assert out.dtype == low
    np.testing.assert_array_equal(out.numpy(), ref.numpy().astype(low))
    g = rng.standard_normal(out.shape).astype(low)
    out.backward(unet.tensor(g))
    ref.backward(unet.tensor(g.astype(np.float32)))
    for got, want, what in ((xa, xr, "input"), (wa, wr, "weight"), (ba, br, "bias")):
        assert got.grad.dtype == np.float32, what
        np.testing.assert_array_equal(got.grad.numpy(), want.grad.numpy(), err_msg=what)


def test_conv_outside_autocast_keeps_the_dtype_check():
    x = unet.randn(1, 2, 5)
    w = unet.randn(3, 2, 3).to(LOW["bf16"])
    with pytest.raises(TypeError, match="weight: dtype"):
        F.conv1d(x, w)
    with amp.autocast("bf16"):  # inside, mixed 16/32-bit tensors meet in the rounded product
        assert F.conv1d(x, w).dtype == LOW["bf16"]


def test_float64_convolution_is_not_cast():
    x, w = unet.randn(1, 2, 5).double(), unet.randn(3, 2, 3).double()
    with amp.autocast("fp16"):
        out = F.conv1d(x, w)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out.numpy(), F.conv1d(x, w).numpy())


@pytest.mark.parametrize("name", sorted(LOW))
def test_tiny_cnn_trains_under_autocast(name):
    unet.manual_seed(0)
    rng = np.random.default_rng(0)
    # two classes: a bright top half or a bright bottom half
    labels = rng.integers(0, 2, 64)
    images = rng.standard_normal((64, 1, 8, 8)).astype(np.float32) * 0.3
    for i, label in enumerate(labels):
        images[i, 0, 4 * label:4 * label + 4] += 1.0
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    head = nn.Linear(64, 2)
    model = nn.ModuleList([conv, head])
    opt = optim.Adam(model.parameters(), lr=0.02)
    x, y = unet.tensor(images), unet.tensor(labels)
    losses = []
    for _ in range(40):
        with amp.autocast(name):
            loss = F.cross_entropy(head(conv(x).flatten(1)), y)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad.dtype == np.float32 for p in model.parameters())
        opt.step()
        losses.append(float(loss.item()))
    assert losses[-1] < 0.25 * losses[0], losses
