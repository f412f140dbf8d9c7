"""unet._C.matmul on CUDA arrays (csrc/cuda/matmul*.cu) against the same call on numpy
arrays (the CPU kernel, itself tested against float64 in test_matmul_kernel.py).

Every CUDA path runs every case: UNET_MATMUL_PATH is read once per process, so each
forced path (sm90 on compute capability 9.x, sm80 on 8.0 and later, simt everywhere) runs
the whole case list in a child process (this file run as a script), and each case is
reported as its own test; `auto` runs in this process. A forced path takes what it can
and hands the rest down (sm90 -> sm80 -> simt), so the unaligned and fp32 cases check the
fallbacks under every setting. Cases: every transpose pair and input/output dtype pair,
every epilogue part, sizes 1, 7, 129, 4095, row-padded and misaligned operands, batches
with shared (stride 0) operands, skinny long-K shapes that split K, K = 0, and squares
of several waves. Inputs carry NaN in their row padding (a kernel that reads past a row
brings it in); outputs start as NaN (beta = 0: c is not read) and their padding must stay
NaN. Calls run on a non-default stream.
"""
import functools
import itertools
import json
import math
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from kernel_checks import cupy  # noqa: F401  (a fixture)

from unet import _C

pytestmark = pytest.mark.gpu

DTYPES = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16)}
# The largest spacing of each output dtype relative to a value: one rounding flip.
ULP = {"f32": 2.0**-23, "f16": 2.0**-10, "bf16": 2.0**-7}
ACTIVATIONS = ["none", "relu", "gelu", "tanh", "sigmoid"]
DEFAULT = dict(M=1, N=1, K=1, batch=0, ta=False, tb=False, ab="f32", c="f32", alpha=1.0, beta=0.0, bias=None,
               act="none", residual=False, preact=False, bias_grad=False, pad=0, offset=0, share=None)


def _case_id(c):
    layout = ("T" if c["ta"] else "N") + ("T" if c["tb"] else "N")
    parts = [f"{c['M']}x{c['N']}x{c['K']}", f"{c['ab']}-{c['c']}", layout]
    if c["batch"]:
        parts.append(f"b{c['batch']}" + (f"-shared_{c['share']}" if c["share"] else ""))
    if c["bias"]:
        parts.append(f"bias_{c['bias']}")
    for k in ("residual", "preact", "bias_grad"):
        if c[k]:
            parts.append(k)
    if c["act"] != "none":
        parts.append(c["act"])
    if c["alpha"] != 1.0 or c["beta"] != 0.0:
        parts.append(f"a{c['alpha']}b{c['beta']}")
    if c["pad"] or c["offset"]:
        parts.append(f"pad{c['pad']}off{c['offset']}")
    return "-".join(parts)


