"""unet._C.matmul (csrc/include/unet/matmul.h) called directly on the CPU.

Every result is compared with float64 numpy on the values the kernel sees (16-bit inputs
are exact in float64), with tolerances for float32 accumulation plus one rounding to the
output dtype. Also: the 16-bit conversions bit for bit, every epilogue part, batches and
shared operands, row-padded views with untouched padding, thread-count independence, the
portable and the AVX-512 BF16 paths against each other, and named errors for bad input.
"""
import math
import os
import re
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernel_checks
from kernel_checks import FUZZ, FakeCudaArray, assert_names, junk_arguments, read_only

from unet import _C

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
DTYPES = [F32, F16, BF16]
IDS = {F32: "f32", F16: "f16", BF16: "bf16"}
ACTIVATIONS = ["none", "relu", "gelu", "tanh", "sigmoid"]
# Half an ulp of each output dtype, relative.
HALF_ULP = {F32: 2.0**-24, F16: 2.0**-11, BF16: 2.0**-8}
# (M, N, K): ones, primes, and sizes past every tile and block (12/8-row and 32-wide
# micro-tiles, k slices of 256, the epilogue's 256-wide strips, the 256-row scratch blocks).
SHAPES = [(1, 1, 1), (7, 1, 3), (1, 7, 129), (7, 129, 5), (129, 7, 33), (33, 65, 300),
          (300, 260, 17), (13, 513, 70)]

_erf = np.vectorize(math.erf, otypes=[np.float64])


def act_ref(name, z):
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "gelu":
        return 0.5 * z * (1.0 + _erf(z / math.sqrt(2.0)))
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    return z


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def f64(x):
    return None if x is None else np.asarray(x).astype(np.float64)


def stored(x, trans):
    """The array to pass for op(x) == x: x itself or a contiguous x^T (the last two dims)."""
    return np.ascontiguousarray(np.swapaxes(x, -1, -2)) if trans else x


def reference(a, b, c=None, *, alpha=1.0, beta=0.0, bias=None, activation="none", residual=None):
    """float64 (z, out, scale) for op(a) = a and op(b) = b as given (not transposed); scale
    bounds the magnitudes that float32 accumulation errs on, elementwise."""
    a64, b64 = f64(a), f64(b)
    z = alpha * (a64 @ b64)
    scale = abs(alpha) * (np.abs(a64) @ np.abs(b64))
    if beta != 0.0:
        z = z + beta * f64(c)
        scale = scale + abs(beta) * np.abs(f64(c))
    if bias is not None:
        z = z + f64(bias)
        scale = scale + np.abs(f64(bias))
    out = act_ref(activation, z)
    if residual is not None:
        out = out + f64(residual)
        scale = scale + np.abs(f64(residual))
    return z, out, scale


def assert_close(got, ref, scale, dtype, what=""):
    """got (dtype) within float32-accumulation error (1e-5 of scale) plus half an ulp of
    dtype of ref, plus the smallest subnormal of float16 for its gradual underflow."""
    err = np.abs(f64(got) - ref)
    acc = 1e-5 * scale + 1e-30
    bound = acc + HALF_ULP[dtype] * (np.abs(ref) + acc) + (2.0**-24 if dtype == F16 else 0.0)
    bad = ~(err <= bound)  # NaN counts as bad
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} off, worst {err[bad].max()} "
                           f"(bound {bound[bad].min()}) at {np.argwhere(bad)[0]}")


def run(a, b, c, **kw):
    _C.matmul(a, b, c, **kw)
    return c


# ---------------------------------------------------------------- conversions --------

def fast_bf16():
    return _C.info()["cpu_matmul_bf16_kernel"] == "avx512bf16"


@pytest.mark.parametrize("dtype", [F16, BF16], ids=IDS.get)
def test_every_16_bit_value_widens_exactly(dtype):
    bits = np.arange(2**16, dtype=np.uint16)
    a = bits.view(dtype).reshape(-1, 1)
    c = np.empty((2**16, 1), np.float32)
    run(a, np.ones((1, 1), dtype), c)
    want = a.astype(np.float32)
    if dtype == BF16 and fast_bf16():  # vdpbf16ps flushes subnormals to zero
        want[np.abs(want) < np.finfo(np.float32).tiny] = 0.0
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(c), nan)
    # bitwise, but for the sign of zero: a sum that starts at +0 turns -0 into +0
    np.testing.assert_array_equal(c[~nan].view(np.uint32), (want[~nan] + np.float32(0)).view(np.uint32))


