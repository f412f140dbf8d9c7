"""The recurrent layers' input projection under autocast: ``projection_dtype`` of
unet._C.rnn_forward / rnn_ln_forward (RnnForwardArgs in csrc/include/unet/rnn.h; CPU
csrc/cpu/rnn_projection.cpp, CUDA csrc/cuda/rnn_projection.cu).

With x and w_ih holding 16-bit values (autocast rounded them), x W_ih^T runs on the
mixed-precision matmul: the same exact products as the float32 kernel, summed in float32 in
another order. So the results agree with a float64 computation on the rounded values at
float32-accumulation tolerances, and with the float32 kernel on those values within a few
float32 rounding steps. On this CPU bfloat16 takes matmul's AVX-512 BF16 kernel where the
CPU has it (the result then differs in the last bits from the float32 kernel's: proof that
it ran); float16, and bfloat16 elsewhere, run the float32 GEMM itself (bitwise equal).
The CUDA tests (marked gpu) compare the tensor-core projection with the CPU.
"""
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
from kernel_checks import cupy  # noqa: F401  (a fixture)
from reference_rnn import composed_rnn_ln

import unet
import unet.functional as F
from unet import _C, amp, nn
from unet.functional.rnn_ln import LAYER_NORM_NAMES

LOW = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
AMP = {"bfloat16": "bf16", "float16": "fp16"}
NATIVE_BF16 = _C.info()["cpu_matmul_bf16_kernel"] == "avx512bf16"
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# (mode, with an LSTM projection)
VARIANTS = [("lstm", False), ("lstm", True), ("gru", False), ("rnn_tanh", False), ("rnn_relu", False)]
GRADS = ["grad_x", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh", "grad_w_hr", "grad_h0", "grad_c0"]


def rounded(a, name):
    """a's values rounded to the 16-bit dtype `name`, stored as float32."""
    return a.astype(LOW[name]).astype(np.float32)


def layer_inputs(rng, mode, proj, name, T=6, B=5, I=40, H=24, lengths=False):
    """rnn_forward's inputs, float32 arrays whose x and weights hold `name` values (as
    autocast leaves them); h0 and c0 plain float32. Returns (inputs, reverse, (T, B, H, P))."""
    G, P = GATES[mode], (H // 2 if proj else H)
    u = lambda *shape: rounded(rng.uniform(-0.3, 0.3, shape), name)
    a = dict(x=rounded(rng.standard_normal((T, B, I)), name), w_ih=u(G * H, I), w_hh=u(G * H, P),
             b_ih=u(G * H), b_hh=u(G * H), w_hr=u(P, H) if proj else None,
             h0=(rng.standard_normal((B, P)) * 0.5).astype(np.float32),
             c0=(rng.standard_normal((B, H)) * 0.5).astype(np.float32) if mode == "lstm" else None,
             lengths=None)
    if lengths:  # unsorted, 1 and T among them; run in reverse
        a["lengths"] = np.array([T, 1] + list(rng.integers(1, T + 1, B - 2)), np.int64)
    return a, lengths, (T, B, H, P)


def run(xp, mode, a, reverse, dims, dtype, projection_dtype=None, stream=0):
    """rnn_forward then rnn_backward (fixed output gradients) in `dtype` on array module xp;
    the outputs as float64 numpy arrays."""
    T, B, H, P = dims
    G, I = GATES[mode], a["x"].shape[2]
    on = lambda v: None if v is None else xp.asarray(v if v.dtype == np.int64 else v.astype(dtype))
    args = {k: on(v) for k, v in a.items()}
    nan = lambda *shape: xp.full(shape, np.nan, dtype)
    y, h_n, c_n = nan(T, B, P), nan(B, P), nan(B, H) if mode == "lstm" else None
    workspace = nan(_C.rnn_workspace_size(mode, T, B, H, P))
    layer = [args[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "h0", "c0", "lengths")]
    _C.rnn_forward(mode, *layer, reverse, y, h_n, c_n, workspace, stream,
                   projection_dtype=projection_dtype)
    g = np.random.default_rng(99)
    grad_y, grad_h_n = g.standard_normal((T, B, P)), g.standard_normal((B, P))
    grad_c_n = g.standard_normal((B, H)) if mode == "lstm" else None
    shapes = dict(grad_x=(T, B, I), grad_w_ih=(G * H, I), grad_w_hh=(G * H, P), grad_b_ih=(G * H,),
                  grad_b_hh=(G * H,), grad_w_hr=(P, H) if a["w_hr"] is not None else None,
                  grad_h0=(B, P), grad_c0=(B, H) if mode == "lstm" else None)
    grads = {k: None if s is None else nan(*s) for k, s in shapes.items()}
    scratch = nan(_C.rnn_backward_scratch_size(mode, T, B, H, P))
    _C.rnn_backward(mode, *layer, reverse, y, workspace, on(grad_y), on(grad_h_n), on(grad_c_n),
                    *[grads[k] for k in GRADS], scratch, stream)
    out = dict(grads, y=y, h_n=h_n, c_n=c_n)
    host = (lambda v: v) if xp is np else xp.asnumpy
    return {k: host(v).astype(np.float64) for k, v in out.items() if v is not None}


def assert_close(ours, ref, rtol, what=""):
    """Elementwise within rtol of the reference's largest magnitude (float32 sums of many terms
    are accurate relative to the terms, not to a small result)."""
    for k, v in ref.items():
        scale = max(np.abs(v).max(initial=0.0), 1e-30)
        np.testing.assert_allclose(ours[k], v, rtol=rtol, atol=rtol * scale, err_msg=f"{what} {k}")


# ------------------------------------------------------------------ kernel, CPU -----

@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("mode,proj", VARIANTS)
@pytest.mark.parametrize("lengths", [False, True])
def test_projection_matches_float64_on_rounded_values(name, mode, proj, lengths):
    a, reverse, dims = layer_inputs(np.random.default_rng(1), mode, proj, name, lengths=lengths)
    ours = run(np, mode, a, reverse, dims, np.float32, projection_dtype=name)
    ref = run(np, mode, a, reverse, dims, np.float64)
    plain = run(np, mode, a, reverse, dims, np.float32)
    assert_close(ours, ref, 5e-6, "vs float64")
    assert_close(ours, plain, 1e-6, "vs the float32 kernel")
    if name == "bfloat16" and NATIVE_BF16:  # the AVX-512 BF16 kernel ran: another summation order
        assert not np.array_equal(ours["y"], plain["y"])
    else:  # the float32 GEMM itself ran
        for k in plain:
            np.testing.assert_array_equal(ours[k], plain[k], err_msg=k)


def test_cpu_takes_the_bf16_kernel_where_there_is_one():
    cpu_flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if "avx512_bf16" in cpu_flags and os.environ.get("UNET_CPU_ISA", "") in ("", "auto", "avx512"):
        assert NATIVE_BF16
    # the projection's own result: one step of a plain RNN with zero state is act(x W_ih^T + b_ih + b_hh)
    rng = np.random.default_rng(2)
    a, _, dims = layer_inputs(rng, "rnn_relu", False, "bfloat16", T=1, B=33, I=72, H=50)
    a["h0"][:] = 0
    y = run(np, "rnn_relu", a, False, dims, np.float32, projection_dtype="bfloat16")["y"][0]
    x64, w64 = a["x"][0].astype(np.float64), a["w_ih"].astype(np.float64)
    ref = np.maximum(x64 @ w64.T + a["b_ih"] + a["b_hh"], 0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_projection_is_deterministic_and_independent_of_the_thread_count():
    script = f"""
import hashlib, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import numpy as np
from test_rnn_projection_amp import layer_inputs, run
outs = []
for name in ("bfloat16", "float16"):
    a, reverse, dims = layer_inputs(np.random.default_rng(3), "lstm", False, name, T=12, B=50, I=128, H=128,
                                    lengths=True)
    for _ in range(2):
        outs += list(run(np, "lstm", a, reverse, dims, np.float32, projection_dtype=name).values())
print(hashlib.sha256(b"".join(o.tobytes() for o in outs)).hexdigest())
"""
    digests = set()
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout.strip())
    assert len(digests) == 1
    a, reverse, dims = layer_inputs(np.random.default_rng(3), "gru", False, "bfloat16", lengths=True)
    first, second = (run(np, "gru", a, reverse, dims, np.float32, projection_dtype="bfloat16") for _ in "ab")
    for k in first:
        np.testing.assert_array_equal(first[k], second[k], err_msg=k)


# ------------------------------------------------------------------ the layers under autocast -----

@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_autocast_asks_the_kernels_for_the_16bit_projection(monkeypatch, name):
    """The projection_dtype each kernel call gets (the last positional argument): the autocast
    dtype for float32 layers inside autocast, None outside it and for float64 layers."""
    asked = []
    for fn in ("rnn_forward", "rnn_ln_forward"):
        real = getattr(_C, fn)
        monkeypatch.setattr(_C, fn, lambda *args, _real=real: (asked.append(args[-1]), _real(*args))[1])
    x = unet.randn(3, 2, 5)
    layers = [nn.GRU(5, 4), nn.LSTM(5, 4, layer_norm=True)]
    with amp.autocast(AMP[name]):
        for layer in layers:
            layer(x)
        nn.LSTM(5, 4, dtype="float64")(x.to(unet.float64))
    for layer in layers:
        layer(x)
    assert asked == [name, name, None, None, None]


def _torch_pair(kind, name, I=24, H=32):
    """(unet module, float64 torch module on the unet module's rounded weights)."""
    cls, tcls, kw = {"lstm": (nn.LSTM, torch.nn.LSTM, {}), "gru": (nn.GRU, torch.nn.GRU, {}),
                     "rnn_tanh": (nn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"})}[kind]
    unet.manual_seed(11)
    ours = cls(I, H, bidirectional=True, **kw)
    theirs = tcls(I, H, bidirectional=True, **kw).double()
    theirs.load_state_dict({k: torch.tensor(rounded(v.numpy(), name).astype(np.float64))
                            for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_layers_under_autocast_match_torch_float64_on_rounded_values(name, kind):
    ours, theirs = _torch_pair(kind, name)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 4, 24)).astype(np.float32)
    xu = unet.tensor(x, requires_grad=True)
    with amp.autocast(AMP[name]):
        y = ours(xu)[0]
    assert y.dtype == unet.float32
    xt = torch.tensor(rounded(x, name).astype(np.float64), requires_grad=True)
    yt = theirs(xt)[0]
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    yt.backward(torch.tensor(g.astype(np.float64)))
    assert_close({"y": y.numpy(), "grad_x": xu.grad.numpy()},
                 {"y": yt.detach().numpy(), "grad_x": xt.grad.numpy()}, 5e-6)
    grads = dict(theirs.named_parameters())
    for pname, p in ours.named_parameters():
        assert p.grad.dtype == unet.float32
        assert_close({pname: p.grad.numpy()}, {pname: grads[pname].grad.numpy()}, 5e-6)


def _ln_layer(rng, mode, name, T=6, B=4, I=40, H=16):
    """F.rnn_ln's arguments as float32 Tensors (x, h0, c0, weights, layer-norm parameters)."""
    G = 4 if mode == "lstm" else 3
    t = lambda *shape, s=0.4, c=0.0: unet.tensor((rng.standard_normal(shape) * s + c).astype(np.float32),
                                                 requires_grad=True)
    ln = None
    if mode == "lstm":
        ln = tuple(t(n, s=0.3, c=1.0 if "weight" in k else 0.0)
                   for k, n in zip(LAYER_NORM_NAMES, (G * H,) * 4 + (H,) * 2))
    return (t(T, B, I, s=1.0), t(B, H, s=0.5), t(B, H, s=0.5) if mode == "lstm" else None,
            [t(G * H, I), t(G * H, H), t(G * H, s=0.3), t(G * H, s=0.3)], ln)


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_rnn_ln_under_autocast_matches_float64_on_rounded_values(name, mode):
    rng = np.random.default_rng(5)
    x, h0, c0, weights, ln = _ln_layer(rng, mode, name)
    T, B, H = x.shape[0], x.shape[1], h0.shape[1]
    keep_h = (rng.random((T, B, H)) < 0.3).astype(np.float32)
    lengths, g = [6, 2, 5, 1], rng.standard_normal((T, B, H)).astype(np.float32)

    def call(fn, x_, h0_, c0_, w_, ln_):
        keep = keep_h.astype(x_.dtype)
        return fn(mode, x_, h0_, c0_, w_, layer_norm=ln_, keep_h=keep, lengths=lengths, reverse=True)[0]

    leaves = [x, h0] + ([c0] if c0 is not None else []) + weights + list(ln or ())
    with amp.autocast(AMP[name]):
        y = call(F.rnn_ln, x, h0, c0, weights, ln)
    y.backward(g)
    ours = {"y": y.numpy()} | {f"grad{k}": t.grad.numpy() for k, t in enumerate(leaves)}

    # float64 reference on what autocast rounds: x, h0, the weights and biases (c0 and the
    # layer-norm parameters are not matrix-product inputs)
    def as64(t, rnd):
        v = t.numpy()
        return unet.tensor((rounded(v, name) if rnd else v).astype(np.float64), requires_grad=True)

    x64, h64 = as64(x, True), as64(h0, True)
    c64 = as64(c0, False) if c0 is not None else None
    w64 = [as64(w, True) for w in weights]
    ln64 = tuple(as64(p, False) for p in ln) if ln else None
    y64 = call(composed_rnn_ln, x64, h64, c64, w64, ln64)
    y64.backward(g.astype(np.float64))
    leaves64 = [x64, h64] + ([c64] if c64 is not None else []) + w64 + list(ln64 or ())
    ref = {"y": y64.numpy()} | {f"grad{k}": t.grad.numpy() for k, t in enumerate(leaves64)}
    assert_close(ours, ref, 5e-6)
    # the float32 layer without autocast on the rounded values: which projection ran
    as32 = lambda t: unet.tensor(t.numpy().astype(np.float32)) if t is not None else None
    plain = call(F.rnn_ln, as32(x64), as32(h64), as32(c64), [as32(w) for w in w64],
                 tuple(map(as32, ln64)) if ln64 else None).numpy()
    if name == "bfloat16" and NATIVE_BF16:
        assert not np.array_equal(ours["y"], plain)
    else:
        np.testing.assert_array_equal(ours["y"], plain)


# ------------------------------------------------------------------ binding errors -----

def _raises(error, fn, *words):
    with pytest.raises(error) as info:
        fn()
    for w in ("projection_dtype",) + words:
        assert w in str(info.value), str(info.value)


def _rnn_call(dtype, projection_dtype):
    a, _, dims = layer_inputs(np.random.default_rng(6), "gru", False, "bfloat16", T=2, B=2, I=3, H=4)
    T, B, H, P = dims
    a = {k: v if v is None or v.dtype == np.int64 else v.astype(dtype) for k, v in a.items()}
    return lambda: _C.rnn_forward("gru", a["x"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], None, a["h0"],
                                  None, None, False, np.empty((T, B, P), dtype), np.empty((B, P), dtype), None,
                                  np.empty(_C.rnn_workspace_size("gru", T, B, H, P), dtype),
                                  projection_dtype=projection_dtype)


def _rnn_ln_call(dtype, projection_dtype):
    T, B, I, H = 2, 2, 3, 4
    r = np.random.default_rng(7)
    f = lambda *s: r.standard_normal(s).astype(dtype)
    args = dict(mode="gru", x=f(T, B, I), w_ih=f(3 * H, I), w_hh=f(3 * H, H), b_ih=None, b_hh=None, h0=f(B, H),
                c0=None, lengths=None, reverse=False, eps=1e-5, keep_h=None, keep_c=None, y=np.empty((T, B, H), dtype),
                h_n=np.empty((B, H), dtype), c_n=None,
                workspace=np.empty(_C.rnn_ln_workspace_size("gru", T, B, H, False), dtype))
    args.update({k: None for k in LAYER_NORM_NAMES})
    return lambda: _C.rnn_ln_forward(**args, projection_dtype=projection_dtype)


@pytest.mark.parametrize("call", [_rnn_call, _rnn_ln_call])
def test_projection_dtype_is_checked(call):
    _raises(TypeError, call(np.float32, 16), "'bfloat16'", "int")
    _raises(TypeError, call(np.float32, np.float16), "'float16'")
    _raises(ValueError, call(np.float32, "bf16"), "'bf16'")
    _raises(ValueError, call(np.float32, "float32"), "'float32'")
    _raises(ValueError, call(np.float64, "bfloat16"), "float64")
    for ok in (None, "float16", "bfloat16"):
        call(np.float32, ok)()
    call(np.float64, None)()


# ------------------------------------------------------------------ CUDA against the CPU -----

@pytest.mark.gpu
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("mode,proj", VARIANTS)
@pytest.mark.parametrize("I", [40, 37])  # 37: rows of the 16-bit copies padded to 16 bytes
@pytest.mark.parametrize("path", ["step", "persistent"])
def test_cuda_projection_matches_cpu(cupy, monkeypatch, name, mode, proj, I, path):
    if path == "persistent" and proj:
        pytest.skip("the persistent path has no projection")
    monkeypatch.setenv("UNET_RNN_PATH", path)
    a, reverse, dims = layer_inputs(np.random.default_rng(8), mode, proj, name, I=I, H=64, lengths=True)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:  # the arrays are made and read on the stream the kernels run on
        ours = run(cupy, mode, a, reverse, dims, np.float32, projection_dtype=name, stream=stream.ptr)
        again = run(cupy, mode, a, reverse, dims, np.float32, projection_dtype=name, stream=stream.ptr)
    cpu = run(np, mode, a, reverse, dims, np.float32, projection_dtype=name)
    assert_close(ours, cpu, 1e-4)  # both float32 sums of the same products; tanh, sigmoid differ in ulps
    for k in ours:  # run-to-run identical
        np.testing.assert_array_equal(ours[k], again[k], err_msg=k)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_cuda_rnn_ln_under_autocast_matches_cpu(cupy, name, mode):
    results = []
    for device in ("cpu", "cuda"):
        x, h0, c0, weights, ln = _ln_layer(np.random.default_rng(9), mode, name)
        leaves = [x, h0] + ([c0] if c0 is not None else []) + weights + list(ln or ())
        leaves = [unet.tensor(t.numpy(), device=device, requires_grad=True) for t in leaves]
        x, h0 = leaves[:2]
        c0 = leaves[2] if mode == "lstm" else None
        k = 3 if mode == "lstm" else 2
        weights, ln = leaves[k:k + 4], (tuple(leaves[k + 4:]) or None)
        with amp.autocast(AMP[name]):
            y = F.rnn_ln(mode, x, h0, c0, weights, layer_norm=ln, lengths=[6, 2, 5, 1], reverse=True)[0]
        y.sum().backward()
        results.append({"y": y.numpy()} | {f"grad{i}": t.grad.numpy() for i, t in enumerate(leaves)})
    assert_close(results[1], results[0], 1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_cuda_lstm_under_autocast_matches_cpu(cupy, name):
    unet.manual_seed(12)
    model = nn.LSTM(40, 64, num_layers=2, bidirectional=True)
    x = np.random.default_rng(10).standard_normal((9, 5, 40)).astype(np.float32)
    outs = []
    for device in ("cpu", "cuda"):
        model.to(device)
        model.zero_grad()
        xt = unet.tensor(x, device=device, requires_grad=True)
        with amp.autocast(AMP[name]):
            y = model(xt, lengths=[9, 4, 1, 7, 9])[0]
        y.sum().backward()
        outs.append({"y": y.numpy(), "grad_x": xt.grad.numpy()} |
                    {k: p.grad.numpy() for k, p in model.named_parameters()})
    assert_close(outs[1], outs[0], 1e-4)
