"""Pooling and interpolation against torch.nn.functional / torch.nn on the same input:
outputs, indices and input gradients over a sweep of geometries, fp32 and fp64;
finite differences in float64; bad arguments rejected with errors that name them."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import unet
import unet.functional as F
from gradcheck import gradcheck
from unet import nn

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
DTYPES = [np.float32, np.float64]


def data(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run_both(ours, theirs, x, dtype, seed=1):
    """Forward both on x, backward one random cotangent; return (ours, theirs) outputs and input grads."""
    xu, xt = unet.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yu, yt = ours(xu), theirs(xt)
    values_u, values_t = (yu[0], yt[0]) if isinstance(yu, tuple) else (yu, yt)
    assert values_u.shape == tuple(values_t.shape)
    cot = data(values_u.shape, dtype, seed)
    values_u.backward(cot)
    values_t.backward(torch.from_numpy(cot))
    return yu, yt, xu.grad.numpy(), xt.grad.numpy()


def assert_same(ours, theirs, dtype):
    if isinstance(ours, tuple):
        assert_same(ours[0], theirs[0], dtype)
        np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())
        assert ours[1].dtype == unet.int64
        return
    ours = ours.numpy() if isinstance(ours, unet.Tensor) else ours
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours, theirs, **TOL[dtype])


def compare(ours, theirs, x, dtype):
    yu, yt, gu, gt = run_both(ours, theirs, x, dtype)
    assert_same(yu, yt, dtype)
    assert_same(gu, gt, dtype)


# ---------------------------------------------------------------- sliding windows: a sweep

GEOMETRY_1D = [  # (length, kernel, stride, padding, dilation)
    (11, 3, 2, 1, 1), (11, 3, None, 0, 1), (10, 2, 2, 0, 1), (9, 4, 3, 2, 1), (12, 3, 1, 1, 2),
    (7, 7, 1, 3, 1), (8, 2, 3, 1, 3), (5, 5, 5, 0, 1), (6, 1, 1, 0, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("length,kernel,stride,padding,dilation", GEOMETRY_1D)
def test_max_pool1d_matches_torch(length, kernel, stride, padding, dilation, ceil_mode, dtype):
    x = data((2, 3, length), dtype)
    args = (kernel, stride, padding, dilation, ceil_mode, True)
    compare(lambda t: F.max_pool1d(t, *args), lambda t: TF.max_pool1d(t, *args), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ceil_mode,count_include_pad", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("length,kernel,stride,padding,dilation", [g for g in GEOMETRY_1D if g[4] == 1])
def test_avg_pool1d_matches_torch(length, kernel, stride, padding, dilation, ceil_mode, count_include_pad, dtype):
    x = data((2, 3, length), dtype)
    args = (kernel, stride, padding, ceil_mode, count_include_pad)
    compare(lambda t: F.avg_pool1d(t, *args), lambda t: TF.avg_pool1d(t, *args), x, dtype)


GEOMETRY_2D = [  # (H, W, kernel, stride, padding, dilation)
    (8, 9, 2, None, 0, 1), (7, 10, (3, 2), (2, 1), (1, 0), 1), (9, 9, 3, 2, 1, 1), (10, 7, 3, (1, 2), 1, (2, 1)),
    (5, 6, (2, 3), 3, (1, 1), 1), (6, 6, 4, 2, 2, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("h,w,kernel,stride,padding,dilation", GEOMETRY_2D)
def test_max_pool2d_matches_torch(h, w, kernel, stride, padding, dilation, ceil_mode, dtype):
    x = data((2, 3, h, w), dtype)
    args = (kernel, stride, padding, dilation, ceil_mode, True)
    compare(lambda t: F.max_pool2d(t, *args), lambda t: TF.max_pool2d(t, *args), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ceil_mode,count_include_pad", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("h,w,kernel,stride,padding,dilation", [g for g in GEOMETRY_2D if g[5] == 1])
def test_avg_pool2d_matches_torch(h, w, kernel, stride, padding, dilation, ceil_mode, count_include_pad, dtype):
    x = data((2, 3, h, w), dtype)
    args = (kernel, stride, padding, ceil_mode, count_include_pad)
    compare(lambda t: F.avg_pool2d(t, *args), lambda t: TF.avg_pool2d(t, *args), x, dtype)


def test_avg_pool2d_divisor_override():
    x = data((1, 2, 6, 7), np.float64)
    compare(lambda t: F.avg_pool2d(t, 3, 2, 1, divisor_override=5),
            lambda t: TF.avg_pool2d(t, 3, 2, 1, divisor_override=5), x, np.float64)


def test_max_pool_ties_and_nan_pick_like_torch():
    """Ties: the first maximum in the window takes the index and the gradient; NaN propagates (the last
    NaN of a window takes the index, as in torch's scan)."""
    x = np.array([[[1.0, 3.0, 3.0, 0.0, 2.0, 2.0, np.nan, 1.0, np.nan, 5.0]]])
    yu, iu = F.max_pool1d(unet.tensor(x), 3, 1, return_indices=True)
    yt, it = TF.max_pool1d(torch.tensor(x), 3, 1, return_indices=True)
    np.testing.assert_array_equal(yu.numpy(), yt.numpy())
    np.testing.assert_array_equal(iu.numpy(), it.numpy())
    ties = np.array([[[1.0, 3.0, 3.0, 0.0, 2.0, 2.0]]])
    compare(lambda t: F.max_pool1d(t, 3, 1, 1), lambda t: TF.max_pool1d(t, 3, 1, 1), ties, np.float64)


def test_unbatched_input():
    x = data((3, 9, 8), np.float32)
    compare(lambda t: F.max_pool2d(t, 2), lambda t: TF.max_pool2d(t, 2), x, np.float32)
    compare(lambda t: F.avg_pool1d(t, 3, 2), lambda t: TF.avg_pool1d(t, 3, 2), x[0], np.float32)
    compare(lambda t: F.adaptive_max_pool1d(t, 4), lambda t: TF.adaptive_max_pool1d(t, 4), x[0], np.float32)


def test_half_precision_pools_run_and_stay_half():
    x = data((2, 3, 16), np.float32)
    for dtype in ("float16", "bfloat16"):
        xh = unet.tensor(x, dtype=dtype)
        assert F.avg_pool1d(xh, 4).dtype == xh.dtype and F.max_pool1d(xh, 4).dtype == xh.dtype
        np.testing.assert_allclose(F.avg_pool1d(xh, 4).to("float32").numpy(),
                                   TF.avg_pool1d(torch.tensor(xh.to("float32").numpy()), 4).numpy(), rtol=1e-2)


# ---------------------------------------------------------------- adaptive pooling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length,out", [(10, 1), (10, 3), (7, 7), (5, 8), (13, 4), (9, 2)])
def test_adaptive_pool1d_matches_torch(length, out, dtype):
    x = data((2, 3, length), dtype)
    compare(lambda t: F.adaptive_avg_pool1d(t, out), lambda t: TF.adaptive_avg_pool1d(t, out), x, dtype)
    compare(lambda t: F.adaptive_max_pool1d(t, out, True), lambda t: TF.adaptive_max_pool1d(t, out, True), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", [1, 3, (2, 5), (None, 4), (7, None), (9, 11)])
def test_adaptive_pool2d_matches_torch(out, dtype):
    x = data((2, 3, 7, 9), dtype)
    compare(lambda t: F.adaptive_avg_pool2d(t, out), lambda t: TF.adaptive_avg_pool2d(t, out), x, dtype)
    compare(lambda t: F.adaptive_max_pool2d(t, out, True), lambda t: TF.adaptive_max_pool2d(t, out, True), x, dtype)


# ---------------------------------------------------------------- interpolation

INTERPOLATIONS_1D = [dict(scale_factor=2), dict(size=17), dict(size=4), dict(scale_factor=1.7), dict(size=9),
                     dict(scale_factor=0.5), dict(scale_factor=2.5, recompute_scale_factor=True)]
INTERPOLATIONS_2D = [dict(scale_factor=2), dict(size=(5, 13)), dict(scale_factor=(1.5, 2.3)), dict(scale_factor=0.5),
                     dict(size=(1, 1)), dict(size=(7, 9)), dict(scale_factor=1.1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,align_corners", [("nearest", None), ("linear", False), ("linear", True)])
@pytest.mark.parametrize("kwargs", INTERPOLATIONS_1D, ids=str)
def test_interpolate_1d_matches_torch(kwargs, mode, align_corners, dtype):
    x = data((2, 3, 9), dtype)
    kw = dict(kwargs, mode=mode, align_corners=align_corners)
    compare(lambda t: F.interpolate(t, **kw), lambda t: TF.interpolate(t, **kw), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,align_corners", [("nearest", None), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("kwargs", INTERPOLATIONS_2D, ids=str)
def test_interpolate_2d_matches_torch(kwargs, mode, align_corners, dtype):
    x = data((2, 3, 7, 9), dtype)
    kw = dict(kwargs, mode=mode, align_corners=align_corners)
    compare(lambda t: F.interpolate(t, **kw), lambda t: TF.interpolate(t, **kw), x, dtype)


# ---------------------------------------------------------------- layers

LAYERS = [
    (lambda m: m.MaxPool1d(3, 2, 1, ceil_mode=True), (2, 4, 11)),
    (lambda m: m.MaxPool2d((2, 3), return_indices=True), (2, 4, 8, 9)),
    (lambda m: m.AvgPool1d(4, 2, 2, count_include_pad=False), (2, 4, 11)),
    (lambda m: m.AvgPool2d(3, 2, 1, ceil_mode=True), (2, 4, 8, 9)),
    (lambda m: m.AdaptiveAvgPool1d(1), (2, 4, 11)),
    (lambda m: m.AdaptiveAvgPool2d((3, None)), (2, 4, 8, 9)),
    (lambda m: m.AdaptiveMaxPool1d(5, return_indices=True), (2, 4, 11)),
    (lambda m: m.AdaptiveMaxPool2d(2), (2, 4, 8, 9)),
    (lambda m: m.Upsample(scale_factor=2, mode="linear", align_corners=True), (2, 4, 11)),
    (lambda m: m.Upsample(size=(5, 12), mode="bilinear"), (2, 4, 8, 9)),
    (lambda m: m.Upsample(scale_factor=3), (2, 4, 8, 9)),
]


@pytest.mark.parametrize("make,shape", LAYERS)
def test_layers_match_torch(make, shape):
    ours, theirs = make(nn), make(torch.nn)
    assert list(ours.parameters()) == [] and type(ours).__name__ in repr(ours)
    compare(ours, theirs, data(shape, np.float32), np.float32)


# ---------------------------------------------------------------- finite differences (float64)

GRADCHECKS = [
    ("max_pool1d", lambda t: F.max_pool1d(t, 3, 2, 1, 2, True), (1, 2, 9)),
    ("max_pool2d", lambda t: F.max_pool2d(t, (2, 3), (2, 1), (1, 1), 1, True), (1, 2, 5, 5)),
    ("avg_pool1d", lambda t: F.avg_pool1d(t, 3, 2, 1, True, False), (1, 2, 8)),
    ("avg_pool2d", lambda t: F.avg_pool2d(t, 3, 2, 1, True, True), (1, 2, 5, 6)),
    ("adaptive_max_pool1d", lambda t: F.adaptive_max_pool1d(t, 3), (1, 2, 7)),
    ("adaptive_max_pool2d", lambda t: F.adaptive_max_pool2d(t, (2, 3)), (1, 2, 5, 4)),
    ("adaptive_avg_pool1d", lambda t: F.adaptive_avg_pool1d(t, 3), (1, 2, 7)),
    ("adaptive_avg_pool2d", lambda t: F.adaptive_avg_pool2d(t, (2, 3)), (1, 2, 5, 4)),
    ("nearest", lambda t: F.interpolate(t, scale_factor=1.5), (1, 2, 3, 4)),
    ("linear", lambda t: F.interpolate(t, size=7, mode="linear"), (1, 2, 5)),
    ("bilinear", lambda t: F.interpolate(t, size=(4, 5), mode="bilinear", align_corners=True), (1, 2, 3, 3)),
]


@pytest.mark.parametrize("name,fn,shape", GRADCHECKS, ids=[g[0] for g in GRADCHECKS])
def test_gradcheck(name, fn, shape):
    x = unet.tensor(data(shape, np.float64, seed=3), requires_grad=True)
    assert gradcheck(fn, [x])


# ---------------------------------------------------------------- bad arguments

def test_output_too_small_is_named():
    x = unet.zeros(1, 1, 4)
    with pytest.raises(ValueError, match="input: max_pool1d .* too small"):
        F.max_pool1d(x, 5)
    with pytest.raises(ValueError, match="input: avg_pool2d"):
        F.avg_pool2d(unet.zeros(1, 1, 2, 8), 3)


@pytest.mark.parametrize("call,error,match", [
    (lambda x: F.max_pool1d(x, 0), ValueError, "kernel_size: expected an int >= 1"),
    (lambda x: F.max_pool1d(x, 2, stride=0), ValueError, "stride: expected an int >= 1"),
    (lambda x: F.max_pool1d(x, 2, padding=-1), ValueError, "padding: expected an int >= 0"),
    (lambda x: F.max_pool1d(x, 2, padding=2), ValueError, "padding: expected at most half"),
    (lambda x: F.max_pool1d(x, 2, dilation=0), ValueError, "dilation: expected an int >= 1"),
    (lambda x: F.max_pool1d(x, (2, 2)), ValueError, "kernel_size: expected an int >= 1 or a tuple of 1"),
    (lambda x: F.max_pool1d(x, 2.5), ValueError, "kernel_size"),
    (lambda x: F.max_pool1d(x, 2, ceil_mode="yes"), TypeError, "ceil_mode: expected a bool"),
    (lambda x: F.max_pool2d(x[0], 2), ValueError, r"input: max_pool2d expects a 3-D \(C, H, W\) or 4-D"),
    (lambda x: F.max_pool1d(x.long(), 2), TypeError, "input: expected a floating-point tensor"),
    (lambda x: F.max_pool1d(x.numpy(), 2), TypeError, "input: expected a Tensor, got ndarray"),
    (lambda x: F.avg_pool2d(unet.zeros(1, 1, 4, 4), 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda x: F.adaptive_avg_pool1d(x, 0), ValueError, "output_size: expected a positive int"),
    (lambda x: F.adaptive_max_pool2d(unet.zeros(1, 1, 4, 4), (2, 2, 2)), ValueError, "output_size"),
    (lambda x: F.adaptive_max_pool1d(unet.zeros(1, 0, 4), 2), ValueError, "input: expected non-empty"),
    (lambda x: F.interpolate(x, mode="bicubic", size=4), ValueError, "mode: expected one of"),
    (lambda x: F.interpolate(x, mode="bilinear", size=4), ValueError, r"input: mode 'bilinear' expects a 4-D"),
    (lambda x: F.interpolate(x), ValueError, "size, scale_factor: expected exactly one"),
    (lambda x: F.interpolate(x, size=4, scale_factor=2), ValueError, "size, scale_factor: expected exactly one"),
    (lambda x: F.interpolate(x, size=4, align_corners=True), ValueError, "align_corners: only the interpolating"),
    (lambda x: F.interpolate(x, scale_factor=-1), ValueError, "scale_factor: expected a positive finite"),
    (lambda x: F.interpolate(x, scale_factor=float("nan")), ValueError, "scale_factor"),
    (lambda x: F.interpolate(x, scale_factor=0.01), ValueError, "scale_factor: 0.01 gives output size"),
    (lambda x: F.interpolate(x, size=0), ValueError, "size: expected an int >= 1"),
    (lambda x: nn.Upsample(), ValueError, "size, scale_factor"),
    (lambda x: nn.Upsample(size=3, mode="area"), ValueError, "mode: expected one of"),
    (lambda x: nn.MaxPool2d(2, stride=(1, 2, 3)), ValueError, "stride: expected an int >= 1 or a tuple of 2"),
    (lambda x: nn.AvgPool1d(3, ceil_mode=1), TypeError, "ceil_mode: expected a bool"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(unet.zeros(2, 3, 8))


# ---------------------------------------------------------------- the same ops on CuPy arrays

GPU_CASES = [
    ("max_pool2d", lambda t: F.max_pool2d(t, 3, 2, 1, 1, True, True), (2, 3, 9, 8)),
    ("avg_pool1d", lambda t: F.avg_pool1d(t, 4, 3, 2, True, False), (2, 3, 13)),
    ("adaptive_max_pool2d", lambda t: F.adaptive_max_pool2d(t, (3, 5), True), (2, 3, 7, 9)),
    ("adaptive_avg_pool1d", lambda t: F.adaptive_avg_pool1d(t, 4), (2, 3, 13)),
    ("nearest", lambda t: F.interpolate(t, scale_factor=1.7), (2, 3, 5, 6)),
    ("bilinear", lambda t: F.interpolate(t, size=(8, 11), mode="bilinear", align_corners=True), (2, 3, 5, 6)),
    ("batch_norm", lambda t: nn.BatchNorm2d(3).to(t.device).to(t.dtype)(t), (4, 3, 5, 6)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("name,fn,shape", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_cuda_arrays_match_the_cpu(name, fn, shape):
    """Every op is array-module code: on CuPy arrays it must give the numpy path's values and gradients."""
    x = data(shape, np.float64, seed=5)
    results = []
    for device in ("cpu", "cuda"):
        t = unet.tensor(x, device=device, requires_grad=True)
        out = fn(t)
        values, extra = (out[0], out[1].cpu().numpy()) if isinstance(out, tuple) else (out, None)
        assert values.device == t.device
        values.backward(unet.tensor(data(values.shape, np.float64, seed=6), device=device))
        results.append((values.cpu().numpy(), extra, t.grad.cpu().numpy()))
    (v_cpu, i_cpu, g_cpu), (v_gpu, i_gpu, g_gpu) = results
    np.testing.assert_allclose(v_gpu, v_cpu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-12, atol=1e-12)
    if i_cpu is not None:
        np.testing.assert_array_equal(i_gpu, i_cpu)
