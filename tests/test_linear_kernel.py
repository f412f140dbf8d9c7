"""unet._C.linear_forward / linear_backward called directly.

The CPU kernel is compared with float64 numpy, the CUDA kernel (``gpu`` tests) with the
CPU kernel; every argument check is exercised, and no bad argument may crash the process.
"""
import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernel_checks
from kernel_checks import FUZZ, FakeCudaArray, assert_names, cupy, junk_arguments, read_only  # noqa: F401 (cupy: fixture)

from unet import _C

ACTIVATIONS = ["none", "relu", "gelu", "tanh", "sigmoid"]
DTYPES = [np.float32, np.float64]
# (M, N, K): zeros in every position, odd primes, and sizes past the CPU GEMM's blocks
# (KC = 512 deep, NC = 4096 wide) and its thread split (over rows; over columns when
# M is small).
SHAPES = [
    (0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0), (1, 1, 1), (3, 7, 17), (17, 3, 7),
    (7, 17, 3), (65, 130, 17), (130, 65, 130), (1, 130, 65), (130, 1, 7), (17, 65, 1),
    (257, 33, 513), (3, 4100, 5), (400, 70, 300), (5, 300, 200),
]

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


def act_grad_ref(name, z):
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "gelu":
        return 0.5 * (1.0 + _erf(z / math.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    return np.ones_like(z)


def tol(dtype, length):
    """Absolute/relative tolerance for sums of `length` products of O(1) values."""
    eps = 2e-6 if dtype == np.float32 else 1e-14
    return eps * max(length, 8)


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def forward(x, w, b, act, preact=True):
    out = np.full((x.shape[0], w.shape[0]), np.nan, x.dtype)
    pre = np.full_like(out, np.nan) if preact else None
    _C.linear_forward(x, w, b, out, pre, act)
    return out, pre


def backward(gy, x, w, pre, act, want=(True, True, True)):
    # Filled with NaN: the kernel must overwrite, never accumulate.
    gx = np.full_like(x, np.nan) if want[0] else None
    gw = np.full_like(w, np.nan) if want[1] else None
    gb = np.full(w.shape[0], np.nan, x.dtype) if want[2] else None
    _C.linear_backward(gy, x, w, pre, act, gx, gw, gb)
    return gx, gw, gb


# ---------------------------------------------------------------- numerics ----------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_matches_float64_reference(shape, act, with_bias, dtype):
    M, N, K = shape
    rng = np.random.default_rng(M * 10007 + N * 101 + K)
    x, w = randn(rng, (M, K), dtype), randn(rng, (N, K), dtype)
    b = randn(rng, (N,), dtype) if with_bias else None
    out, pre = forward(x, w, b, act)
    z = x.astype(np.float64) @ w.astype(np.float64).T
    if with_bias:
        z += b
    t = tol(dtype, K)
    np.testing.assert_allclose(pre, z, rtol=t, atol=t)
    # act applied to the kernel's own z: the comparison isolates the activation
    np.testing.assert_allclose(out, act_ref(act, pre.astype(np.float64)), rtol=t, atol=t)
    np.testing.assert_allclose(out, act_ref(act, z), rtol=10 * t, atol=10 * t)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_backward_matches_float64_reference(shape, act, dtype):
    M, N, K = shape
    rng = np.random.default_rng(M * 7919 + N * 31 + K)
    x, w = randn(rng, (M, K), dtype), randn(rng, (N, K), dtype)
    pre, gy = randn(rng, (M, N), dtype), randn(rng, (M, N), dtype)
    gx, gw, gb = backward(gy, x, w, pre, act)
    g = gy.astype(np.float64) * act_grad_ref(act, pre.astype(np.float64))
    np.testing.assert_allclose(gx, g @ w.astype(np.float64), rtol=tol(dtype, N), atol=tol(dtype, N))
    np.testing.assert_allclose(gw, g.T @ x.astype(np.float64), rtol=tol(dtype, M), atol=tol(dtype, M))
    np.testing.assert_allclose(gb, g.sum(axis=0), rtol=tol(dtype, M), atol=tol(dtype, M))


@pytest.mark.parametrize("want", [(True, False, False), (False, True, False), (False, False, True),
                                  (False, False, False)])
def test_backward_skips_gradients_given_as_none(want):
    rng = np.random.default_rng(0)
    x, w, pre, gy = (randn(rng, s, np.float64) for s in [(6, 5), (4, 5), (6, 4), (6, 4)])
    full = backward(gy, x, w, pre, "tanh")
    part = backward(gy, x, w, pre, "tanh", want)
    for got, ref, wanted in zip(part, full, want):
        assert (got is None) != wanted
        if wanted:
            np.testing.assert_array_equal(got, ref)


def test_activation_none_accepts_missing_preact_and_fills_given_one():
    rng = np.random.default_rng(1)
    x, w, b = randn(rng, (5, 3), np.float64), randn(rng, (4, 3), np.float64), randn(rng, (4,), np.float64)
    out, _ = forward(x, w, b, "none", preact=False)
    out2, pre = forward(x, w, b, "none")
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(out, pre)
    gy = randn(rng, (5, 4), np.float64)
    np.testing.assert_array_equal(backward(gy, x, w, None, "none")[1], gy.T @ x)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_k_zero_gives_activation_of_bias(act):
    b = np.array([-1.5, 0.0, 2.0])
    out, pre = forward(np.zeros((4, 0)), np.zeros((3, 0)), b, act)
    np.testing.assert_array_equal(pre, np.broadcast_to(b, (4, 3)))
    np.testing.assert_allclose(out, np.broadcast_to(act_ref(act, b), (4, 3)), rtol=1e-15)
    out, _ = forward(np.zeros((4, 0)), np.zeros((3, 0)), None, act)
    np.testing.assert_array_equal(out, np.broadcast_to(act_ref(act, np.zeros(3)), (4, 3)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_repeated_calls_are_bitwise_identical(dtype):
    rng = np.random.default_rng(2)
    M, N, K = 300, 200, 600
    x, w, b = randn(rng, (M, K), dtype), randn(rng, (N, K), dtype), randn(rng, (N,), dtype)
    out1, pre1 = forward(x, w, b, "gelu")
    out2, pre2 = forward(x, w, b, "gelu")
    assert out1.tobytes() == out2.tobytes() and pre1.tobytes() == pre2.tobytes()
    gy = randn(rng, (M, N), dtype)
    g1, g2 = backward(gy, x, w, pre1, "gelu"), backward(gy, x, w, pre1, "gelu")
    assert all(a.tobytes() == b.tobytes() for a, b in zip(g1, g2))


_DIGEST_SCRIPT = """
import hashlib, numpy as np
from unet import _C
rng = np.random.default_rng(3)
x, w = rng.standard_normal((300, 600), np.float32), rng.standard_normal((200, 600), np.float32)
b, out, pre = rng.standard_normal(200, np.float32), np.empty((300, 200), np.float32), np.empty((300, 200), np.float32)
_C.linear_forward(x, w, b, out, pre, "relu")
gx, gw, gb = np.empty_like(x), np.empty_like(w), np.empty_like(b)
_C.linear_backward(out, x, w, pre, "relu", gx, gw, gb)
print(hashlib.sha256(b"".join(a.tobytes() for a in (out, pre, gx, gw, gb))).hexdigest())
"""


def test_result_does_not_depend_on_thread_count():
    digests = set()
    for threads in ["1", "2", "3"]:
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        run = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT], env=env, capture_output=True,
                             text=True, check=True)
        digests.add(run.stdout.strip())
    assert len(digests) == 1


_ISA_SCRIPT = """
import math, numpy as np
from unet import _C
print(_C.info()["cpu_gemm_kernel"])
erf = np.vectorize(math.erf)
for dtype, t in [(np.float32, 2e-6), (np.float64, 1e-14)]:
    for M, N, K in [(3, 7, 17), (130, 65, 130), (257, 33, 513), (5, 300, 200)]:
        rng = np.random.default_rng(M + N + K)
        x, w, b, gy = (rng.standard_normal(s).astype(dtype) for s in [(M, K), (N, K), N, (M, N)])
        out, pre = np.empty((M, N), dtype), np.empty((M, N), dtype)
        _C.linear_forward(x, w, b, out, pre, "gelu")
        gx, gw, gb = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        _C.linear_backward(gy, x, w, pre, "gelu", gx, gw, gb)
        x64, w64, z = x.astype(float), w.astype(float), pre.astype(float)
        g = gy * (0.5 * (1 + erf(z / math.sqrt(2))) + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi))
        for got, ref, n in [(pre, x64 @ w64.T + b, K), (out, 0.5 * z * (1 + erf(z / math.sqrt(2))), K),
                            (gx, g @ w64, N), (gw, g.T @ x64, M), (gb, g.sum(0), M)]:
            np.testing.assert_allclose(got, ref, rtol=t * max(n, 8), atol=t * max(n, 8))
"""


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_every_cpu_micro_kernel(isa):
    """Each micro-kernel the CPU supports, forced in a fresh process via UNET_CPU_ISA."""
    flags = _C.info()["cpu_features"]
    if isa != "generic" and not {"avx512": "avx512f" in flags, "avx2": "avx2" in flags and "fma" in flags}[isa]:
        pytest.skip(f"this CPU has no {isa}")
    env = dict(os.environ, UNET_CPU_ISA=isa)
    run = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], env=env, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == isa


def test_info_reports_the_build():
    info = _C.info()
    assert isinstance(info["version"], str) and info["version"]
    assert isinstance(info["cuda_compiled"], bool)
    assert all(isinstance(a, str) for a in info["cuda_archs"])
    assert info["cuda_compiled"] == bool(info["cuda_archs"])
    assert isinstance(info["cpu_features"], list)
    assert info["cpu_gemm_kernel"] in ("avx512", "avx2", "generic")
    assert info["openmp_threads"] >= 1
    for dev in info["cuda_devices"]:
        assert set(dev) == {"name", "compute_capability", "total_memory"}


# ---------------------------------------------------------------- validation --------

FWD_ARRAYS = ["x", "weight", "bias", "out", "preact"]
FWD_OUTPUTS = {"out", "preact"}
BWD_ARRAYS = ["grad_out", "x", "weight", "preact", "grad_x", "grad_weight", "grad_bias"]
BWD_OUTPUTS = {"grad_x", "grad_weight", "grad_bias"}
OPTIONAL = {"bias", "preact", "grad_x", "grad_weight", "grad_bias"}


def valid_forward(M, N, K, dtype, act="relu"):
    return dict(x=np.ones((M, K), dtype), weight=np.ones((N, K), dtype), bias=np.ones(N, dtype),
                out=np.zeros((M, N), dtype), preact=np.zeros((M, N), dtype), activation=act)


def valid_backward(M, N, K, dtype, act="relu"):
    return dict(grad_out=np.ones((M, N), dtype), x=np.ones((M, K), dtype), weight=np.ones((N, K), dtype),
                preact=np.ones((M, N), dtype), activation=act, grad_x=np.zeros((M, K), dtype),
                grad_weight=np.zeros((N, K), dtype), grad_bias=np.zeros(N, dtype))


# the shared mutations, and a datetime array
MUTATIONS = {**kernel_checks.MUTATIONS, "datetime": (TypeError, lambda a, rng: np.zeros(a.shape, "datetime64[s]"))}


def check_mutation(fn, args, name, mutation, rng):
    kernel_checks.check_mutation(fn, args, name, mutation, rng, MUTATIONS)


# Sizes >= 2 so that transposed and strided views really are non-contiguous.
dims = st.integers(min_value=2, max_value=6)


@pytest.mark.fuzz
@FUZZ
@given(M=dims, N=dims, K=dims, dtype=st.sampled_from(DTYPES), name=st.sampled_from(FWD_ARRAYS),
       mutation=st.sampled_from(sorted(MUTATIONS)), seed=st.integers(0, 2**16))
def test_forward_rejects_bad_arrays(M, N, K, dtype, name, mutation, seed):
    check_mutation(_C.linear_forward, valid_forward(M, N, K, dtype), name, mutation,
                   np.random.default_rng(seed))


@pytest.mark.fuzz
@FUZZ
@given(M=dims, N=dims, K=dims, dtype=st.sampled_from(DTYPES), name=st.sampled_from(BWD_ARRAYS),
       mutation=st.sampled_from(sorted(MUTATIONS)), seed=st.integers(0, 2**16))
def test_backward_rejects_bad_arrays(M, N, K, dtype, name, mutation, seed):
    check_mutation(_C.linear_backward, valid_backward(M, N, K, dtype), name, mutation,
                   np.random.default_rng(seed))


@pytest.mark.parametrize("fn,valid,names", [
    (_C.linear_forward, valid_forward, FWD_OUTPUTS), (_C.linear_backward, valid_backward, BWD_OUTPUTS)])
def test_read_only_outputs_are_rejected(fn, valid, names):
    for name in names:
        args = valid(3, 4, 5, np.float64)
        args[name] = read_only(args[name])
        with pytest.raises(ValueError, match="writeable") as excinfo:
            fn(**args)
        assert_names(excinfo, name)


@pytest.mark.parametrize("fn,valid,names", [
    (_C.linear_forward, valid_forward, FWD_ARRAYS), (_C.linear_backward, valid_backward, BWD_ARRAYS)])
def test_none_only_where_allowed(fn, valid, names):
    for name in names:
        args = valid(3, 4, 5, np.float64)
        args[name] = None
        if name in OPTIONAL and name != "preact":
            fn(**args)
            continue
        with pytest.raises((TypeError, ValueError)) as excinfo:  # preact: needed for relu
            fn(**args)
        assert_names(excinfo, name)


@pytest.mark.parametrize("fn,valid", [(_C.linear_forward, valid_forward), (_C.linear_backward, valid_backward)])
def test_activation_is_checked(fn, valid):
    for bad, error in [("swish", ValueError), ("RELU", ValueError), ("", ValueError), (None, TypeError),
                       (1, TypeError), (b"relu", TypeError)]:
        args = valid(2, 3, 4, np.float32)
        args["activation"] = bad
        with pytest.raises(error) as excinfo:
            fn(**args)
        assert_names(excinfo, "activation")


@pytest.mark.parametrize("bad,error", [("0", TypeError), (1.5, TypeError), (None, TypeError),
                                       (-1, ValueError), (2**70, ValueError)])
def test_stream_is_checked(bad, error):
    with pytest.raises(error) as excinfo:
        _C.linear_forward(**valid_forward(2, 3, 4, np.float32), stream=bad)
    assert_names(excinfo, "stream")


def test_outputs_may_not_alias_inputs_or_each_other():
    M = N = K = 4
    args = valid_forward(M, N, K, np.float64)
    for out_name, other in [("out", "x"), ("out", "weight"), ("preact", "x"), ("out", "preact")]:
        a = valid_forward(M, N, K, np.float64)
        a[out_name] = a[other]
        with pytest.raises(ValueError, match="memory shared") as excinfo:
            _C.linear_forward(**a)
        assert_names(excinfo, out_name)
        assert_names(excinfo, other)
    # a partial overlap: two views of one buffer, one row apart
    buf = np.ones((M + 1, K))
    args.update(x=buf[:-1], out=buf[1:])
    with pytest.raises(ValueError, match="memory shared"):
        _C.linear_forward(**args)
    for out_name, other in [("grad_x", "grad_out"), ("grad_weight", "weight"), ("grad_x", "x"),
                            ("grad_x", "grad_weight")]:
        b = valid_backward(M, N, K, np.float64)
        b[out_name] = b[other]
        with pytest.raises(ValueError, match="memory shared") as excinfo:
            _C.linear_backward(**b)
        assert_names(excinfo, out_name)


def test_error_messages_name_the_dimensions():
    args = valid_forward(2, 4, 3, np.float32)
    args["weight"] = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError) as excinfo:
        _C.linear_forward(**args)
    assert str(excinfo.value) == (
        "weight: expected a 2-D array of shape (N, K=3) matching x (M=2, K=3), got shape (4, 5)")


