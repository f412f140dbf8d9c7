"""Convolution layers and functions against torch.nn on copied weights (outputs and the
gradients of input, weight and bias), gradcheck in float64, thread-count independence,
and the Python-side argument checks."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import unet
from unet import functional as F
from unet import nn

from gradcheck import gradcheck

# torch warns that padding="same" with an even kernel copies the input; that is expected here
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

TOL = {"float32": dict(rtol=2e-4, atol=2e-4), "float64": dict(rtol=1e-10, atol=1e-10)}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}

# (in, out, kernel_size, stride, padding, dilation, groups, input spatial size, batch)
CONV1D = [
    (4, 6, 3, 1, 0, 1, 1, (11,), 3),
    (4, 6, 4, 1, "same", 1, 1, (10,), 2),       # same with an even kernel: one more on the right
    (4, 6, 4, 1, "same", 3, 2, (13,), 2),
    (3, 5, 5, 2, 2, 1, 1, (17,), 1),            # batch 1, odd length
    (6, 6, 3, 1, 1, 1, 6, (9,), 2),             # depthwise
    (4, 8, 3, 3, 1, 2, 4, (20,), 2),            # depthwise, channel multiplier 2, stride, dilation
    (300, 100, 5, 1, "valid", 1, 1, (50,), 4),  # text-CNN shape
    (8, 4, 1, 1, 0, 1, 2, (7,), 2),             # 1x1, grouped
]
CONV2D = [
    (3, 4, 3, 1, 1, 1, 1, (7, 6), 2),
    (4, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2, (9, 8), 3),
    (4, 4, 2, 1, "same", 1, 1, (5, 6), 2),        # even kernel, same
    (4, 6, (2, 4), 1, "same", (2, 1), 2, (7, 9), 1),
    (8, 8, 3, 2, 1, 1, 8, (9, 9), 2),             # depthwise, stride 2
    (4, 8, (3, 1), 1, (1, 0), 1, 4, (5, 7), 2),   # depthwise, multiplier 2
    (64, 8, 3, 1, 1, 1, 1, (32, 32), 2),          # more positions than one tile, tiles cross images
    (5, 7, 1, 1, 0, 1, 1, (3, 4), 2),             # 1x1
    (6, 4, 5, 3, 0, 1, 1, (11, 13), 1),           # kernel and stride larger than needed
    (400, 8, 1, 1, 0, 1, 1, (5, 6), 3),           # 1x1 with a long patch: x packed as it is stored
    (3, 5, 3, 1, 1, 1, 1, (150, 200), 2),         # short patch, many tiles
]
# (in, out, kernel_size, stride, padding, output_padding, groups, dilation, spatial size, batch)
TRANSPOSE1D = [
    (4, 6, 3, 1, 0, 0, 1, 1, (7,), 2),
    (4, 6, 3, 2, 1, 1, 2, 1, (5,), 3),
    (3, 5, 4, 3, 2, 2, 1, 2, (6,), 1),
    (6, 6, 3, 2, 1, 0, 6, 1, (8,), 2),
]
TRANSPOSE2D = [
    (4, 6, 3, 1, 1, 0, 1, 1, (5, 4), 2),
    (4, 6, (3, 2), (2, 3), (1, 0), (1, 2), 2, (1, 2), (5, 4), 2),
    (8, 8, 4, 2, 1, 0, 8, 1, (6, 6), 1),
    (16, 32, 2, 2, 0, 0, 1, 1, (8, 8), 2),
]


def _copy_into(layer, torch_layer, dtype):
    layer.load_state_dict({k: v.detach().numpy().astype(dtype) for k, v in torch_layer.state_dict().items()})


def _compare(layer, torch_layer, shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_layer(xt)
    xu = unet.tensor(x, requires_grad=True)
    yu = layer(xu)
    assert yu.shape == tuple(yt.shape) and yu.dtype == np.dtype(dtype)
    np.testing.assert_allclose(yu.numpy(), yt.detach().numpy(), **TOL[dtype])
    g = rng.standard_normal(yu.shape).astype(dtype)
    yt.backward(torch.tensor(g))
    yu.backward(unet.tensor(g))
    np.testing.assert_allclose(xu.grad.numpy(), xt.grad.numpy(), **TOL[dtype])
    np.testing.assert_allclose(layer.weight.grad.numpy(), torch_layer.weight.grad.numpy(), **TOL[dtype])
    if torch_layer.bias is not None:
        np.testing.assert_allclose(layer.bias.grad.numpy(), torch_layer.bias.grad.numpy(), **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CONV1D + CONV2D, ids=str)
def test_conv_matches_torch(case, bias, dtype):
    cin, cout, k, s, p, d, g, size, n = case
    torch_cls, cls = (torch.nn.Conv1d, nn.Conv1d) if len(size) == 1 else (torch.nn.Conv2d, nn.Conv2d)
    torch.manual_seed(0)
    t = torch_cls(cin, cout, k, s, p, d, g, bias, dtype=TORCH_DTYPE[dtype])
    u = cls(cin, cout, k, s, p, d, g, bias, dtype=dtype)
    assert {k: v.shape for k, v in u.state_dict().items()} == {k: tuple(v.shape) for k, v in t.state_dict().items()}
    _copy_into(u, t, dtype)
    _compare(u, t, (n, cin) + size, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", TRANSPOSE1D + TRANSPOSE2D, ids=str)
def test_conv_transpose_matches_torch(case, dtype):
    cin, cout, k, s, p, op, g, d, size, n = case
    torch_cls, cls = ((torch.nn.ConvTranspose1d, nn.ConvTranspose1d) if len(size) == 1
                      else (torch.nn.ConvTranspose2d, nn.ConvTranspose2d))
    torch.manual_seed(0)
    t = torch_cls(cin, cout, k, s, p, op, g, True, d, dtype=TORCH_DTYPE[dtype])
    u = cls(cin, cout, k, s, p, op, g, True, d, dtype=dtype)
    _copy_into(u, t, dtype)
    _compare(u, t, (n, cin) + size, dtype)


@pytest.mark.parametrize("size", [(9, 11), (10, 12), (10, 11)])
def test_conv_transpose_output_size_like_torch(size):
    torch.manual_seed(0)
    t = torch.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, dtype=torch.float64)
    u = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, dtype="float64")
    _copy_into(u, t, "float64")
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 6))
    want = t(torch.tensor(x), output_size=size).detach().numpy()
    np.testing.assert_allclose(u(unet.tensor(x), output_size=size).numpy(), want, rtol=1e-12, atol=1e-12)
    _raises(ValueError, "output_size", u, unet.tensor(x), output_size=(11, 11))
    _raises(ValueError, "output_size", u, unet.tensor(x), output_size=(10,))


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid"])
@pytest.mark.parametrize("groups", [1, 4])
def test_fused_activation_matches_torch(activation, groups):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((8, 4 // groups, 3, 3)), rng.standard_normal(8)
    ts = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    yt = getattr(torch.nn.functional, activation)(torch.nn.functional.conv2d(*ts, padding=1, groups=groups))
    us = [unet.tensor(a, requires_grad=True) for a in (x, w, b)]
    yu = F.conv2d(*us, padding=1, groups=groups, activation=activation)
    np.testing.assert_allclose(yu.numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(yu.shape)
    yt.backward(torch.tensor(g))
    yu.backward(unet.tensor(g))
    for a, t in zip(us, ts):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_runs_in_float32_and_rounds_back(dtype):
    rng = np.random.default_rng(3)
    x, w, b = (unet.tensor(rng.standard_normal(s), dtype=dtype, requires_grad=True)
               for s in [(2, 4, 9), (6, 4, 3), (6,)])
    y = F.conv1d(x, w, b, padding=1)
    assert y.dtype == x.dtype
    want = torch.nn.functional.conv1d(*(torch.tensor(t.numpy().astype(np.float32)) for t in (x, w, b)), padding=1)
    # float32 sums, rounded once at the end: within half an ulp of the 16-bit type
    np.testing.assert_allclose(y.numpy().astype(np.float32), want.numpy(), rtol=2 ** -7, atol=1e-3)
    y.sum().backward()
    assert x.grad.dtype == x.dtype and w.grad.dtype == w.dtype and b.grad.dtype == b.dtype


def test_unbatched_input_and_default_init_like_torch():
    u = nn.Conv1d(3, 5, 3, padding=1)
    t = torch.nn.Conv1d(3, 5, 3, padding=1, dtype=torch.float32)
    # torch's bounds: kaiming_uniform(a=sqrt(5)) gives 1/sqrt(fan_in) for weight and bias alike
    bound = 1 / np.sqrt(3 * 3)
    assert np.abs(u.weight.numpy()).max() <= bound and np.abs(u.bias.numpy()).max() <= bound
    assert np.abs(u.weight.numpy()).max() > 0.5 * bound
    _copy_into(u, t, "float32")
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(u(unet.tensor(x)).numpy(), t(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn,shapes,kw", [
    (F.conv1d, [(2, 4, 7), (6, 2, 3), (6,)], dict(padding="same", dilation=2, groups=2, activation="tanh")),
    (F.conv2d, [(2, 3, 5, 4), (4, 3, 2, 3), (4,)], dict(stride=(2, 1), padding=(1, 2), activation="gelu")),
    (F.conv2d, [(1, 4, 5, 5), (8, 1, 3, 3), (8,)], dict(stride=2, padding=1, groups=4, activation="sigmoid")),
    (F.conv_transpose1d, [(2, 4, 5), (4, 3, 3), (6,)], dict(stride=2, padding=1, output_padding=1, groups=2)),
    (F.conv_transpose2d, [(1, 3, 3, 4), (3, 2, 3, 2), (2,)], dict(stride=(2, 3), dilation=(2, 1))),
])
def test_gradcheck(fn, shapes, kw):
    rng = np.random.default_rng(2)
    args = [unet.tensor(rng.standard_normal(s), dtype="float64", requires_grad=True) for s in shapes]
    assert gradcheck(lambda x, w, b: fn(x, w, b, **kw), args)


_DIGEST_SCRIPT = """
import hashlib, numpy as np, unet
from unet import functional as F
rng = np.random.default_rng(0)
outs = []
for xs, ws, kw in [((3, 64, 24, 24), (32, 64, 3, 3), dict(padding=1, activation="relu")),
                   ((2, 32, 20, 20), (32, 1, 3, 3), dict(groups=32, stride=2)),
                   ((8, 300, 60), (100, 300, 5), dict(activation="tanh")),
                   ((3, 384, 12, 12), (40, 384, 1, 1), dict()),
                   ((2, 3, 150, 200), (8, 3, 3, 3), dict(padding=1, activation="gelu")),
                   ((2, 8, 10, 70), (6, 8, 3, 3), dict(padding=1))]:
    x = unet.tensor(rng.standard_normal(xs).astype(np.float32), requires_grad=True)
    w = unet.tensor(rng.standard_normal(ws).astype(np.float32), requires_grad=True)
    b = unet.tensor(rng.standard_normal(ws[0]).astype(np.float32), requires_grad=True)
    conv = F.conv1d if len(xs) == 3 else F.conv2d
    y = conv(x, w, b, **kw)
    y.backward(unet.tensor(rng.standard_normal(y.shape).astype(np.float32)))
    transpose = F.conv_transpose1d if len(xs) == 3 else F.conv_transpose2d
    t = transpose(y, w, groups=kw.get("groups", 1), stride=kw.get("stride", 1))  # the adjoint of conv
    outs += [y.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy(), t.numpy()]
