"""unet._C.rnn_ln_forward / rnn_ln_backward on CUDA arrays (csrc/cuda/rnn_ln.cu) against the
same calls on numpy arrays (the CPU kernel, itself tested against the composed float64
reference in test_rnn_ln_zoneout.py). Outputs, gradients, workspace and scratch are poisoned
with NaN first, so an element the kernel fails to write shows up; calls run on a
non-default stream. Also nn.LSTM(layer_norm=True, zoneout=p) on the GPU against the CPU."""
import numpy as np
import pytest
from kernel_checks import cupy  # noqa: F401  (a fixture)
from test_rnn_ln_zoneout import valid_backward, valid_forward

import unet
from unet import _C, nn

pytestmark = pytest.mark.gpu

# (mode, layer_norm, zoneout); (T, B, H) with H over and under a block's 256 threads
VARIANTS = [("lstm", True, True), ("lstm", True, False), ("lstm", False, True), ("gru", False, True)]
SHAPES = [(1, 1, 8), (5, 7, 64), (9, 3, 300), (4, 33, 32)]
LENGTHS = [None, "mixed"]


def _to_gpu(cp, args):
    out = {}
    for k, v in args.items():
        if isinstance(v, np.ndarray):
            d = cp.asarray(v)
            if k in ("y", "h_n", "c_n", "workspace", "scratch") or k.startswith("grad_") and k not in (
                    "grad_y", "grad_h_n", "grad_c_n"):
                d.fill(np.nan)
            out[k] = d
        else:
            out[k] = v
    return out


def _with_lengths(args, kind, T, B):
    if kind == "mixed":
        args["lengths"] = np.array([(T if b % 3 == 0 else 1 + (b * 7) % T) for b in range(B)], np.int64)
        args["reverse"] = True
    return args


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_matches_cpu(cupy, variant, shape, lengths, dtype):
    T, B, H = shape
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    f = _with_lengths(valid_forward(*variant, dtype=dtype, T_=T, B_=B, I_=5, H_=H), lengths, T, B)
    g = _with_lengths(valid_backward(*variant, dtype=dtype, T_=T, B_=B, I_=5, H_=H), lengths, T, B)
    _C.rnn_ln_forward(**f)
    g.update(y=f["y"], workspace=f["workspace"])  # the forward with these lengths
    _C.rnn_ln_backward(**g)
    stream = cupy.cuda.Stream(non_blocking=True)
    fd = _to_gpu(cupy, f)
    _C.rnn_ln_forward(**fd, stream=stream.ptr)
    gd = _to_gpu(cupy, g)
    gd.update(y=fd["y"], workspace=fd["workspace"])
    _C.rnn_ln_backward(**gd, stream=stream.ptr)
    stream.synchronize()
    for k in ("y", "h_n", "c_n"):
        if f[k] is not None:
            np.testing.assert_allclose(cupy.asnumpy(fd[k]), f[k], **tol, err_msg=k)
    for k, v in g.items():
        if k.startswith("grad_") and k not in ("grad_y", "grad_h_n", "grad_c_n") and v is not None:
            np.testing.assert_allclose(cupy.asnumpy(gd[k]), v, **tol, err_msg=k)


def test_module_on_gpu_matches_cpu(cupy):
    model = nn.LSTM(6, 16, num_layers=2, bidirectional=True, layer_norm=True, zoneout=0.2).eval()
    x = np.random.default_rng(0).standard_normal((7, 4, 6)).astype(np.float32)
    y_cpu = model(unet.tensor(x), lengths=[7, 3, 5, 1])[0].numpy()
    model.to("cuda")
    xg = unet.tensor(x, device="cuda", requires_grad=True)
    y = model(xg, lengths=[7, 3, 5, 1])[0]
    y.sum().backward()
    np.testing.assert_allclose(y.numpy(), y_cpu, rtol=1e-4, atol=1e-5)
    assert np.isfinite(xg.grad.numpy()).all()
