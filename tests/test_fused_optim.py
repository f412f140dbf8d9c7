"""The fused optimizer kernels (unet._C.sgd_step / adam_step / unscale_and_check) and the
optimizers' fused= and step_scaled paths.

The fused path must give bitwise the parameters and state of the per-parameter Python path
(sgd_update / adam_update, the same operations in the same order), for every option, both
float dtypes and any thread count; and match torch.optim within rounding. step_scaled
changes nothing when a gradient is inf or NaN, and otherwise equals step() on grad / scale.
GPU tests (marked gpu) compare the CUDA kernels with the CPU ones, bitwise.
"""
import hashlib
import itertools
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernel_checks import FUZZ, FakeCudaArray, cupy, junk_arguments  # noqa: F401  (cupy: a fixture)

import unet
from unet import _C, nn, optim

# One tensor above the kernels' parallel threshold (2^15 elements), odd sizes, a 0-d and an
# empty one; the fourth gets no gradient on some steps.
SHAPES = [(181, 223), (7,), (), (3, 5), (0,), (64,)]
NO_GRAD = 3
STEPS = 12
DTYPES = [np.float32, np.float64]


def sgd_options():
    for momentum, dampening, nesterov, weight_decay, maximize in itertools.product(
            [0.0, 0.9], [0.0, 0.3], [False, True], [0.0, 0.01], [False, True]):
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        yield dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov,
                   weight_decay=weight_decay, maximize=maximize)


def adam_options():
    for amsgrad, weight_decay, maximize, decoupled in itertools.product([False, True], [0.0, 0.1],
                                                                         [False, True], [False, True]):
        yield dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay, amsgrad=amsgrad,
                   maximize=maximize, decoupled_weight_decay=decoupled)


CASES = ([(optim.SGD, o) for o in sgd_options()] + [(optim.Adam, o) for o in adam_options()])
CASE_IDS = [f"{cls.__name__}-" + "-".join(f"{k}={v}" for k, v in o.items() if k not in ("lr", "betas", "eps"))
            for cls, o in CASES]