def _narrowing_inputs():
    rng = np.random.default_rng(5)
    x = [rng.standard_normal(20000).astype(np.float32),
         rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32).view(np.float32)]
    # ties and neighbours of ties at every float16 / bfloat16 spacing, subnormals, overflow
    for dtype in (F16, BF16):
        h = np.arange(2**16, dtype=np.uint16).view(dtype).astype(np.float32)
        h = h[np.isfinite(h)]
        nxt = np.nextafter(h, np.float32(np.inf), dtype=np.float32)
        hs = np.sort(h)
        mid = ((hs[:-1].astype(np.float64) + hs[1:]) / 2).astype(np.float32)
        x += [h, nxt, mid, np.nextafter(mid, np.float32(0), dtype=np.float32),
              np.nextafter(mid, np.float32(np.inf), dtype=np.float32)]
    x.append(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65519.99, 65520, -65520,
                       2.0**-25, 2.0**-25 * 1.0000001, 2.0**-24, 3 * 2.0**-26, 3.4e38], np.float32))
    x = np.concatenate(x)
    return x[np.abs(x) < 1e38]  # times 1.0 in float32 stays x; beyond, the tests need no more


@pytest.mark.parametrize("dtype", [F16, BF16], ids=IDS.get)
def test_rounding_to_16_bits_is_to_nearest_even(dtype):
    x = _narrowing_inputs().reshape(-1, 1)
    c = np.empty(x.shape, dtype)
    run(x, np.ones((1, 1), np.float32), c)
    with np.errstate(over="ignore"):
        want = x.astype(dtype)  # numpy and ml_dtypes round to nearest even
    c, want, x = c.ravel(), want.ravel(), x.ravel()
    nan = np.isnan(want.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(c.astype(np.float32)), nan)
    keep = ~nan & (x != 0)  # (a sum from +0 makes -0 into +0)
    np.testing.assert_array_equal(c.view(np.uint16)[keep], want.view(np.uint16)[keep])


# ---------------------------------------------------------------- products -----------

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("trans_b", [False, True], ids=["bN", "bT"])
@pytest.mark.parametrize("trans_a", [False, True], ids=["aN", "aT"])
@pytest.mark.parametrize("c_dtype", DTYPES, ids=IDS.get)
@pytest.mark.parametrize("ab_dtype", DTYPES, ids=IDS.get)
def test_product_matches_float64(ab_dtype, c_dtype, trans_a, trans_b, shape):
    M, N, K = shape
    rng = np.random.default_rng(M * 1009 + N * 31 + K)
    a, b = randn(rng, (M, K), ab_dtype), randn(rng, (K, N), ab_dtype)
    c = np.full((M, N), np.nan, c_dtype)  # beta == 0: never read
    run(stored(a, trans_a), stored(b, trans_b), c, trans_a=trans_a, trans_b=trans_b)
    _, ref, scale = reference(a, b)
    assert_close(c, ref, scale, c_dtype)


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_empty_sizes(shape):
    M, N, K = shape
    rng = np.random.default_rng(0)
    c = randn(rng, (M, N), np.float32)
    bias = randn(rng, (N,), np.float32)
    bias_grad = np.full(M, np.nan, np.float32)
    c0 = c.copy()
    run(np.ones((M, K), np.float32), np.ones((K, N), np.float32), c, beta=0.5, bias=bias,
        bias_grad=bias_grad)
    # K == 0: z = beta C + bias; bias_grad is a sum of K ones, whatever N
    np.testing.assert_allclose(c, 0.5 * c0 + K + bias, rtol=1e-6)
    np.testing.assert_array_equal(bias_grad, np.full(M, K))


