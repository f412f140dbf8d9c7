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


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(LOW))
def test_conv_under_autocast_on_the_gpu_matches_the_cpu(name):
    """Same rounded values into the CUDA kernel: the outputs differ by the summation order only
    (then one 16-bit rounding, so at most an ulp of the autocast dtype)."""
    cp = pytest.importorskip("cupy")
    if cp.cuda.runtime.getDeviceCount() == 0 or not unet._C.info()["cuda_compiled"]:
        pytest.skip("no CUDA device or a CPU-only build")
    unet.manual_seed(0)
    cpu = nn.Conv2d(4, 6, 3, padding=1)
    gpu = nn.Conv2d(4, 6, 3, padding=1)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    x = np.random.default_rng(1).standard_normal((2, 4, 7, 5)).astype(np.float32)
    xc, xg = unet.tensor(x, requires_grad=True), unet.tensor(x, device="cuda", requires_grad=True)
    with amp.autocast(name):
        yc, yg = cpu(xc), gpu(xg)
    assert yg.dtype == yc.dtype == LOW[name]
    ulp = 2.0 ** -7 if name == "bf16" else 2.0 ** -10
    np.testing.assert_allclose(yg.cpu().numpy().astype(np.float32), yc.numpy().astype(np.float32),
                               rtol=ulp, atol=ulp)
    g = np.random.default_rng(2).standard_normal(yc.shape).astype(LOW[name])
    yc.backward(unet.tensor(g))
    yg.backward(unet.tensor(g, device="cuda"))
    np.testing.assert_allclose(xg.grad.cpu().numpy(), xc.grad.numpy(), rtol=1e-4, atol=1e-5)
    for (label, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert pg.grad.dtype == np.float32
        np.testing.assert_allclose(pg.grad.cpu().numpy(), pc.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=label)