print(hashlib.sha256(b"".join(a.tobytes() for a in outs)).hexdigest())
"""


def test_result_does_not_depend_on_thread_count():
    digests = set()
    for threads in ["1", "2", "3"]:
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        run = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT], env=env, capture_output=True,
                             text=True, check=True)
        digests.add(run.stdout.strip())
    assert len(digests) == 1


def _raises(error, name, fn, *args, **kwargs):
    with pytest.raises(error) as excinfo:
        fn(*args, **kwargs)
    assert name in str(excinfo.value), str(excinfo.value)


def test_layer_arguments_are_checked():
    _raises(ValueError, "padding_mode", nn.Conv2d, 3, 4, 3, padding_mode="reflect")
    _raises(ValueError, "padding_mode", nn.ConvTranspose1d, 3, 4, 3, padding_mode="circular")
    _raises(ValueError, "padding", nn.Conv1d, 3, 4, 3, stride=2, padding="same")
    _raises(ValueError, "padding", nn.Conv1d, 3, 4, 3, padding="full")
    _raises(ValueError, "padding", nn.ConvTranspose2d, 3, 4, 3, padding="same")
    _raises(ValueError, "groups", nn.Conv2d, 3, 4, 3, groups=2)
    _raises(ValueError, "in_channels", nn.Conv2d, 0, 4, 3)
    _raises(ValueError, "kernel_size", nn.Conv2d, 3, 4, (3, 0))
    _raises(ValueError, "kernel_size", nn.Conv2d, 3, 4, (3, 3, 3))
    _raises(ValueError, "stride", nn.Conv1d, 3, 4, 3, stride=0)
    _raises(ValueError, "dilation", nn.Conv1d, 3, 4, 3, dilation=-1)
    _raises(ValueError, "activation", nn.Conv1d, 3, 4, 3, activation="swish")


def test_functional_arguments_are_checked():
    x, w = unet.randn(2, 4, 9), unet.randn(6, 4, 3)
    _raises(ValueError, "input", F.conv1d, unet.randn(2, 3, 9), w)
    _raises(ValueError, "input", F.conv1d, unet.randn(9), w)
    _raises(ValueError, "input", F.conv1d, x, unet.randn(6, 4, 12))  # kernel longer than input
    _raises(ValueError, "weight", F.conv2d, unet.randn(2, 4, 5, 5), w)
    _raises(ValueError, "bias", F.conv1d, x, w, unet.randn(5))
    _raises(ValueError, "groups", F.conv1d, x, unet.randn(6, 2, 3), groups=3)
    _raises(ValueError, "groups", F.conv1d, x, w, groups=0)
    _raises(TypeError, "weight", F.conv1d, x, unet.randn(6, 4, 3, dtype="float64"))
    _raises(TypeError, "input", F.conv1d, np.ones((2, 4, 9)), w)
    _raises(ValueError, "output_padding", F.conv_transpose1d, x, unet.randn(4, 2, 3), stride=2, output_padding=2)
    _raises(ValueError, "activation", F.conv1d, x, w, activation="elu")
    _raises(ValueError, "padding", F.conv2d, unet.randn(1, 4, 5, 5), unet.randn(2, 4, 3, 3), padding=(1, 1, 1))