@pytest.mark.parametrize("c_dtype", DTYPES, ids=IDS.get)
@pytest.mark.parametrize("ab_dtype", DTYPES, ids=IDS.get)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_full_epilogue(ab_dtype, c_dtype, activation):
    M, N, K = 37, 300, 45
    rng = np.random.default_rng(7)
    a, b = randn(rng, (M, K), ab_dtype), randn(rng, (K, N), ab_dtype)
    c0, residual = randn(rng, (M, N), c_dtype), randn(rng, (M, N), c_dtype)
    bias = randn(rng, (N,), c_dtype)
    c, preact = c0.copy(), np.full((M, N), np.nan, c_dtype)
    bias_grad = np.full(M, np.nan, np.float32)
    kw = dict(alpha=0.75, beta=-1.5, bias=bias, activation=activation, residual=residual)
    run(a, b, c, preact=preact, bias_grad=bias_grad, **kw)
    z, out, scale = reference(a, b, c0, **kw)
    assert_close(preact, z, scale, c_dtype, "preact")
    # act' <= 1.13 (gelu) carries z's error into act(z), whose own error is a few ulps
    assert_close(c, out, 1.2 * scale, c_dtype, "c")
    np.testing.assert_allclose(bias_grad, f64(a).sum(1), rtol=1e-5, atol=1e-5 * np.abs(f64(a)).sum(1).max())


@pytest.mark.parametrize("part", ["alpha", "beta", "bias32", "bias_c", "residual", "preact"])
@pytest.mark.parametrize("c_dtype", DTYPES, ids=IDS.get)
def test_each_epilogue_part_alone(part, c_dtype):
    M, N, K = 9, 40, 33
    rng = np.random.default_rng(11)
    a, b = randn(rng, (M, K), np.float32), randn(rng, (K, N), np.float32)
    kw = {"alpha": dict(alpha=-2.5), "beta": dict(beta=0.25),
          "bias32": dict(bias=randn(rng, (N,), np.float32)), "bias_c": dict(bias=randn(rng, (N,), c_dtype)),
          "residual": dict(residual=randn(rng, (M, N), c_dtype)), "preact": {}}[part]
    c0 = randn(rng, (M, N), c_dtype)
    c = c0.copy() if part == "beta" else np.full((M, N), np.nan, c_dtype)
    preact = np.full((M, N), np.nan, c_dtype)
    run(a, b, c, preact=preact, activation="tanh", **kw)
    z, out, scale = reference(a, b, c0, activation="tanh", **kw)
    assert_close(preact, z, scale, c_dtype, "preact")
    assert_close(c, out, scale, c_dtype, "c")


def test_bias_grad_sums_op_a_over_batch_and_k():
    rng = np.random.default_rng(12)
    for trans_a in (False, True):
        a = randn(rng, (3, 20, 70), BF16)  # op(a): [3, 20, 70] -> M = 20
        bias_grad = np.full(20, np.nan, np.float32)
        run(stored(a, trans_a), randn(rng, (70, 5), BF16), np.empty((3, 20, 5), np.float32),
            trans_a=trans_a, bias_grad=bias_grad)
        np.testing.assert_allclose(bias_grad, f64(a).sum((0, 2)), rtol=1e-5, atol=1e-4)


def test_beta_zero_never_reads_c_and_nan_in_c_stays_out():
    a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    c = np.full((4, 5), np.nan, np.float32)
    run(a, b, c)
    np.testing.assert_array_equal(c, 3.0)
    c = np.full((4, 5), np.nan, np.float32)  # beta != 0 does read it
    run(a, b, c, beta=1.0)
    assert np.isnan(c).all()


# ---------------------------------------------------------------- batches, views -----

@pytest.mark.parametrize("shared", ["none", "a", "b", "residual", "broadcast_b"])
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS.get)
def test_batched_and_shared_operands(dtype, shared):
    P, M, N, K = 5, 13, 21, 34
    rng = np.random.default_rng(13)
    a = randn(rng, (M, K) if shared == "a" else (P, M, K), dtype)
    b = randn(rng, (K, N) if shared in ("b", "broadcast_b") else (P, K, N), dtype)
    residual = randn(rng, (M, N) if shared == "residual" else (P, M, N), dtype)
    b_arg = np.broadcast_to(b, (P, K, N)) if shared == "broadcast_b" else b  # batch stride 0
    for trans_a, trans_b in [(False, False), (True, True)]:
        c = np.full((P, M, N), np.nan, dtype)
        preact = np.full((P, M, N), np.nan, dtype)
        run(stored(a, trans_a), stored(b_arg, trans_b), c, trans_a=trans_a, trans_b=trans_b,
            residual=residual, preact=preact, activation="relu")
        z, out, scale = reference(np.broadcast_to(a, (P, M, K)), np.broadcast_to(b, (P, K, N)),
                                  activation="relu", residual=np.broadcast_to(residual, (P, M, N)))
        assert_close(preact, z, scale, dtype, "preact")
        assert_close(c, out, scale, dtype, "c")


