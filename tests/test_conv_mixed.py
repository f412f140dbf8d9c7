"""The mixed-precision form of unet._C.conv_forward / conv_backward (float16/bfloat16 x, weight
and grad_out; float32 bias, outputs and gradients): on the CPU bitwise the float32 kernels on
the widened values, with g = grad_out * act'(preact) rounded to the 16-bit dtype; its dtype
rules; and on a GPU the tensor-core path (cuda/conv_mma.cu) and its float32 fallback
(depthwise) against the CPU."""
import math

import ml_dtypes
import numpy as np
import pytest

from kernel_checks import assert_names, cupy  # noqa: F401  (cupy: a fixture)
from unet import _C

LOW = {"bf16": np.dtype(ml_dtypes.bfloat16), "fp16": np.dtype(np.float16)}
ACTS = ["none", "relu", "gelu", "tanh", "sigmoid"]

# (N, C_in, H, W, C_out, KH, KW, stride, padding (t, b, l, r), dilation, groups)
CASES = [
    (2, 3, 7, 9, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (3, 4, 9, 8, 6, 3, 2, (2, 1), (0, 1, 2, 0), (1, 2), 2),
    (2, 8, 9, 9, 8, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 8),       # depthwise: the float32 fallback
    (4, 300, 1, 60, 100, 1, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1),  # text CNN
    (2, 64, 30, 30, 96, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),   # many tiles, split K in backward-weight
    (32, 64, 28, 28, 128, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1), # the 128 x 128 tile in forward
    (1, 16, 5, 5, 32, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (2, 5, 11, 13, 7, 5, 3, (3, 2), (2, 2, 1, 1), (2, 1), 1),      # odd sizes: partial tiles everywhere
    (4, 128, 64, 80, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),   # the 128 x 128 tile in backward-data (up to 160 SMs)
    (2, 512, 8, 8, 512, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),   # ... in backward-weight (up to 144 SMs); split K in the others
]


def _geometry(case):
    n, cin, h, w, cout, kh, kw, stride, padding, dilation, groups = case
    ho = (h + padding[0] + padding[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return (n, cin, h, w), (cout, cin // groups, kh, kw), (n, cout, ho, wo)


def _inputs(case, low, seed=0):
    """x, weight, grad_out in the 16-bit dtype; bias float32."""
    x_shape, w_shape, out_shape = _geometry(case)
    rng = np.random.default_rng(seed)
    x, w, gy = (rng.standard_normal(s).astype(np.float32).astype(low) for s in (x_shape, w_shape, out_shape))
    return x, w, rng.standard_normal(w_shape[0]).astype(np.float32), gy


def _settings(case):
    return case[7:]


def _run(xp, x, w, b, gy, case, act, preact=None):
    """Forward and backward on xp's arrays; backward uses `preact` when given (so that two
    devices round the same g), else the forward's own."""
    x, w, b, gy = (xp.asarray(a) for a in (x, w, b, gy))
    out = xp.full(gy.shape, xp.nan, np.float32)
    pre = xp.full(gy.shape, xp.nan, np.float32) if act != "none" else None
    stream = xp.cuda.get_current_stream().ptr if xp is not np else 0
    _C.conv_forward(x, w, b, out, pre, act, *_settings(case), stream)
    if preact is not None:
        pre = xp.asarray(preact)
    grads = [xp.full(a.shape, xp.nan, np.float32) for a in (x, w, b)]
    _C.conv_backward(gy, x, w, pre, act, *grads, *_settings(case), stream)
    return [out, pre] + grads


def _round(a, low):
    return a.astype(low).astype(np.float32)


def _derivative(act, z):
    """act'(z) in float64."""
    z = z.astype(np.float64)
    if act == "relu":
        return (z > 0).astype(np.float64)
    if act == "tanh":
        return 1 - np.tanh(z) ** 2
    erf = np.vectorize(math.erf)  # gelu
    return 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


@pytest.mark.parametrize("name", sorted(LOW))
@pytest.mark.parametrize("act", ["none", "relu", "tanh"])
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2], CASES[7]], ids=str)
def test_cpu_mixed_is_the_float32_kernel_on_widened_values(case, act, name):
    low = LOW[name]
    x, w, b, gy = _inputs(case, low)
    out, pre, gx, gw, gb = _run(np, x, w, b, gy, case, act)
    f32 = [a.astype(np.float32) for a in (x, w)]
    want_out = np.empty_like(out)
    want_pre = None if act == "none" else np.empty_like(out)
    _C.conv_forward(*f32, b, want_out, want_pre, act, *_settings(case))
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(pre, want_pre)
    # backward: the float32 kernel, no activation, on g = grad_out * act'(preact) rounded to the
    # 16-bit dtype (relu's act' is 0 or 1: exact; tanh's is computed here in float64, so g may
    # be one rounding step away from the kernel's in places)
    g = gy.astype(np.float32)
    if act != "none":
        g = _round((g * _derivative(act, pre)).astype(np.float32), low)
    want = [np.empty_like(a) for a in (gx, gw, gb)]
    _C.conv_backward(g, *f32, None, "none", *want, *_settings(case))
    ulp = 2.0 ** -7 if name == "bf16" else 2.0 ** -10
    for got, ref, label in zip((gx, gw, gb), want, ("grad_x", "grad_weight", "grad_bias")):
        if act != "tanh":
            np.testing.assert_array_equal(got, ref, err_msg=label)
        else:
            scale = float(np.abs(ref).max()) + 1.0
            np.testing.assert_allclose(got, ref, rtol=0, atol=ulp * scale, err_msg=label)


@pytest.mark.parametrize("name", sorted(LOW))
def test_g_is_rounded_to_the_16_bit_dtype(name):
    """A 1x1 convolution with identity weights: grad_x is g itself, so every value of it must be
    a 16-bit value (and equal grad_out * act'(preact) up to that rounding)."""
    low = LOW[name]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32).astype(low)
    w = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1).astype(low)
    gy = rng.standard_normal((2, 3, 4, 5)).astype(np.float32).astype(low)
    settings = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
    out, pre = np.empty((2, 3, 4, 5), np.float32), np.empty((2, 3, 4, 5), np.float32)
    _C.conv_forward(x, w, None, out, pre, "gelu", *settings)
    gx = np.empty((2, 3, 4, 5), np.float32)
    _C.conv_backward(gy, x, w, pre, "gelu", gx, None, None, *settings)
    np.testing.assert_array_equal(gx, _round(gx, low))
    exact = gy.astype(np.float64) * _derivative("gelu", pre)
    ulp = 2.0 ** -8 if name == "bf16" else 2.0 ** -11
    np.testing.assert_allclose(gx, exact, rtol=ulp * 1.01, atol=1e-6)