def _cases():
    cases = []

    def add(**kw):
        case = dict(DEFAULT, **kw)
        case["id"] = _case_id(case)
        assert case["id"] not in {c["id"] for c in cases}, case["id"]
        cases.append(case)

    transposes = list(itertools.product([False, True], repeat=2))
    # Every transpose pair for every input dtype and output dtype it pairs with.
    for ab in DTYPES:
        for c in sorted({"f32", ab}):
            for ta, tb in transposes:
                add(M=129, N=257, K=200, ab=ab, c=c, ta=ta, tb=tb)
    # The whole epilogue with each activation, on the sm90 layout (NT) and an sm80-only one.
    for act, (ta, tb) in zip(ACTIVATIONS, [(False, True), (True, False), (False, True), (False, False), (True, True)]):
        add(M=70, N=136, K=96, ab="bf16", c="bf16", ta=ta, tb=tb, act=act, bias="f32", residual=True,
            preact=True, bias_grad=True, alpha=0.5, beta=-1.5)
    add(M=70, N=136, K=96, ab="f16", c="f16", tb=True, act="gelu", bias="c", residual=True, preact=True,
        bias_grad=True, alpha=2.0, beta=0.25)
    add(M=70, N=136, K=96, ab="f32", c="f32", act="tanh", bias="f32", residual=True, preact=True,
        bias_grad=True, alpha=0.5, beta=-1.5)
    # Sizes 1, 7, 129, 4095 in every position.
    for M, N, K in [(1, 1, 1), (7, 7, 7), (1, 129, 4095), (4095, 7, 129), (129, 1, 4095), (7, 4095, 33),
                    (4095, 129, 7)]:
        for ab in ("f32", "bf16"):
            for ta, tb in [(False, True), (True, False)]:
                add(M=M, N=N, K=K, ab=ab, c=ab, ta=ta, tb=tb, bias="f32", bias_grad=True)
    # Rows padded to a leading dimension that is not a multiple of 8, data 2 bytes off a
    # 16-byte boundary, and aligned padding (the tensor-core paths take only the last).
    for pad, offset in [(3, 0), (0, 1), (8, 0)]:
        for ab in ("f16", "f32"):
            for ta, tb in [(False, True), (True, False)]:
                add(M=65, N=130, K=72, ab=ab, c=ab, ta=ta, tb=tb, pad=pad, offset=offset, preact=True,
                    bias_grad=True, beta=1.0, bias="f32")
    # Batches, with a or b shared by every item (2-D next to a 3-D c: batch stride 0).
    for share in (None, "a", "b"):
        for ab, (ta, tb) in [("bf16", (False, True)), ("f16", (True, False)), ("f32", (False, False))]:
            add(batch=3, M=65, N=129, K=80, ab=ab, c="f32", ta=ta, tb=tb, share=share, residual=True,
                bias_grad=True, bias="f32")
    add(batch=2, M=64, N=64, K=4096, ab="bf16", c="bf16", tb=True, bias_grad=True)  # batched split-K
    # Skinny long-K shapes (DeepBench-like): K is split.
    for M, N, K in [(16, 512, 4096), (16, 1760, 1760), (35, 128, 8457), (128, 128, 16384)]:
        for ab, (ta, tb) in [("bf16", (False, True)), ("f16", (True, False)), ("bf16", (False, False))]:
            add(M=M, N=N, K=K, ab=ab, c="f32", ta=ta, tb=tb, bias="f32", act="relu", preact=True, bias_grad=True)
    # K = 0: z = beta c + bias.
    for ab in DTYPES:
        add(M=9, N=10, K=0, ab=ab, c=ab, tb=True, beta=2.0, bias="f32", act="sigmoid", bias_grad=True)
    # Squares of several waves of the large tiles.
    add(M=1024, N=1024, K=1024, ab="bf16", c="bf16", tb=True)
    add(M=1024, N=1024, K=1024, ab="f16", c="f32", ta=True)
    add(M=1000, N=1000, K=1000, ab="f32", c="f32", tb=True)
    return cases


CASES = _cases()
CASE_IDS = [c["id"] for c in CASES]


# ------------------------------------------------------------------ one case -------------

class Placed:
    """An array of `shape` inside a flat buffer: its rows padded by `pad` elements and its
    data `offset` elements into the buffer; the rest of the buffer holds `fill`."""

    def __init__(self, x, pad, offset, fill):
        self.shape, self.pad, self.offset = x.shape, pad, offset
        self.wide = x.shape[:-1] + (x.shape[-1] + pad,)
        self.buf = np.full(offset + math.prod(self.wide), fill, x.dtype)
        self.view(self.buf)[...] = x

    def view(self, buf):
        return buf[self.offset:].reshape(self.wide)[..., :self.shape[-1]]

    def padding(self, buf):
        """The buffer's elements outside the array."""
        mask = np.ones(self.buf.shape, bool)
        self.view(mask)[...] = False
        return buf[mask]


def to_device(cp, x):
    if x.dtype == DTYPES["bf16"]:
        return cp.asarray(x.view(np.uint16)).view(x.dtype)
    return cp.asarray(x)


def to_host(cp, x):
    if x.dtype == DTYPES["bf16"]:
        return cp.asnumpy(x.view(np.uint16)).view(x.dtype)
    return cp.asnumpy(x)


def f64(x):
    return np.asarray(x).astype(np.float64)


