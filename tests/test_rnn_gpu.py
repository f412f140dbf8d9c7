"""unet._C.rnn_forward / rnn_backward on CUDA arrays (csrc/cuda/rnn*.cu) against the same
calls on numpy arrays (the CPU kernel, itself tested against torch in test_rnn_kernel.py).

Both CUDA paths are exercised through UNET_RNN_PATH (read by the kernels at every call):
'step' (batched input GEMM, then per step a recurrent GEMM and one fused cell kernel) and
'persistent' (one cooperative kernel for the whole recurrence). A forced 'persistent' runs
that path or raises; it fits every shape here without a projection and with batch <= 32 on
any sm_80+ GPU, and refuses the others (projection, batch > 32). Every output, gradient,
workspace and scratch buffer is poisoned with NaN before each call, so an element the
kernels fail to write shows up; calls run on a non-default stream.
"""
import hashlib
import itertools
import math

import numpy as np
import pytest

from kernel_checks import cupy  # noqa: F401  (a fixture)

from unet import _C

pytestmark = pytest.mark.gpu

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# (mode, with projection)
VARIANTS = [("lstm", False), ("lstm", True), ("gru", False), ("rnn_tanh", False), ("rnn_relu", False)]
DTYPES = [np.float32, np.float64]
I = 19
# (T, B, H): every T in {1, 5, 33}, B in {1, 7, 64}, H in {8, 64, 256} appears, and batch
# 32, the persistent path's largest.
SHAPES = [(1, 1, 8), (5, 7, 64), (33, 64, 256), (33, 1, 256), (5, 64, 8), (1, 7, 64),
          (33, 7, 8), (5, 1, 256), (33, 32, 64)]
GRADS = ["grad_x", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh", "grad_w_hr", "grad_h0",
         "grad_c0"]


@pytest.fixture
def stream(cupy):
    s = cupy.cuda.Stream(non_blocking=True)
    cupy.cuda.Device().synchronize()
    with s:
        yield s
    s.synchronize()


def fits_persistent(B, proj):
    return B <= 32 and not proj