def test_fake_cuda_arrays_are_refused():
    args = valid_forward(2, 3, 4, np.float32)
    args["x"] = FakeCudaArray((2, 4))
    with pytest.raises(ValueError) as excinfo:
        _C.linear_forward(**args)
    assert_names(excinfo, "x")
    if not _C.info()["cuda_compiled"]:
        assert "without CUDA" in str(excinfo.value)


# Anything at all in any argument position: a result or a ValueError/TypeError, never
# a crash. Valid combinations happen and must simply succeed.
_junk = junk_arguments(0)


@pytest.mark.fuzz
@FUZZ
@given(args=st.lists(_junk, min_size=7, max_size=7), act=st.sampled_from(ACTIVATIONS + ["bogus", None]))
def test_never_crashes_on_junk(args, act):
    calls = [(_C.linear_forward, args[:5] + [act]),
             (_C.linear_backward, args[:4] + [act] + args[4:7])]
    for fn, call in calls:
        try:
            fn(*call)
        except (ValueError, TypeError):
            pass


# ---------------------------------------------------------------- CUDA --------------

GPU_SHAPES = SHAPES + [(512, 1024, 1024), (1000, 37, 129)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_cuda_matches_cpu(cupy, act, dtype):
    cp = cupy
    stream = cp.cuda.get_current_stream().ptr
    for M, N, K in GPU_SHAPES:
        rng = np.random.default_rng(M + N + K)
        x, w, b = randn(rng, (M, K), dtype), randn(rng, (N, K), dtype), randn(rng, (N,), dtype)
        out, pre = forward(x, w, b, act)
        d_out, d_pre = cp.full((M, N), cp.nan, dtype), cp.full((M, N), cp.nan, dtype)
        _C.linear_forward(cp.asarray(x), cp.asarray(w), cp.asarray(b), d_out, d_pre, act, stream)
        t = tol(dtype, K)
        np.testing.assert_allclose(cp.asnumpy(d_pre), pre, rtol=t, atol=t, err_msg=f"{M}x{N}x{K}")
        np.testing.assert_allclose(cp.asnumpy(d_out), out, rtol=t, atol=t, err_msg=f"{M}x{N}x{K}")

        gy = randn(rng, (M, N), dtype)
        gx, gw, gb = backward(gy, x, w, pre, act)
        d = [cp.full(a.shape, cp.nan, dtype) for a in (gx, gw, gb)]
        _C.linear_backward(cp.asarray(gy), cp.asarray(x), cp.asarray(w), cp.asarray(pre), act, *d, stream)
        for got, ref, length in zip(d, (gx, gw, gb), (N, M, M)):
            np.testing.assert_allclose(cp.asnumpy(got), ref, rtol=tol(dtype, length), atol=tol(dtype, length),
                                       err_msg=f"{M}x{N}x{K}")


@pytest.mark.gpu
def test_cuda_runs_on_the_given_stream_and_is_deterministic(cupy):
    cp = cupy
    rng = np.random.default_rng(4)
    x, w, b = (cp.asarray(randn(rng, s, np.float32)) for s in [(300, 200), (100, 200), (100,)])
    results = []
    for _ in range(2):
        s = cp.cuda.Stream(non_blocking=True)
        out, pre = cp.empty((300, 100), cp.float32), cp.empty((300, 100), cp.float32)
        with s:
            _C.linear_forward(x, w, b, out, pre, "gelu", s.ptr)
            gx, gw, gb = cp.empty_like(x), cp.empty_like(w), cp.empty_like(b)
            _C.linear_backward(out, x, w, pre, "gelu", gx, gw, gb, s.ptr)
        s.synchronize()
        results.append(hashlib.sha256(b"".join(cp.asnumpy(a).tobytes() for a in (out, pre, gx, gw, gb))).digest())
    assert results[0] == results[1]


@pytest.mark.gpu
def test_cuda_rejects_mixed_devices(cupy):
    cp = cupy
    args = valid_forward(2, 3, 4, np.float32)
    args["x"] = cp.asarray(args["x"])
    with pytest.raises(ValueError, match="no implicit copies") as excinfo:
        _C.linear_forward(**args)
    assert_names(excinfo, "weight")
    strided_gpu = cp.ones((2, 8), cp.float32)[:, ::2]
    args = {k: (cp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    args["x"] = strided_gpu
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.linear_forward(**args)
