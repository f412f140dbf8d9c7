"""unet._C.conv_forward / conv_backward on CUDA arrays (csrc/cuda/conv.cu) against the CPU
kernels, and the layers on the GPU against the same layers on the CPU. Skipped without
CuPy, a CUDA device and a CUDA build of unet._C."""
import hashlib

import numpy as np
import pytest

import unet
from unet import _C, nn

from kernel_checks import cupy  # noqa: F401  (a fixture)

# (N, C_in, H, W, C_out, KH, KW, stride, padding (t, b, l, r), dilation, groups)
CASES = [
    (2, 3, 7, 9, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (3, 4, 9, 8, 6, 3, 2, (2, 1), (0, 1, 2, 0), (1, 2), 2),
    (2, 8, 9, 9, 8, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 8),      # depthwise
    (2, 4, 6, 7, 8, 2, 3, (1, 1), (0, 1, 1, 1), (2, 1), 4),      # depthwise, multiplier 2
    (4, 300, 1, 60, 100, 1, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1),  # text CNN
    (2, 64, 30, 30, 96, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),   # many tiles of every kind
    (1, 16, 5, 5, 32, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
]


def _run(xp, x, w, b, gy, case, act):
    stride, padding, dilation, groups = case[7:]
    x, w, b, gy = (xp.asarray(a) for a in (x, w, b, gy))
    out = xp.full(gy.shape, xp.nan, x.dtype)
    pre = xp.full(gy.shape, xp.nan, x.dtype) if act != "none" else None
    stream = xp.cuda.get_current_stream().ptr if xp is not np else 0
    _C.conv_forward(x, w, b, out, pre, act, stride, padding, dilation, groups, stream)
    grads = [xp.full(a.shape, xp.nan, x.dtype) for a in (x, w, b)]
    _C.conv_backward(gy, x, w, pre, act, *grads, stride, padding, dilation, groups, stream)
    return [out] + grads


def _inputs(case, dtype, seed=0):
    n, cin, h, w_, cout, kh, kw, stride, padding, dilation, groups = case
    ho = (h + padding[0] + padding[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w_ + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    rng = np.random.default_rng(seed)
    shapes = [(n, cin, h, w_), (cout, cin // groups, kh, kw), (cout,), (n, cout, ho, wo)]
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("act", ["none", "relu", "gelu", "tanh", "sigmoid"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_matches_cpu(cupy, case, act, dtype):
    arrays = _inputs(case, dtype)
    want = _run(np, *arrays, case, act)
    got = _run(cupy, *arrays, case, act)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for name, g, w in zip(["out", "grad_x", "grad_weight", "grad_bias"], got, want):
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(cupy.asnumpy(g), w, rtol=tol, atol=tol * scale, err_msg=f"{name} {case}")


@pytest.mark.gpu
def test_cuda_is_deterministic_and_uses_the_stream(cupy):
    case = CASES[5]
    arrays = _inputs(case, np.float32, seed=3)
    digests = set()
    for _ in range(2):
        s = cupy.cuda.Stream(non_blocking=True)
        with s:
            results = _run(cupy, *arrays, case, "relu")
        s.synchronize()
        digests.add(hashlib.sha256(b"".join(cupy.asnumpy(a).tobytes() for a in results)).digest())
    assert len(digests) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("cls,kw,shape", [
    (nn.Conv1d, dict(in_channels=6, out_channels=4, kernel_size=4, padding="same", groups=2), (3, 6, 11)),
    (nn.Conv2d, dict(in_channels=4, out_channels=8, kernel_size=3, stride=2, padding=1, groups=4), (2, 4, 9, 7)),
    (nn.ConvTranspose2d, dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1,
                              output_padding=1), (2, 4, 5, 4)),
])
def test_layers_on_the_gpu_match_the_cpu(cupy, cls, kw, shape):
    unet.manual_seed(0)
    cpu = cls(**kw, dtype="float64")
    gpu = cls(**kw, dtype="float64")
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    x = np.random.default_rng(1).standard_normal(shape)
    xc, xg = unet.tensor(x, requires_grad=True), unet.tensor(x, device="cuda", requires_grad=True)
    yc, yg = cpu(xc), gpu(xg)
    g = np.random.default_rng(2).standard_normal(yc.shape)
    yc.backward(unet.tensor(g))
    yg.backward(unet.tensor(g, device="cuda"))
    np.testing.assert_allclose(yg.cpu().numpy(), yc.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xg.grad.cpu().numpy(), xc.grad.numpy(), rtol=1e-10, atol=1e-10)
    for (name, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters()):
        np.testing.assert_allclose(pg.grad.cpu().numpy(), pc.grad.numpy(), rtol=1e-10, atol=1e-10, err_msg=name)