def make_params(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def grad_steps(dtype, steps=STEPS, seed=1, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [[None if (i == NO_GRAD and step % 3 == 1) else rng.standard_normal(s).astype(dtype)
             for i, s in enumerate(shapes)] for step in range(steps)]


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else unet.Tensor(g.copy())


def run(cls, options, values, grads, fused, scale=None):
    """Parameters and the optimizer after the steps (step(), or step_scaled(scale) on grads * scale)."""
    params = [nn.Parameter(v.copy()) for v in values]
    opt = cls(params, **options, fused=fused)
    for g in grads:
        set_grads(params, g if scale is None else [None if x is None else x * scale for x in g])
        if scale is None:
            opt.step()
        else:
            assert opt.step_scaled(scale) is False
    return params, opt


def snapshot(params, opt):
    """Every parameter and state value, copied."""
    state = [{k: np.array(v, copy=True) for k, v in opt.state[p].items()} for p in params]
    return [p.numpy().copy() for p in params], state


def assert_identical(a, b):
    (pa, sa), (pb, sb) = a, b
    for x, y in zip(pa, pb):  # (float16 Adam can make NaN: its eps rounds to 0)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)
    assert [sorted(s) for s in sa] == [sorted(s) for s in sb]
    for x, y in zip(sa, sb):
        for k in x:
            assert np.array_equal(x[k], y[k], equal_nan=True), k


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, options", CASES, ids=CASE_IDS)
def test_fused_equals_per_parameter_bitwise(cls, options, dtype):
    values, grads = make_params(dtype), grad_steps(dtype)
    fused = run(cls, options, values, grads, fused=True)
    assert_identical(snapshot(*fused), snapshot(*run(cls, options, values, grads, fused=False)))
    start = values[0]
    assert not np.array_equal(fused[0][0].numpy(), start)  # it did move


def test_default_is_one_fused_call_per_step(monkeypatch):
    calls = []
    real = _C.adam_step
    monkeypatch.setattr(_C, "adam_step", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    values, grads = make_params(np.float32), grad_steps(np.float32, steps=3)
    run(optim.AdamW, {}, values, grads, fused=None)
    assert calls == [len(SHAPES), len(SHAPES) - 1, len(SHAPES)]  # every parameter with a grad, at once
    calls.clear()
    run(optim.AdamW, {}, values, grads, fused=False)
    assert calls == []


TORCH_CASES = [
    (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
    (optim.Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    (optim.Adam, torch.optim.Adam, dict(lr=0.01, betas=(0.5, 0.9), maximize=True)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=1e-5, atol=1e-6)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ours_cls, torch_cls, options", TORCH_CASES,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(TORCH_CASES)])
def test_fused_matches_torch(ours_cls, torch_cls, options, dtype):
    values, grads = make_params(dtype), grad_steps(dtype)
    params, _ = run(ours_cls, options, values, grads, fused=True)
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    ref = torch_cls(theirs, **options, foreach=False)
    for g in grads:
        for t, x in zip(theirs, g):
            t.grad = None if x is None else torch.from_numpy(x.copy())
        ref.step()
    for p, t in zip(params, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), **TOL[dtype])


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam])
def test_param_groups_with_different_options(cls):
    values, grads = make_params(np.float64), grad_steps(np.float64)
    first = dict(lr=0.1, momentum=0.9) if cls is optim.SGD else dict(lr=0.01, amsgrad=True)
    second = (dict(lr=0.01, momentum=0.5, weight_decay=0.1, nesterov=True) if cls is optim.SGD
              else dict(lr=0.1, betas=(0.5, 0.9), weight_decay=0.2, maximize=True))
    results = []
    for fused in (True, False):
        params = [nn.Parameter(v.copy()) for v in values]
        opt = cls([{"params": params[:3], **first}, {"params": params[3:], **second}], fused=fused)
        for g in grads:
            set_grads(params, g)
            opt.step()
        results.append(snapshot(params, opt))
    assert_identical(*results)
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    torch_cls = torch.optim.SGD if cls is optim.SGD else torch.optim.Adam
    ref = torch_cls([{"params": theirs[:3], **first}, {"params": theirs[3:], **second}], foreach=False)
    for g in grads:
        for t, x in zip(theirs, g):
            t.grad = None if x is None else torch.from_numpy(x.copy())
        ref.step()
    for p, t in zip(results[0][0], theirs):
        np.testing.assert_allclose(p, t.detach().numpy(), **TOL[np.float64])


@pytest.mark.parametrize("cls, options", [(optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, {})])
def test_params_without_grads_are_skipped(cls, options):
    params = [nn.Parameter(v) for v in make_params(np.float32)]
    opt = cls(params, **options, fused=True)
    before = [p.numpy().copy() for p in params]
    versions = [p._version for p in params]
    set_grads(params, [None if i in (0, NO_GRAD) else np.ones(s, np.float32) for i, s in enumerate(SHAPES)])
    opt.step()
    for i, (p, b) in enumerate(zip(params, before)):
        moved = i not in (0, NO_GRAD) and b.size > 0
        assert np.array_equal(p.numpy(), b) != moved
        assert p._version == versions[i] + (i not in (0, NO_GRAD))
        assert bool(opt.state[p]) == (i not in (0, NO_GRAD))


# ---------------------------------------------------------------- threads

_THREADS_SCRIPT = """
import hashlib, numpy as np
from unet import _C
rng = np.random.default_rng(5)
shapes = [(300, 301), (17,), (40000,), (3, 3)]
for dtype in (np.float32, np.float64):
    p = [rng.standard_normal(s).astype(dtype) for s in shapes]
    m, v, w = ([np.zeros(s, dtype) for s in shapes] for _ in range(3))
    b = [np.empty(s, dtype) for s in shapes]
    q = [x.copy() for x in p]
    for step in range(1, 4):
        g = [rng.standard_normal(s).astype(dtype) for s in shapes]
        _C.adam_step(p, g, m, v, w, step, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
        _C.sgd_step(q, g, b, lr=0.1, momentum=0.9, nesterov=True, is_first_step=step == 1, inv_scale=0.5)
    g[1][3] = np.inf
    print(_C.unscale_and_check(g, 0.25), hashlib.sha256(b"".join(a.tobytes() for a in p + m + v + w + q + b + g)).hexdigest())
"""


def _run_script(**env):
    return subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=dict(os.environ, **env),
                          capture_output=True, text=True, check=True).stdout


def test_result_does_not_depend_on_thread_count():
    outputs = {_run_script(OMP_NUM_THREADS=threads) for threads in ["1", "2", "3"]}
    assert len(outputs) == 1
    assert next(iter(outputs)).count("True") == 2


def test_every_instruction_set_gives_the_same_bits():
    """The loops are compiled for AVX-512, AVX2 and plain x86-64; UNET_CPU_ISA forces the narrower."""
    features = _C.info()["cpu_features"]
    isas = ["generic"] + [isa for isa, feature in [("avx2", "avx2"), ("", "avx512f")] if feature in features]
    outputs = {_run_script(UNET_CPU_ISA=isa, OMP_NUM_THREADS="2") for isa in isas}
    assert len(outputs) == 1


# ---------------------------------------------------------------- step_scaled

def mixed_params(kind):
    """Parameters that one fused call updates ("one"), that need two ("two dtypes"), or that mix
    fused and per-parameter updates ("with float16")."""
    values = make_params(np.float32)
    if kind == "two dtypes":
        values[1] = values[1].astype(np.float64)
    elif kind == "with float16":
        values[1] = values[1].astype(np.float16)
    return values


# float16 Adam divides by zero where v underflows (its eps rounds to 0): numpy warns
@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")
@pytest.mark.parametrize("kind", ["one", "two dtypes", "with float16"])
@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", [0, 1, 5])
@pytest.mark.parametrize("cls, options", [(optim.SGD, dict(lr=0.1, momentum=0.9)),
                                          (optim.Adam, dict(amsgrad=True)), (optim.AdamW, {})],
                         ids=["SGD", "Adam", "AdamW"])
def test_step_scaled_with_inf_changes_nothing(cls, options, where, bad, fused, kind):
    values = mixed_params(kind)
    params = [nn.Parameter(v.copy()) for v in values]
    opt = cls(params, **options, fused=fused)
    rng = np.random.default_rng(3)
    for first_step in (True, False):  # before any state exists, then with state
        grads = [rng.standard_normal(v.shape).astype(v.dtype) * 1024 for v in values]
        grads[where].reshape(-1)[-1] = bad
        set_grads(params, grads)
        before = snapshot(params, opt)
        versions = [p._version for p in params]
        assert opt.step_scaled(1024.0) is True
        assert_identical(snapshot(params, opt), before)
        assert [p._version for p in params] == versions
        assert all(np.array_equal(p.grad.numpy(), g, equal_nan=True) for p, g in zip(params, grads))
        if first_step:
            assert not any(opt.state[p] for p in params)
            grads[where].reshape(-1)[-1] = 1
            set_grads(params, grads)
            assert opt.step_scaled(1024.0) is False


# float16 Adam divides by zero where v underflows (its eps rounds to 0): numpy warns
@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")
@pytest.mark.parametrize("kind", ["one", "two dtypes", "with float16"])
@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("scale", [1024.0, 3.0, 0.25])
@pytest.mark.parametrize("cls, options", [(optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
                                          (optim.Adam, dict(amsgrad=True, maximize=True)),
                                          (optim.AdamW, {})], ids=["SGD", "Adam", "AdamW"])
def test_step_scaled_equals_step_on_unscaled_grads(cls, options, scale, fused, kind):
    values = mixed_params(kind)
    grads = [[None if x is None else x.astype(v.dtype) for x, v in zip(g, values)]
             for g in grad_steps(np.float32, steps=5)]
    a_params = [nn.Parameter(v.copy()) for v in values]
    b_params = [nn.Parameter(v.copy()) for v in values]
    a, b = cls(a_params, **options, fused=fused), cls(b_params, **options, fused=fused)
    for g in grads:
        set_grads(a_params, g)
        assert a.step_scaled(scale) is False
        for p, x in zip(a_params, g):  # the gradients are left as they were
            assert (p.grad is None) == (x is None) and (x is None or np.array_equal(p.grad.numpy(), x))
        set_grads(b_params, [None if x is None else x * (1.0 / scale) for x in g])
        b.step()
    assert_identical(snapshot(a_params, a), snapshot(b_params, b))


def test_step_scaled_fused_equals_per_parameter():
    values, grads = make_params(np.float32), grad_steps(np.float32)
    for cls, options in [(optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(weight_decay=0.1))]:
        assert_identical(snapshot(*run(cls, options, values, grads, fused=True, scale=512.0)),
                         snapshot(*run(cls, options, values, grads, fused=False, scale=512.0)))


@pytest.mark.parametrize("scale", [0, -1.0, math.inf, math.nan, "2", True])
def test_step_scaled_rejects_bad_scale(scale):
    opt = optim.SGD([nn.Parameter(np.ones(3, np.float32))], lr=0.1)
    with pytest.raises(ValueError, match="scale"):
        opt.step_scaled(scale)


# ---------------------------------------------------------------- unscale_and_check

def test_unscale_and_check_multiplies_in_place():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(d) for s, d in
              [((200, 300), np.float32), ((5,), np.float64), ((), np.float32), ((4, 6), np.float16)]]
    strided = rng.standard_normal((6, 8)).astype(np.float32)[:, ::2]  # not contiguous: numpy's path
    tensor = unet.Tensor(rng.standard_normal(7).astype(np.float32))
    expected = [a * np.asarray(0.125, a.dtype) for a in arrays] + [strided * np.float32(0.125),
                                                                   tensor.numpy() * np.float32(0.125)]
    version = tensor._version
    assert optim.unscale_and_check(arrays + [strided, None, tensor], 0.125) is False
    for got, want in zip(arrays + [strided, tensor.numpy()], expected):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert tensor._version == version + 1


@pytest.mark.parametrize("where", [0, 1, 2, 3])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_unscale_and_check_finds_non_finite(where, bad):
    arrays = [np.ones((200, 300), np.float32), np.ones(5), np.ones(3, np.float32), np.ones(4, np.float16)]
    arrays[where].reshape(-1)[-1] = bad
    assert optim.unscale_and_check(arrays, 0.5) is True
    assert all(a.reshape(-1)[0] == 0.5 for a in arrays)  # every array is still scaled


def test_unscale_and_check_overflow_counts():
    # finite gradients that overflow when multiplied (a scale below 1) are non-finite too
    assert _C.unscale_and_check([np.full(3, 3e38, np.float32)], 4.0, in_place=False) is True
    a = np.full(3, 3e38, np.float32)
    assert _C.unscale_and_check([a], 4.0, in_place=False) is True and a[0] == np.float32(3e38)
    assert _C.unscale_and_check([], 2.0) is False


@pytest.mark.parametrize("inv_scale", [0, -2.0, math.inf, math.nan, "1"])
def test_unscale_and_check_rejects_bad_inv_scale(inv_scale):
    with pytest.raises((ValueError, TypeError), match="inv_scale"):
        optim.unscale_and_check([np.ones(3, np.float32)], inv_scale)
    with pytest.raises((ValueError, TypeError), match="inv_scale"):
        _C.unscale_and_check([np.ones(3, np.float32)], inv_scale)


# ---------------------------------------------------------------- validation

def sgd_args(n=3, dtype=np.float32):
    shapes = [(4, 3), (5,), ()][:n]
    return dict(params=[np.ones(s, dtype) for s in shapes], grads=[np.ones(s, dtype) for s in shapes],
                momentum_buffers=[np.zeros(s, dtype) for s in shapes], lr=0.1, momentum=0.9)


def adam_args(n=3, dtype=np.float32):
    shapes = [(4, 3), (5,), ()][:n]
    z = lambda: [np.zeros(s, dtype) for s in shapes]
    return dict(params=[np.ones(s, dtype) for s in shapes], grads=[np.ones(s, dtype) for s in shapes],
                exp_avgs=z(), exp_avg_sqs=z(), max_exp_avg_sqs=None, steps=1, lr=1e-3, beta1=0.9,
                beta2=0.999, eps=1e-8)


def spoil(args, key, fn):
    args = dict(args)
    args[key] = fn(args[key])
    return args


def replace_item(i, fn):
    return lambda lst: [fn(x) if j == i else x for j, x in enumerate(lst)]


BAD_ARGS = [
    # (kernel, which argument, how to spoil it, expected exception, the name in the message)
    ("sgd", "params", lambda v: v[0], TypeError, "params"),
    ("sgd", "grads", lambda v: v[:2], ValueError, "grads"),
    ("sgd", "grads", replace_item(1, lambda a: np.ones(6, a.dtype)), ValueError, r"grads\[1\]"),
    ("sgd", "grads", replace_item(0, lambda a: a.astype(np.float64)), TypeError, r"grads\[0\]"),
    ("sgd", "grads", replace_item(0, lambda a: np.ones((3, 4), a.dtype).T), ValueError,
     r"grads\[0\]"),
    ("sgd", "params", replace_item(2, lambda a: a.astype(np.float16)), TypeError, r"params\[2\]"),
    ("sgd", "params", replace_item(1, lambda a: np.ones(5, a.dtype)[::-1]), ValueError, r"params\[1\]"),
    ("sgd", "momentum_buffers", replace_item(1, lambda a: None), ValueError, r"momentum_buffers\[1\]"),
    ("sgd", "momentum_buffers", lambda v: [FakeCudaArray(a.shape) for a in v], ValueError,
     r"momentum_buffers\[0\]"),
    ("sgd", "lr", lambda v: -0.1, ValueError, "lr"),
    ("sgd", "lr", lambda v: [0.1, math.nan, 0.1], ValueError, r"lr\[1\]"),
    ("sgd", "lr", lambda v: [0.1, 0.1], ValueError, "lr"),
    ("sgd", "lr", lambda v: True, TypeError, "lr"),
    ("sgd", "lr", lambda v: "0.1", TypeError, "lr"),
    ("sgd", "momentum", lambda v: math.inf, ValueError, "momentum"),
    ("sgd", "dampening", lambda v: 1.5, ValueError, "dampening"),
    ("sgd", "weight_decay", lambda v: -1e-3, ValueError, "weight_decay"),
    ("sgd", "nesterov", lambda v: 1, TypeError, "nesterov"),
    ("sgd", "maximize", lambda v: [False, "yes", False], TypeError, r"maximize\[1\]"),
    ("sgd", "inv_scale", lambda v: 0.0, ValueError, "inv_scale"),
    ("sgd", "found_inf", lambda v: np.zeros(1), TypeError, "found_inf"),
    ("sgd", "found_inf", lambda v: np.zeros(2, np.float32), TypeError, "found_inf"),
    ("sgd", "stream", lambda v: -1, ValueError, "stream"),
    ("adam", "exp_avgs", replace_item(0, lambda a: np.zeros((3, 4), a.dtype)), ValueError, r"exp_avgs\[0\]"),
    ("adam", "exp_avg_sqs", replace_item(2, lambda a: a.astype(np.float64)), TypeError, r"exp_avg_sqs\[2\]"),
    ("adam", "max_exp_avg_sqs", lambda v: [None, np.zeros(4, np.float32), None], ValueError,
     r"max_exp_avg_sqs\[1\]"),
    ("adam", "max_exp_avg_sqs", lambda v: np.zeros(3), TypeError, "max_exp_avg_sqs"),
    ("adam", "steps", lambda v: 0, ValueError, "steps"),
    ("adam", "steps", lambda v: [1, 2, 1.5], TypeError, r"steps\[2\]"),
    ("adam", "beta1", lambda v: 1.0, ValueError, "beta1"),
    ("adam", "beta2", lambda v: -0.1, ValueError, "beta2"),
    ("adam", "eps", lambda v: -1e-8, ValueError, "eps"),
    ("adam", "weight_decay", lambda v: math.nan, ValueError, "weight_decay"),
    ("adam", "decoupled_weight_decay", lambda v: None, TypeError, "decoupled_weight_decay"),
    ("adam", "inv_scale", lambda v: math.inf, ValueError, "inv_scale"),
]


@pytest.mark.parametrize("kernel, key, fn, exc, name", BAD_ARGS,
                         ids=[f"{k}-{key}-{i}" for i, (k, key, _, _, _) in enumerate(BAD_ARGS)])
def test_bad_arguments_are_named(kernel, key, fn, exc, name):
    args = sgd_args() if kernel == "sgd" else adam_args()
    args.setdefault(key, {"nesterov": False, "maximize": False, "inv_scale": 1.0, "found_inf": None,
                          "stream": 0, "decoupled_weight_decay": False}.get(key))
    call = _C.sgd_step if kernel == "sgd" else _C.adam_step
    before = [a.copy() for a in args["params"]]
    with pytest.raises(exc, match=name):
        call(**spoil(args, key, fn))
    assert all(np.array_equal(a, b) for a, b in zip(args["params"], before))


def test_nesterov_and_momentum_buffers_are_checked_against_momentum():
    args = sgd_args()
    with pytest.raises(ValueError, match="nesterov"):
        _C.sgd_step(**{**args, "momentum": 0.0, "momentum_buffers": None}, nesterov=True)
    with pytest.raises(ValueError, match=r"momentum_buffers\[0\]"):
        _C.sgd_step(**{**args, "momentum": 0.0})
    with pytest.raises(ValueError, match=r"nesterov\[1\]"):
        _C.sgd_step(**args, dampening=[0.0, 0.1, 0.0], nesterov=[False, True, False])


def test_aliasing_is_refused():
    def adam(**arrays):  # two (4, 3) tensors; arrays given replace the fresh ones
        fresh = {k: [np.zeros((4, 3), np.float32) for _ in range(2)]
                 for k in ("params", "grads", "exp_avgs", "exp_avg_sqs")}
        _C.adam_step(**{**fresh, **arrays}, max_exp_avg_sqs=None, steps=1, lr=1e-3, beta1=0.9,
                     beta2=0.999, eps=1e-8)

    def both(x, y):  # either may be the one blamed
        x, y = re.escape(x), re.escape(y)
        return f"{x}: .*memory shared with {y}|{y}: .*memory shared with {x}"

    a, b, c = (np.zeros((4, 3), np.float32) for _ in range(3))
    with pytest.raises(ValueError, match=both("params[1]", "exp_avgs[1]")):  # state = a parameter
        adam(params=[a, b], exp_avgs=[c, b])
    with pytest.raises(ValueError, match=both("params[0]", "params[1]")):
        adam(params=[a, a])
    big = np.zeros(30, np.float32)  # overlapping views of one buffer
    with pytest.raises(ValueError, match=both("exp_avgs[0]", "exp_avg_sqs[0]")):
        adam(exp_avgs=[big[:12].reshape(4, 3), b], exp_avg_sqs=[big[10:22].reshape(4, 3), c])
    with pytest.raises(ValueError, match=r"params\[0\]: .*memory shared with grads\[1\]"):
        adam(params=[a, b], grads=[c, a])
    with pytest.raises(ValueError, match=r"found_inf"):
        found = np.zeros(1, np.float32)
        _C.sgd_step([found], [np.ones(1, np.float32)], None, lr=0.1, found_inf=found)
    adam(grads=[a, a])  # gradients may share memory with each other
    adam(exp_avgs=[big[:12].reshape(4, 3), b], exp_avg_sqs=[big[12:24].reshape(4, 3), c])  # adjacent


def test_read_only_param_is_refused():
    args = sgd_args()
    args["params"][0].setflags(write=False)
    with pytest.raises(ValueError, match=r"params\[0\]"):
        _C.sgd_step(**args)


@pytest.mark.fuzz
@FUZZ
@given(position=st.sampled_from(["params", "grads", "momentum_buffers", "lr", "momentum", "nesterov",
                                 "is_first_step", "inv_scale", "found_inf"]),
       junk=junk_arguments(1.0, booleans=True))
def test_junk_never_crashes(position, junk):
    args = sgd_args()
    args[position] = junk
    try:
        _C.sgd_step(**args)
    except (TypeError, ValueError):
        pass


def test_optimizer_fused_argument_is_checked():
    half = nn.Parameter(np.ones(3, np.float16))
    with pytest.raises(TypeError, match="fused"):
        optim.SGD([half], lr=0.1, fused="yes")
    with pytest.raises(ValueError, match="fused"):
        optim.Adam([nn.Parameter(np.ones(3, np.float32)), half], fused=True)
    opt = optim.Adam([nn.Parameter(np.ones(3, np.float32))], fused=True)
    with pytest.raises(ValueError, match="fused"):
        opt.add_param_group({"params": [half]})
    # fused=None takes the per-parameter path for what the kernels do not take
    opt = optim.Adam([half, nn.Parameter(np.ones(3, np.float32))])
    set_grads(opt.param_groups[0]["params"], [np.ones(3, np.float16), np.ones(3, np.float32)])
    opt.step()
    assert half.dtype == np.float16 and not np.array_equal(half.numpy(), np.ones(3, np.float16))


def test_resume_from_state_dict_across_paths():
    """A checkpoint written by the per-parameter path continues bitwise on the fused one."""
    values, grads = make_params(np.float32), grad_steps(np.float32)
    for cls, options in [(optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(amsgrad=True))]:
        ref_params, ref = run(cls, options, values, grads, fused=False)
        params, opt = run(cls, options, values, grads[:5], fused=False)
        clones = [nn.Parameter(p.numpy().copy()) for p in params]
        resumed = cls(clones, **options, fused=True)
        resumed.load_state_dict(opt.state_dict())
        for g in grads[5:]:
            set_grads(clones, g)
            resumed.step()
        assert_identical(snapshot(clones, resumed), snapshot(ref_params, ref))


# ---------------------------------------------------------------- GPU

def _digest(arrays):
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", ["sgd", "sgd-first", "adam", "adamw-amsgrad"])
def test_cuda_equals_cpu_bitwise(cupy, kernel, dtype):
    cp = cupy
    rng = np.random.default_rng(7)
    shapes = [(1000, 333), (5,), (), (0,), (4097,)]
    host = {k: [rng.standard_normal(s).astype(dtype) for s in shapes] for k in ("p", "g", "a", "b", "c")}
    for k in ("b", "c"):
        host[k] = [np.abs(x) for x in host[k]]
    stream = cp.cuda.Stream(non_blocking=True)
    if kernel.startswith("sgd"):
        call = lambda a, s: _C.sgd_step(a["p"], a["g"], a["a"], lr=[0.1, 0.2, 0.1, 0.1, 0.3], momentum=0.9,
                                        dampening=0.1, weight_decay=0.01, maximize=[True, False, False, True, False],
                                        is_first_step=kernel == "sgd-first", inv_scale=0.5, stream=s)
    else:
        amsgrad = kernel.endswith("amsgrad")
        call = lambda a, s: _C.adam_step(a["p"], a["g"], a["a"], a["b"], a["c"] if amsgrad else None,
                                         [3, 1, 2, 1, 7], lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8,
                                         weight_decay=0.1, decoupled_weight_decay=kernel.startswith("adamw"),
                                         maximize=[False, True, False, False, True], inv_scale=0.25, stream=s)
    device = {k: [cp.asarray(x) for x in v] for k, v in host.items()}
    call(host, 0)
    with stream:
        call(device, stream.ptr)
    stream.synchronize()
    for k in host:
        assert _digest(host[k]) == _digest([cp.asnumpy(x) for x in device[k]]), k


@pytest.mark.gpu
def test_cuda_found_inf_skips_the_update(cupy):
    cp = cupy
    p = [cp.ones((300, 300), cp.float32), cp.ones(7, cp.float32)]
    g = [cp.ones((300, 300), cp.float32), cp.ones(7, cp.float32)]
    g[1][3] = cp.nan
    m, v = [cp.zeros_like(x) for x in p], [cp.zeros_like(x) for x in p]
    found = cp.zeros(1, cp.float32)
    _C.adam_step(p, g, m, v, None, 1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, found_inf=found,
                 stream=cp.cuda.get_current_stream().ptr)
    assert float(found[0]) == 1.0
    assert all(bool((x == 1).all()) for x in p) and all(not bool(x.any()) for x in m)
    g[1][3] = 1.0
    found[0] = 0
    _C.adam_step(p, g, m, v, None, 1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, found_inf=found)
    assert float(found[0]) == 0.0 and not bool((p[0] == 1).any())


@pytest.mark.gpu
def test_cuda_unscale_and_check(cupy):
    cp = cupy
    grads = [cp.full((500, 500), 4.0, cp.float32), cp.full(9, 4.0, cp.float64)]
    assert _C.unscale_and_check(grads, 0.25, stream=cp.cuda.get_current_stream().ptr) is False
    assert all(bool((g == 1).all()) for g in grads)
    grads[0][123, 45] = cp.inf
    assert optim.unscale_and_check(grads, 0.5) is True
    assert float(grads[1][0]) == 0.5


@pytest.mark.gpu
@pytest.mark.parametrize("cls, options", [(optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.AdamW, {})])
def test_cuda_optimizer_equals_cpu(cupy, cls, options):
    cp = cupy
    values, grads = make_params(np.float32), grad_steps(np.float32)
    cpu_params, cpu_opt = run(cls, options, values, grads, fused=True)
    params = [nn.Parameter(cp.asarray(v)) for v in values]
    opt = cls(params, **options, fused=True)
    for g in grads:
        for p, x in zip(params, g):
            p.grad = None if x is None else unet.Tensor(cp.asarray(x))
        opt.step()
    for p, q in zip(params, cpu_params):
        assert np.array_equal(cp.asnumpy(p.data), q.numpy())
    set_grads_gpu = [unet.Tensor(cp.full(v.shape, cp.inf, v.dtype)) for v in values]
    for p, g in zip(params, set_grads_gpu):
        p.grad = g
    before = [cp.asnumpy(p.data) for p in params]
    assert opt.step_scaled(8.0) is True
    assert all(np.array_equal(cp.asnumpy(p.data), b) for p, b in zip(params, before))