def padded(x, extra, fill):
    """A view of x in a buffer with `extra` more elements per row, the rest `fill`."""
    wide = np.full(x.shape[:-1] + (x.shape[-1] + extra,), fill, x.dtype)
    wide[..., :x.shape[-1]] = x
    return wide, wide[..., :x.shape[-1]]


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS.get)
def test_row_padded_views_in_and_out_padding_untouched(dtype):
    P, M, N, K = 3, 17, 35, 29
    rng = np.random.default_rng(14)
    a, b = randn(rng, (P, K, M), dtype), randn(rng, (N, K), dtype)
    _, a_view = padded(a, 3, np.nan)
    _, b_view = padded(b, 5, np.nan)
    c_buf, c_view = padded(np.full((P, M, N), np.nan, dtype), 7, 12345.0)
    p_buf, p_view = padded(np.full((P, M, N), np.nan, dtype), 1, -7.0)
    c_before, p_before = c_buf.copy(), p_buf.copy()
    run(a_view, b_view, c_view, trans_a=True, trans_b=True, preact=p_view, activation="sigmoid")
    z, out, scale = reference(np.swapaxes(a, 1, 2), np.broadcast_to(b.T, (P, K, N)), activation="sigmoid")
    assert_close(p_view, z, scale, dtype, "preact")
    assert_close(c_view, out, scale, dtype, "c")
    assert c_buf[..., N:].tobytes() == c_before[..., N:].tobytes()
    assert p_buf[..., N:].tobytes() == p_before[..., N:].tobytes()


def test_batch_items_laid_out_with_gaps():
    rng = np.random.default_rng(15)
    a, b = randn(rng, (4, 6, 8), np.float32), randn(rng, (4, 8, 5), np.float32)
    buf = np.full((8, 6, 5), np.nan, np.float32)
    run(a, b, buf[::2])  # every other item of a bigger array
    np.testing.assert_allclose(buf[::2], a @ b, rtol=1e-5, atol=1e-5)
    assert np.isnan(buf[1::2]).all()


def test_batch_items_side_by_side():
    """c [batch, M, N] as a view of an [M, batch, N] array: items interleaved by rows."""
    rng = np.random.default_rng(16)
    a, b = randn(rng, (3, 6, 8), BF16), randn(rng, (8, 5), BF16)
    buf = np.full((6, 3, 5), np.nan, np.float32)
    run(a, b, buf.transpose(1, 0, 2))
    np.testing.assert_allclose(buf.transpose(1, 0, 2), f64(a) @ f64(b), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- determinism --------

_DIGEST_SCRIPT = """
import hashlib, ml_dtypes, numpy as np
from unet import _C
rng = np.random.default_rng(3)
h = hashlib.sha256()
for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
    # (1, 3, 9000, 600): a few rows, columns past one NC block and k past one KC slice, each
    # thread packing its own B; (1, 400, 40, 1100): several row blocks, a narrow B that each
    # thread packs for itself, three k slices
    for (P, M, N, K) in [(1, 300, 280, 600), (1, 7, 3000, 90), (40, 9, 17, 33), (1, 3, 9000, 600),
                         (1, 400, 40, 1100)]:
        for trans_a, trans_b in [(False, True), (True, False)]:
            a = rng.standard_normal((P, K, M) if trans_a else (P, M, K)).astype(dtype)
            b = rng.standard_normal((P, N, K) if trans_b else (P, K, N)).astype(dtype)
            c, pre = np.empty((P, M, N), dtype), np.empty((P, M, N), dtype)
            bg = np.empty(M, np.float32)
            _C.matmul(a, b, c, trans_a=trans_a, trans_b=trans_b, bias=rng.standard_normal(N).astype(np.float32),
                      activation="gelu", preact=pre, bias_grad=bg)
            for x in (c, pre, bg):
                h.update(x.tobytes())
print(_C.info()["cpu_matmul_bf16_kernel"], h.hexdigest())
"""


def _run_script(script, **env):
    run_ = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, **env), capture_output=True,
                          text=True, check=False)
    assert run_.returncode == 0, run_.stderr
    return run_.stdout.split()