def make_case(case, rng):
    """The arrays of a case (Placed, keyed by matmul's argument names) and the float64 sums
    of |terms| that bound the float32 rounding of each output and bias_grad element (the
    products, beta c, bias and residual)."""
    M, N, K, batch = case["M"], case["N"], case["K"], case["batch"]
    ab, cd = DTYPES[case["ab"]], DTYPES[case["c"]]
    lead = (batch,) if batch else ()
    a_shape = (K, M) if case["ta"] else (M, K)
    b_shape = (N, K) if case["tb"] else (K, N)
    a = rng.standard_normal((() if case["share"] == "a" else lead) + a_shape).astype(ab)
    b = rng.standard_normal((() if case["share"] == "b" else lead) + b_shape).astype(ab)
    pad, off = case["pad"], case["offset"]
    arrays = {"a": Placed(a, pad, off, np.nan), "b": Placed(b, pad, off, np.nan)}
    c0 = rng.standard_normal(lead + (M, N)).astype(cd) if case["beta"] else np.full(lead + (M, N), np.nan, cd)
    arrays["c"] = Placed(c0, pad, off, np.nan)
    if case["bias"]:
        bias_dtype = DTYPES["f32"] if case["bias"] == "f32" else cd
        arrays["bias"] = Placed(rng.standard_normal(N).astype(bias_dtype), 0, 0, np.nan)
    if case["residual"]:
        arrays["residual"] = Placed(rng.standard_normal(lead + (M, N)).astype(cd), pad, off, np.nan)
    if case["preact"]:
        arrays["preact"] = Placed(np.full(lead + (M, N), np.nan, cd), pad, off, np.nan)
    if case["bias_grad"]:
        arrays["bias_grad"] = Placed(np.full(M, np.nan, np.float32), 0, 0, np.nan)
    op_a = np.abs(f64(np.swapaxes(a, -1, -2) if case["ta"] else a))
    op_b = np.abs(f64(np.swapaxes(b, -1, -2) if case["tb"] else b))
    terms = abs(case["alpha"]) * (op_a @ op_b) if K else np.zeros(lead + (M, N))
    if case["beta"]:
        terms = terms + abs(case["beta"]) * np.abs(f64(c0))
    for name in ("bias", "residual"):
        if name in arrays:
            terms = terms + np.abs(f64(arrays[name].view(arrays[name].buf)))
    grad_terms = op_a.sum(axis=-1) * (batch if case["share"] == "a" else 1) if K else np.zeros(M)
    if batch and case["share"] != "a":
        grad_terms = grad_terms.sum(axis=0)
    return arrays, terms, grad_terms


def call(case, arrays, xp_bufs, stream):
    views = {k: p.view(xp_bufs[k]) for k, p in arrays.items()}
    _C.matmul(views["a"], views["b"], views["c"], trans_a=case["ta"], trans_b=case["tb"], alpha=case["alpha"],
              beta=case["beta"], bias=views.get("bias"), activation=case["act"], residual=views.get("residual"),
              preact=views.get("preact"), bias_grad=views.get("bias_grad"), stream=stream)