def test_mixed_dtype_rules_are_named():
    case = CASES[0]
    x, w, b, gy = _inputs(case, LOW["bf16"])
    out = np.empty(gy.shape, np.float32)
    s = _settings(case)
    with pytest.raises(TypeError, match="expected bfloat16 like x") as excinfo:
        _C.conv_forward(x, w.astype(np.float16), b, out, None, "none", *s)
    assert_names(excinfo, "weight")
    with pytest.raises(TypeError, match="expected float32 with bfloat16 x") as excinfo:
        _C.conv_forward(x, w, b, out.astype(np.float64), None, "none", *s)
    assert_names(excinfo, "out")
    with pytest.raises(TypeError, match="expected float32 with bfloat16 x") as excinfo:
        _C.conv_forward(x, w, b.astype(np.float64), out, None, "none", *s)
    assert_names(excinfo, "bias")
    with pytest.raises(TypeError) as excinfo:  # a 16-bit output is never taken
        _C.conv_forward(x, w, b, out.astype(LOW["bf16"]), None, "none", *s)
    assert_names(excinfo, "out")
    gx = np.empty(x.shape, np.float32)
    with pytest.raises(TypeError, match="expected bfloat16 like weight") as excinfo:
        _C.conv_backward(gy.astype(np.float32), x, w, None, "none", gx, None, None, *s)
    assert_names(excinfo, "grad_out")
    with pytest.raises(TypeError, match="expected float32 with bfloat16 weight") as excinfo:
        _C.conv_backward(gy, x, w, None, "none", gx.astype(np.float64), None, None, *s)
    assert_names(excinfo, "grad_x")


# ---- GPU: the tensor-core path and the fallback against the CPU ----

# every activation on the chosen path; one on each forced path
PATHS_ACTS = [("auto", act) for act in ACTS] + [("sm80", "gelu"), ("simt", "gelu")]


@pytest.mark.gpu
@pytest.mark.parametrize("path,act", PATHS_ACTS)
@pytest.mark.parametrize("name", sorted(LOW))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_mixed_matches_cpu(cupy, case, act, name, path, monkeypatch):
    """Same 16-bit products, float32 sums in another order: within float32 rounding of the sums.
    Backward on both devices reads the CPU's preact, so both round the same g. UNET_CONV_PATH
    forces the tensor-core path (depthwise too) or the float32 copies."""
    monkeypatch.setenv("UNET_CONV_PATH", path)
    arrays = _inputs(case, LOW[name])
    want = _run(np, *arrays, case, act)
    got = _run(cupy, *arrays, case, act, preact=want[1])
    # Each device computes act'(preact) itself (CUDA's erff and fused multiply-adds): where the
    # two differ in the last place, g can round to the neighbouring 16-bit value, which moves
    # the gradients by a few such steps (relu's act' is exact), as in the CPU test above.
    ulp = 2.0 ** -7 if name == "bf16" else 2.0 ** -10
    g_tol = ulp if act in ("gelu", "tanh", "sigmoid") else 1e-4
    for label, g, w in zip(["out", "preact", "grad_x", "grad_weight", "grad_bias"], got, want):
        if w is None:
            continue
        scale = max(1.0, float(np.abs(w).max()))
        atol = (g_tol if label.startswith("grad") else 1e-4) * scale
        np.testing.assert_allclose(cupy.asnumpy(g), w, rtol=1e-4, atol=atol, err_msg=f"{label} {case}")


@pytest.mark.gpu
def test_cuda_mixed_is_deterministic(cupy):
    import hashlib
    case = CASES[4]
    arrays = _inputs(case, LOW["bf16"], seed=3)
    digests = set()
    for _ in range(2):
        results = _run(cupy, *arrays, case, "relu")
        digests.add(hashlib.sha256(b"".join(cupy.asnumpy(a).tobytes() for a in results)).digest())
    assert len(digests) == 1


@pytest.mark.gpu
def test_a_bad_conv_path_is_named(cupy, monkeypatch):
    monkeypatch.setenv("UNET_CONV_PATH", "wgmma")
    with pytest.raises(ValueError, match="UNET_CONV_PATH"):
        _run(cupy, *_inputs(CASES[0], LOW["bf16"]), CASES[0], "none")