@pytest.mark.parametrize("isa", ["default", "generic"])
def test_result_does_not_depend_on_thread_count(isa):
    env = {} if isa == "default" else {"UNET_CPU_ISA": isa}
    one = _run_script(_DIGEST_SCRIPT, OMP_NUM_THREADS="1", **env)
    two = _run_script(_DIGEST_SCRIPT, OMP_NUM_THREADS="2", **env)
    assert one == two
    if isa == "generic":
        assert one[0] == "generic"


_BF16_SCRIPT = """
import sys, ml_dtypes, numpy as np
from unet import _C
rng = np.random.default_rng(4)
out = {}
# (1, 3, 4200, 1101): 4-row tiles, each thread packing its own B, past one NC block and two KC slices
for i, (P, M, N, K) in enumerate([(1, 300, 280, 600), (1, 7, 4200, 91), (6, 33, 65, 1), (3, 1, 1, 513),
                                  (2, 200, 40, 257), (1, 3, 4200, 1101)]):
    for trans_a in (False, True):
        for trans_b in (False, True):
            a = rng.standard_normal((P, K, M) if trans_a else (P, M, K)).astype(ml_dtypes.bfloat16)
            b = rng.standard_normal((P, N, K) if trans_b else (P, K, N)).astype(ml_dtypes.bfloat16)
            c = np.full((P, M, N), np.nan, np.float32)
            _C.matmul(a, b, c, trans_a=trans_a, trans_b=trans_b)
            key = f"{i}{trans_a:d}{trans_b:d}"
            a64 = (np.swapaxes(a, 1, 2) if trans_a else a).astype(np.float64)
            b64 = (np.swapaxes(b, 1, 2) if trans_b else b).astype(np.float64)
            out["c" + key], out["s" + key] = c, np.abs(a64) @ np.abs(b64)
np.savez(PATH, **out)
print(_C.info()["cpu_matmul_bf16_kernel"])
"""


def test_avx512_bf16_path_agrees_with_portable_path(tmp_path):
    if "avx512bf16" not in _C.info()["cpu_features"]:
        pytest.skip("this CPU has no AVX-512 BF16")
    fast, portable = tmp_path / "fast.npz", tmp_path / "portable.npz"
    assert _run_script(_BF16_SCRIPT.replace("PATH", repr(str(fast)))) == ["avx512bf16"]
    assert _run_script(_BF16_SCRIPT.replace("PATH", repr(str(portable))), UNET_CPU_ISA="generic") == ["generic"]
    f, p = np.load(fast), np.load(portable)
    for key in f.files:
        if key.startswith("c"):
            # both sum exact products in float32, in different orders
            err = np.abs(f64(f[key]) - f64(p[key]))
            assert np.all(err <= 1e-5 * f["s" + key[1:]] + 1e-30), key
            assert np.any(err > 0) or f[key].size < 100 or key[1] == "2", key  # really two paths


_FEW_ROWS_SCRIPT = """
import ml_dtypes, numpy as np
from unet import _C
rng = np.random.default_rng(6)
out = {}
# A C of at most 16 rows times B stored [K, N] reads B in place: 16-, 8- and 4-row tiles,
# 16 columns each (a short last one), k slices of 512 (an odd last pair); each C also as the
# first rows of a 17-row product, which packs B
for i, (M, N, K, trans_a) in enumerate([(16, 2560, 2560, False), (16, 35, 1101, True), (9, 200, 513, False),
                                        (8, 17, 3, True), (4, 1000, 1025, False), (1, 33, 1, False)]):
    a = rng.standard_normal((K, 17) if trans_a else (17, K)).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal((K, N)).astype(ml_dtypes.bfloat16)
    c, c17 = np.full((M, N), np.nan, np.float32), np.full((17, N), np.nan, np.float32)
    _C.matmul(a[:, :M] if trans_a else a[:M], b, c, trans_a=trans_a)
    _C.matmul(a, b, c17, trans_a=trans_a)
    a64 = (a.T if trans_a else a)[:M].astype(np.float64)
    out[f"c{i}"], out[f"p{i}"] = c, c17[:M]
    out[f"r{i}"], out[f"s{i}"] = a64 @ b.astype(np.float64), np.abs(a64) @ np.abs(b.astype(np.float64))
np.savez(PATH, **out)
"""