def check_case(case, cp, seed=0):
    """Runs a case on the CPU and the GPU; None if they agree, else what differs."""
    rng = np.random.default_rng([seed, CASE_IDS.index(case["id"])])
    arrays, terms, grad_terms = make_case(case, rng)
    cpu = {k: p.buf.copy() for k, p in arrays.items()}
    call(case, arrays, cpu, 0)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        gpu = {k: to_device(cp, p.buf) for k, p in arrays.items()}
        call(case, arrays, gpu, stream.ptr)
    stream.synchronize()
    gpu = {k: to_host(cp, v) for k, v in gpu.items()}

    K = case["K"]
    n_sum = K * max(case["batch"], 1)
    order = 2.0**-24 * (4.0 * math.sqrt(max(K, 1)) + 8.0)  # float32 summation-order error per |term|
    problems = []
    for name in ("c", "preact", "bias_grad"):
        if name not in arrays:
            continue
        p = arrays[name]
        if not np.isnan(f64(p.padding(gpu[name]))).all():
            problems.append(f"{name}: the padding around it was written")
        got, ref = f64(p.view(gpu[name])), f64(p.view(cpu[name]))
        if name == "bias_grad":
            bound = 2.0**-24 * (4.0 * math.sqrt(max(n_sum, 1)) + 8.0) * grad_terms + 1e-30
        else:
            # act' <= 1.13 (GELU); a few float32 ulp for the epilogue's own arithmetic (the
            # host and device compilers may contract it differently); one rounding flip of
            # c's dtype on top.
            bound = 1.2 * order * terms + (2.0**-20 + ULP[case["c"]]) * np.abs(ref) + 1e-30
            if case["c"] == "f16":
                bound = bound + 2.0**-24  # float16's gradual underflow
        bad = ~(np.abs(got - ref) <= bound)  # NaN counts as bad
        if bad.any():
            i = tuple(np.argwhere(bad)[0])
            problems.append(f"{name}: {bad.sum()} of {bad.size} elements off, first at {i}: "
                            f"gpu {got[i]} cpu {ref[i]} (bound {bound[i]:.3g})")
    return "; ".join(problems) or None


# ------------------------------------------------------------- forced paths -------------

def device_capability(cp):
    return cp.cuda.Device().compute_capability  # e.g. "90"


def forced_paths(cp):
    cc = int(device_capability(cp))
    return [p for p, ok in [("sm90", cc // 10 == 9), ("sm80", cc >= 80), ("simt", True)] if ok]


@functools.lru_cache(maxsize=None)
def path_results(path):
    """{case id: None or the problem} for every case, from a child process that forces `path`."""
    env = dict(os.environ, UNET_MATMUL_PATH=path, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, f"UNET_MATMUL_PATH={path} child failed:\n{run.stderr[-4000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", ["sm90", "sm80", "simt"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forced_path_matches_cpu(cupy, path, case):
    if path not in forced_paths(cupy):
        pytest.skip(f"{path} needs another GPU (this one: compute capability {device_capability(cupy)})")
    problem = path_results(path)[case["id"]]
    assert problem is None, problem


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_auto_path_matches_cpu(cupy, case):
    problem = check_case(case, cupy, seed=1)
    assert problem is None, problem


def test_split_k_results_are_run_to_run_identical(cupy):
    case = dict(DEFAULT, M=16, N=512, K=4096, ab="bf16", c="f32", tb=True, bias="f32", bias_grad=True)
    arrays, _, _ = make_case(case, np.random.default_rng(7))
    outs = []
    for _ in range(3):
        gpu = {k: to_device(cupy, p.buf) for k, p in arrays.items()}
        call(case, arrays, gpu, 0)
        outs.append({k: to_host(cupy, gpu[k]).tobytes() for k in ("c", "bias_grad")})
    assert outs[0] == outs[1] == outs[2]


def _child(script, **env):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)


_ONE_CALL = """
import cupy as cp
from unet import _C
a = cp.ones((8, 8), cp.float32)
try:
    _C.matmul(a, a, cp.empty((8, 8), cp.float32))
    cp.cuda.Device().synchronize()
    print("ok")
except Exception as e:
    print(type(e).__name__, e)
"""


def test_bad_path_setting_is_a_named_error(cupy):
    out = _child(_ONE_CALL, UNET_MATMUL_PATH="fastest").stdout
    assert "ValueError" in out and "UNET_MATMUL_PATH" in out and "fastest" in out


def test_forced_sm90_elsewhere_is_an_error(cupy):
    if int(device_capability(cupy)) // 10 == 9:
        pytest.skip("a compute capability 9.x GPU runs sm90")
    out = _child(_ONE_CALL, UNET_MATMUL_PATH="sm90").stdout
    assert "RuntimeError" in out and "sm90" in out


def _check_or_error(case, cp):
    try:
        return check_case(case, cp)
    except Exception as e:  # reported as that case's failure; the child carries on
        return f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    # Child of path_results: every case under this process's UNET_MATMUL_PATH, as JSON.
    import cupy as cp

    print(json.dumps({c["id"]: _check_or_error(c, cp) for c in CASES}))