def make_inputs(rng, mode, T, B, H, proj, dtype, lengths="none", bias=True):
    G, P = GATES[mode], (max(1, H // 2) if proj else H)
    s = 1 / math.sqrt(H)
    u = lambda *shape: rng.uniform(-s, s, shape).astype(dtype)
    a = dict(x=rng.standard_normal((T, B, I)).astype(dtype), w_ih=u(G * H, I), w_hh=u(G * H, P),
             b_ih=u(G * H) if bias else None, b_hh=u(G * H) if bias else None,
             w_hr=u(P, H) if proj else None, h0=rng.standard_normal((B, P)).astype(dtype) * 0.5,
             c0=rng.standard_normal((B, H)).astype(dtype) * 0.5 if mode == "lstm" else None,
             lengths=None)
    if lengths == "mixed":  # unsorted, with 1 and T among them
        ln = rng.integers(1, T + 1, B).astype(np.int64)
        ln[rng.integers(B)] = T
        if B > 1:
            ln[(int(np.argmax(ln)) + 1 + rng.integers(B - 1)) % B] = 1
        a["lengths"] = ln
    grads = dict(grad_y=rng.standard_normal((T, B, P)).astype(dtype),
                 grad_h_n=rng.standard_normal((B, P)).astype(dtype),
                 grad_c_n=rng.standard_normal((B, H)).astype(dtype) if mode == "lstm" else None)
    return a, grads, (T, B, H, P)


def run(xp, mode, a, grads, reverse, dims, stream=0, wanted=GRADS):
    """Forward then backward on module xp (numpy: the CPU kernel; cupy: CUDA), every output
    poisoned with NaN first. Returns a dict of the outputs as numpy arrays."""
    T, B, H, P = dims
    dtype = a["x"].dtype
    G = GATES[mode]
    on = lambda v: None if v is None else xp.asarray(v)
    nan = lambda shape: xp.full(shape, np.nan, dtype)
    args = {k: on(v) for k, v in a.items()}
    y, h_n = nan((T, B, P)), nan((B, P))
    c_n = nan((B, H)) if mode == "lstm" else None
    workspace = nan(_C.rnn_workspace_size(mode, T, B, H, P))
    _C.rnn_forward(mode, args["x"], args["w_ih"], args["w_hh"], args["b_ih"], args["b_hh"],
                   args["w_hr"], args["h0"], args["c0"], args["lengths"], reverse, y, h_n, c_n,
                   workspace, stream)
    shapes = dict(grad_x=(T, B, I), grad_w_ih=(G * H, I), grad_w_hh=(G * H, P),
                  grad_b_ih=(G * H,) if a["b_ih"] is not None else None,
                  grad_b_hh=(G * H,) if a["b_hh"] is not None else None,
                  grad_w_hr=(P, H) if a["w_hr"] is not None else None, grad_h0=(B, P),
                  grad_c0=(B, H) if mode == "lstm" else None)
    out = {k: (nan(s) if s is not None and k in wanted else None) for k, s in shapes.items()}
    scratch = nan(_C.rnn_backward_scratch_size(mode, T, B, H, P))
    g = {k: on(v) for k, v in grads.items()}
    _C.rnn_backward(mode, args["x"], args["w_ih"], args["w_hh"], args["b_ih"], args["b_hh"],
                    args["w_hr"], args["h0"], args["c0"], args["lengths"], reverse, y, workspace,
                    g["grad_y"], g["grad_h_n"], g["grad_c_n"], *[out[k] for k in GRADS], scratch,
                    stream)
    out.update(y=y, h_n=h_n, c_n=c_n)
    host = (lambda v: v) if xp is np else (lambda v: xp.asnumpy(v))
    return {k: host(v) for k, v in out.items() if v is not None}


def tolerance(dtype, mode, dims):
    """Summation order differs (tiled GEMMs, k-split warps): error grows like sqrt(K) for the
    longest reduction K, relative to the largest value."""
    T, B, H, P = dims
    K = max(I, P, GATES[mode] * H, T * B)
    return (1e-5 if dtype == np.float32 else 1e-11) * math.sqrt(K)


def assert_close(got, ref, tol, label):
    assert got.keys() == ref.keys(), label
    for k in ref:
        assert np.all(np.isfinite(got[k])), f"{label}: {k} has unwritten (NaN) elements"
        scale = max(1.0, float(np.abs(ref[k]).max(initial=0)))
        np.testing.assert_allclose(got[k], ref[k], rtol=tol, atol=tol * scale, err_msg=f"{label}: {k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("mode, proj", VARIANTS, ids=[m + ("_proj" if p else "") for m, p in VARIANTS])
def test_cuda_matches_cpu(cupy, stream, monkeypatch, mode, proj, dtype):
    rng = np.random.default_rng([sum(map(ord, mode)), proj, dtype == np.float32])
    cases = itertools.product(SHAPES, [False, True], ["none", "mixed"])
    for (T, B, H), reverse, lengths in cases:
        a, grads, dims = make_inputs(rng, mode, T, B, H, proj, dtype, lengths, bias=(T, B) != (5, 7))
        ref = run(np, mode, a, grads, reverse, dims)
        tol = tolerance(dtype, mode, dims)
        for path in ["step", "persistent"]:
            monkeypatch.setenv("UNET_RNN_PATH", path)
            label = f"{mode} proj={proj} T={T} B={B} H={H} reverse={reverse} lengths={lengths} {path}"
            if path == "persistent" and not fits_persistent(B, proj):
                with pytest.raises(RuntimeError, match="UNET_RNN_PATH=persistent"):
                    run(cupy, mode, a, grads, reverse, dims, stream.ptr)
                continue
            assert_close(run(cupy, mode, a, grads, reverse, dims, stream.ptr), ref, tol, label)


@pytest.mark.parametrize("mode", list(GATES))
def test_cuda_default_path_matches_cpu(cupy, stream, monkeypatch, mode):
    """No UNET_RNN_PATH: the dispatcher picks per shape (persistent when it fits)."""
    monkeypatch.delenv("UNET_RNN_PATH", raising=False)
    rng = np.random.default_rng(3)
    for T, B, H in [(6, 3, 40), (4, 48, 72), (7, 32, 130)]:
        for proj in ([False, True] if mode == "lstm" else [False]):
            a, grads, dims = make_inputs(rng, mode, T, B, H, proj, np.float32, "mixed")
            assert_close(run(cupy, mode, a, grads, True, dims, stream.ptr),
                         run(np, mode, a, grads, True, dims), tolerance(np.float32, mode, dims),
                         f"{mode} T={T} B={B} H={H} proj={proj}")


@pytest.mark.parametrize("mode", list(GATES))
def test_cuda_paths_share_the_workspace(cupy, stream, monkeypatch, mode):
    """Forward on one path, backward on the other: the workspace layout is the same."""
    rng = np.random.default_rng(4)
    a, grads, dims = make_inputs(rng, mode, 9, 5, 33, False, np.float64, "mixed")
    ref = run(np, mode, a, grads, False, dims)
    real_backward = _C.rnn_backward
    for fwd_path, bwd_path in [("step", "persistent"), ("persistent", "step")]:
        def backward_on_other_path(*args):
            monkeypatch.setenv("UNET_RNN_PATH", bwd_path)
            return real_backward(*args)
        monkeypatch.setenv("UNET_RNN_PATH", fwd_path)
        monkeypatch.setattr(_C, "rnn_backward", backward_on_other_path)
        got = run(cupy, mode, a, grads, False, dims, stream.ptr)
        monkeypatch.setattr(_C, "rnn_backward", real_backward)
        assert_close(got, ref, tolerance(np.float64, mode, dims), f"{fwd_path} -> {bwd_path}")


@pytest.mark.parametrize("path", ["step", "persistent"])
def test_cuda_optional_gradients(cupy, stream, monkeypatch, path):
    """Each gradient is optional; grad_h_n / grad_c_n None mean zeros."""
    monkeypatch.setenv("UNET_RNN_PATH", path)
    rng = np.random.default_rng(5)
    for mode in GATES:
        a, grads, dims = make_inputs(rng, mode, 6, 4, 24, False, np.float64, "mixed")
        tol = tolerance(np.float64, mode, dims)
        for wanted in [[], ["grad_x"], ["grad_w_hh", "grad_b_ih"], ["grad_h0"], ["grad_c0", "grad_w_ih"]]:
            ref = run(np, mode, a, grads, True, dims, wanted=wanted)
            assert_close(run(cupy, mode, a, grads, True, dims, stream.ptr, wanted), ref, tol, f"{mode} {wanted}")
        no_state_grads = dict(grads, grad_h_n=None, grad_c_n=None)
        assert_close(run(cupy, mode, a, no_state_grads, False, dims, stream.ptr),
                     run(np, mode, a, no_state_grads, False, dims), tol, f"{mode} no grad_h_n")


@pytest.mark.parametrize("path", ["step", "persistent"])
def test_cuda_is_deterministic(cupy, monkeypatch, path):
    """Bitwise the same twice, each time on a fresh non-default stream."""
    monkeypatch.setenv("UNET_RNN_PATH", path)
    rng = np.random.default_rng(6)
    for mode, proj in VARIANTS:
        B = 64 if path == "step" else 16
        if proj and path == "persistent":
            continue
        a, grads, dims = make_inputs(rng, mode, 17, B, 96, proj, np.float32, "mixed")
        digests = []
        for _ in range(2):
            s = cupy.cuda.Stream(non_blocking=True)
            cupy.cuda.Device().synchronize()
            with s:
                out = run(cupy, mode, a, grads, True, dims, s.ptr)
            digests.append(hashlib.sha256(b"".join(out[k].tobytes() for k in sorted(out))).digest())
        assert digests[0] == digests[1], f"{mode} proj={proj}"


def test_cuda_wide_shapes_per_step(cupy, stream, monkeypatch):
    """Sizes that are not multiples of the GEMM tiles, batch beyond one row tile."""
    monkeypatch.setenv("UNET_RNN_PATH", "step")
    rng = np.random.default_rng(7)
    for mode, proj in VARIANTS:
        a, grads, dims = make_inputs(rng, mode, 3, 100, 150, proj, np.float32, "mixed")
        assert_close(run(cupy, mode, a, grads, False, dims, stream.ptr),
                     run(np, mode, a, grads, False, dims), tolerance(np.float32, mode, dims), mode)


@pytest.mark.parametrize("path", ["step", "auto"])
def test_cuda_zero_steps(cupy, stream, monkeypatch, path):
    """T == 0: h_n = h0, c_n = c0, grad_h0 = grad_h_n, grad_c0 = grad_c_n, weight gradients 0."""
    monkeypatch.setenv("UNET_RNN_PATH", path)
    rng = np.random.default_rng(8)
    for mode in GATES:
        a, grads, dims = make_inputs(rng, mode, 0, 3, 8, False, np.float64)
        got = run(cupy, mode, a, grads, False, dims, stream.ptr)
        np.testing.assert_array_equal(got["h_n"], a["h0"])
        np.testing.assert_array_equal(got["grad_h0"], grads["grad_h_n"])
        if mode == "lstm":
            np.testing.assert_array_equal(got["c_n"], a["c0"])
            np.testing.assert_array_equal(got["grad_c0"], grads["grad_c_n"])
        for k in ["grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh"]:
            assert not got[k].any(), k


@pytest.mark.parametrize("path", ["step", "persistent"])
def test_cuda_out_of_range_lengths_are_safe(cupy, stream, monkeypatch, path):
    """CUDA lengths cannot be checked by the binding (no hidden copies); values outside
    [1, T] must not crash or read out of bounds: 0 means no valid step, > T all steps."""
    monkeypatch.setenv("UNET_RNN_PATH", path)
    rng = np.random.default_rng(9)
    a, grads, dims = make_inputs(rng, "lstm", 5, 4, 16, False, np.float32)
    a["lengths"] = np.array([0, 5, 1000, -7], np.int64)
    got = run(cupy, "lstm", a, grads, False, dims, stream.ptr)
    for k, v in got.items():
        assert np.all(np.isfinite(v)), k
    assert not got["y"][:, [0, 3]].any()
    np.testing.assert_array_equal(got["h_n"][[0, 3]], a["h0"][[0, 3]])
    clipped = dict(a, lengths=np.array([5, 5, 5, 5], np.int64))
    ref = run(np, "lstm", clipped, grads, False, dims)
    np.testing.assert_allclose(got["y"][:, [1, 2]], ref["y"][:, [1, 2]], rtol=1e-4, atol=1e-5)


def test_cuda_rejects_a_bad_path_name(cupy, stream, monkeypatch):
    monkeypatch.setenv("UNET_RNN_PATH", "fastest")
    rng = np.random.default_rng(10)
    a, grads, dims = make_inputs(rng, "gru", 2, 2, 8, False, np.float32)
    with pytest.raises(ValueError, match="UNET_RNN_PATH"):
        run(cupy, "gru", a, grads, False, dims, stream.ptr)