def test_few_rows_times_b_stored_k_by_n(tmp_path):
    """The in-place reading of B: the same bits at 1 and 2 threads and as the packed path's
    (the same sums in the same order), close to float64."""
    if not fast_bf16():
        pytest.skip("the AVX-512 BF16 kernel only")
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    _run_script(_FEW_ROWS_SCRIPT.replace("PATH", repr(str(one))), OMP_NUM_THREADS="1")
    _run_script(_FEW_ROWS_SCRIPT.replace("PATH", repr(str(two))), OMP_NUM_THREADS="2")
    r1, r2 = np.load(one), np.load(two)
    for i in range(6):
        c = r1[f"c{i}"]
        assert c.tobytes() == r2[f"c{i}"].tobytes(), i
        assert c.tobytes() == r1[f"p{i}"].tobytes(), i
        assert np.all(np.abs(f64(c) - r1[f"r{i}"]) <= 1e-5 * r1[f"s{i}"] + 1e-30), i


# ---------------------------------------------------------------- validation ---------

def valid_args(dtype=F32, c_dtype=F32, batched=False):
    P = (2,) if batched else ()
    return dict(a=np.ones(P + (3, 4), dtype), b=np.ones(P + (4, 5), dtype), c=np.zeros(P + (3, 5), c_dtype),
                bias=np.ones(5, np.float32), residual=np.ones(P + (3, 5), c_dtype),
                preact=np.zeros(P + (3, 5), c_dtype), bias_grad=np.zeros(3, np.float32))


ARRAYS = ["a", "b", "c", "bias", "residual", "preact", "bias_grad"]
OUTPUTS = {"c", "preact", "bias_grad"}


def test_valid_arguments_pass():
    for batched in (False, True):
        for dtype in DTYPES:
            args = valid_args(dtype, dtype, batched)
            _C.matmul(**args, alpha=2, beta=1, activation="gelu")
            np.testing.assert_array_equal(args["bias_grad"], [4 * (2 if batched else 1)] * 3)


# ways to spoil one array argument: kernel_checks' shared ones (a 16-bit a or c is then a
# dtype mismatch that names it) and reversed rows
MUTATIONS = {**kernel_checks.MUTATIONS, "negative stride": (ValueError, lambda a, rng: a[..., ::-1])}



@pytest.mark.fuzz
@FUZZ
@given(name=st.sampled_from(ARRAYS), mutation=st.sampled_from(sorted(MUTATIONS)), seed=st.integers(0, 2**16))
def test_bad_arrays_raise_named_errors(name, mutation, seed):
    kernel_checks.check_mutation(_C.matmul, valid_args(), name, mutation, np.random.default_rng(seed),
                                 MUTATIONS)


def test_transposed_operand_without_the_flag_is_a_shape_error():
    args = valid_args()
    args["a"] = np.ones((4, 3), np.float32)  # [K, M] without trans_a
    with pytest.raises(ValueError) as e:
        _C.matmul(**args)
    assert_names(e, "b")  # a is taken as M=4, K=3, and b's K then disagrees
    args = valid_args()
    args["b"] = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError) as e:
        _C.matmul(**args)
    assert_names(e, "b")
    _C.matmul(**args, trans_b=True)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_read_only_outputs_are_rejected(name):
    args = valid_args()
    args[name] = read_only(args[name])
    with pytest.raises(ValueError, match="writeable") as e:
        _C.matmul(**args)
    assert_names(e, name)


def test_dtype_rules():
    for name, dtype in [("b", F16), ("residual", BF16), ("preact", F16), ("bias", F16), ("bias_grad", BF16),
                        ("bias_grad", F16)]:
        args = valid_args()
        args[name] = args[name].astype(dtype)
        with pytest.raises(TypeError) as e:
            _C.matmul(**args)
        assert_names(e, name)
    args = valid_args(F16, BF16)
    args["bias"] = args["bias"].astype(BF16)  # c's dtype: fine, as is float32
    _C.matmul(**args)
    a = np.ones((3, 4), np.uint16)  # bits are not taken for bfloat16
    with pytest.raises(TypeError) as e:
        _C.matmul(a, np.ones((4, 5), np.uint16), np.zeros((3, 5), np.float32))
    assert_names(e, "a")


def test_batch_rules():
    args = valid_args()
    args["a"] = np.ones((2, 3, 4), np.float32)  # batched a with a 2-D c
    with pytest.raises(ValueError, match="c is 2-D") as e:
        _C.matmul(**args)
    assert_names(e, "a")
    args = valid_args(batched=True)
    args["b"] = np.ones((3, 4, 5), np.float32)  # batch 3 against c's 2
    with pytest.raises(ValueError) as e:
        _C.matmul(**args)
    assert_names(e, "b")
    args = valid_args(batched=True)
    args["c"] = np.lib.stride_tricks.as_strided(np.zeros((3, 5), np.float32), (2, 3, 5), (0, 20, 4))
    with pytest.raises(ValueError, match="overlap") as e:
        _C.matmul(**args)
    assert_names(e, "c")
    args = valid_args()
    args["preact"] = args["preact"][None]
    with pytest.raises(ValueError) as e:
        _C.matmul(**args)
    assert_names(e, "preact")


def test_overlapping_outputs_are_rejected():
    buf = np.zeros(100, np.float32)
    for out, out_view, inp, inp_view in [
            ("c", buf[:15].reshape(3, 5), "a", buf[10:22].reshape(3, 4)),
            ("preact", buf[:15].reshape(3, 5), "b", buf[5:25].reshape(4, 5)),
            ("c", buf[:15].reshape(3, 5), "residual", buf[14:29].reshape(3, 5)),
            ("bias_grad", buf[:3], "bias", buf[2:7]),
            ("c", buf[:15].reshape(3, 5), "preact", buf[10:25].reshape(3, 5))]:
        args = valid_args()
        args[out], args[inp] = out_view, inp_view
        with pytest.raises(ValueError, match="memory shared") as e:
            _C.matmul(**args)
        assert_names(e, out)
        assert_names(e, inp)


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_scales_are_checked(name):
    for bad, error in [(math.inf, ValueError), (-math.inf, ValueError), (math.nan, ValueError),
                       (1e39, ValueError), ("1", TypeError), (None, TypeError), (True, TypeError),
                       (1j, TypeError), (np.ones(2), TypeError)]:
        with pytest.raises(error) as e:
            _C.matmul(**valid_args(), **{name: bad})
        assert_names(e, name)
    _C.matmul(**valid_args(), **{name: np.float32(0.5)})
    _C.matmul(**valid_args(), **{name: 2})


def test_flags_activation_and_stream_are_checked():
    for kw, error, name in [(dict(trans_a=1), TypeError, "trans_a"), (dict(trans_b="yes"), TypeError, "trans_b"),
                            (dict(activation="swish"), ValueError, "activation"),
                            (dict(activation=None), TypeError, "activation"),
                            (dict(stream=-1), ValueError, "stream"), (dict(stream="0"), TypeError, "stream")]:
        with pytest.raises(error) as e:
            _C.matmul(**valid_args(), **kw)
        assert_names(e, name)
    with pytest.raises(TypeError):
        _C.matmul(np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), np.zeros((3, 5), np.float32),
                  False)  # the options are keyword-only


@pytest.mark.skipif(_C.info()["cuda_compiled"], reason="a CUDA build reads the fake pointer's device")
@pytest.mark.parametrize("name", ARRAYS)
def test_cuda_arrays_are_refused_without_cuda(name):
    args = valid_args()
    args[name] = FakeCudaArray(args[name].shape)
    with pytest.raises(ValueError, match="without CUDA") as e:
        _C.matmul(**args)
    assert_names(e, name)


_junk = junk_arguments(0, booleans=True)


@pytest.mark.fuzz
@FUZZ
@given(name=st.sampled_from(ARRAYS + ["trans_a", "trans_b", "alpha", "beta", "activation", "stream"]),
       junk=_junk, batched=st.booleans())
def test_junk_in_any_argument_raises_a_named_error_or_works(name, junk, batched):
    args = valid_args(batched=batched)
    args[name] = junk
    try:
        _C.matmul(**args)
    except (TypeError, ValueError) as e:
        assert re.search(rf"\b{name}\b", str(e)), str(e)


# ---------------------------------------------------------------- the other kernels --

@pytest.mark.parametrize("dtype", [F16, BF16], ids=IDS.get)
def test_float_only_kernels_refuse_16_bit_arrays(dtype):
    x, w, out = np.ones((3, 4), np.float32), np.ones((5, 4), np.float32), np.zeros((3, 5), np.float32)
    for name in ("x", "weight", "out"):
        args = dict(x=x, weight=w, bias=None, out=out, preact=None, activation="none")
        args[name] = args[name].astype(dtype)
        with pytest.raises(TypeError) as e:
            _C.linear_forward(**args)
        assert_names(e, name)
