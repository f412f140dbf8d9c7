"""unet.optim against torch.optim: optimizers, state dicts, clipping, schedules, validation."""
import json
import math

import numpy as np
import pytest
import torch

import unet
from unet import nn, optim
from unet.optim import lr_scheduler

SHAPES = [(4, 3), (3,), ()]
STEPS = 4
TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=2e-6, atol=2e-7)}


def make_params(dtype, seed=0, shapes=SHAPES):
    """The same initial values as unet Parameters and as torch leaf tensors."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [nn.Parameter(v.copy()) for v in values]
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    return ours, theirs


def grad_sequence(dtype, steps=STEPS, seed=1, shapes=SHAPES):
    """Fixed gradients per step; the last parameter gets none on step 1 (it must be skipped)."""
    rng = np.random.default_rng(seed)
    return [[None if (step == 1 and i == len(shapes) - 1) else rng.standard_normal(s).astype(dtype)
             for i, s in enumerate(shapes)] for step in range(steps)]


def set_grads(params, grads):
    """Give unet parameters (or torch tensors) these gradients; None means no gradient."""
    for p, g in zip(params, grads):
        if isinstance(p, torch.Tensor):
            p.grad = None if g is None else torch.from_numpy(g.copy())
        else:
            p.grad = None if g is None else unet.Tensor(g)


def feed(ours, theirs, grads):
    set_grads(ours, grads)
    set_grads(theirs, grads)


def assert_same(ours, theirs, dtype):
    for p, t in zip(ours, theirs):
        assert p.dtype == np.dtype(dtype)
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), **TOL[dtype])


SGD_OPTIONS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.1, maximize=True),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
]
ADAM_OPTIONS = [
    dict(),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, maximize=True, weight_decay=0.05, amsgrad=True),
]
ADAMW_OPTIONS = [dict(), dict(lr=0.01, weight_decay=0.3), dict(lr=0.01, amsgrad=True, maximize=True)]
CASES = ([(optim.SGD, torch.optim.SGD, o) for o in SGD_OPTIONS]
         + [(optim.Adam, torch.optim.Adam, o) for o in ADAM_OPTIONS]
         + [(optim.AdamW, torch.optim.AdamW, o) for o in ADAMW_OPTIONS])
CASE_IDS = [f"{ours.__name__}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}"
            for ours, _, o in CASES]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ours_cls, torch_cls, options", CASES, ids=CASE_IDS)
def test_fixed_gradients_match_torch(ours_cls, torch_cls, options, dtype):
    ours, theirs = make_params(dtype)
    opt, ref = ours_cls(ours, **options), torch_cls(theirs, **options)
    for grads in grad_sequence(dtype):
        feed(ours, theirs, grads)
        opt.step()
        ref.step()
        assert_same(ours, theirs, dtype)


def tiny_loss(w, b, x, y):
    """mean((tanh(x @ w^T + b) - y)^2), written with each framework's own operators."""
    return (((x @ w.T + b).tanh() - y) ** 2).mean()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ours_cls, torch_cls, options", [
    (optim.SGD, torch.optim.SGD, dict(lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (optim.Adam, torch.optim.Adam, dict(lr=0.05, amsgrad=True)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=0.05, weight_decay=0.1)),
], ids=["SGD", "Adam", "AdamW"])
def test_real_loss_gradients_match_torch(ours_cls, torch_cls, options, dtype):
    ours, theirs = make_params(dtype, shapes=[(2, 3), (2,)])
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((8, 3)).astype(dtype), rng.standard_normal((8, 2)).astype(dtype)
    opt, ref = ours_cls(ours, **options), torch_cls(theirs, **options)
    for _ in range(STEPS):
        opt.zero_grad()
        ref.zero_grad()
        tiny_loss(*ours, unet.Tensor(x), unet.Tensor(y)).backward()
        tiny_loss(*theirs, torch.from_numpy(x), torch.from_numpy(y)).backward()
        opt.step()
        ref.step()
    # the losses differ in rounding only, so the float32 trajectories drift a little
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), **tol)


def test_per_group_options_match_torch():
    ours, theirs = make_params(np.float64)
    groups = lambda ps: [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01, "momentum": 0.5}]
    opt = optim.SGD(groups(ours), lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(groups(theirs), lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    for grads in grad_sequence(np.float64):
        feed(ours, theirs, grads)
        opt.step()
        ref.step()
    assert_same(ours, theirs, np.float64)


def test_add_param_group_matches_torch():
    ours, theirs = make_params(np.float64)
    opt, ref = optim.Adam(ours[:2], lr=0.01), torch.optim.Adam(theirs[:2], lr=0.01)
    opt.add_param_group({"params": ours[2], "lr": 0.1, "betas": (0.5, 0.9)})
    ref.add_param_group({"params": theirs[2], "lr": 0.1, "betas": (0.5, 0.9)})
    for grads in grad_sequence(np.float64):
        feed(ours, theirs, grads)
        opt.step()
        ref.step()
    assert_same(ours, theirs, np.float64)


def to_checkpoint(state_dict):
    """What a checkpoint keeps: arrays as numpy, everything else through JSON (keys become strings)."""
    arrays = {(i, k): np.array(v) for i, s in state_dict["state"].items() for k, v in s.items()
              if not isinstance(v, (int, float))}
    plain = {"state": {i: {k: v for k, v in s.items() if isinstance(v, (int, float))}
                       for i, s in state_dict["state"].items()},
             "param_groups": state_dict["param_groups"]}
    restored = json.loads(json.dumps(plain))
    for (i, k), v in arrays.items():
        restored["state"][str(i)][k] = v
    return restored


@pytest.mark.parametrize("ours_cls, options", [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.Adam, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, dict(lr=0.01)),
], ids=["SGD", "Adam", "AdamW"])
def test_state_dict_round_trip_continues_identically(ours_cls, options):
    grads = grad_sequence(np.float32, steps=6)
    params, _ = make_params(np.float32)
    opt = ours_cls(params, **options)
    for g in grads[:3]:
        set_grads(params, g)
        opt.step()
    saved = to_checkpoint(opt.state_dict())
    clones = [nn.Parameter(p.numpy().copy()) for p in params]
    resumed = ours_cls(clones, lr=123.0)  # options come back from the state dict
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == options["lr"]
    for g in grads[3:]:
        for ps, o in ((params, opt), (clones, resumed)):
            set_grads(ps, g)
            o.step()
    for p, c in zip(params, clones):
        np.testing.assert_array_equal(p.numpy(), c.numpy())


def test_state_dict_layout():
    params, _ = make_params(np.float32)
    opt = optim.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.1}], amsgrad=True)
    set_grads(params, grad_sequence(np.float32)[1])  # params[2] has no grad
    opt.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sorted(sd["state"]) == [0, 1]
    assert sd["state"][0]["step"] == 1
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert all(v.dtype == np.float32 for v in sd["state"][1].values() if not isinstance(v, int))
    json.dumps(sd["param_groups"])


def test_loads_torch_state_dict():
    ours, theirs = make_params(np.float32)
    grads = grad_sequence(np.float32, steps=6)
    ref = torch.optim.Adam(theirs, lr=0.01, weight_decay=0.1)
    for g in grads[:3]:
        set_grads(theirs, g)
        ref.step()
    for p, t in zip(ours, theirs):
        p.data[...] = t.detach().numpy()
    opt = optim.Adam(ours)
    opt.load_state_dict(ref.state_dict())
    for g in grads[3:]:
        feed(ours, theirs, g)
        opt.step()
        ref.step()
    assert_same(ours, theirs, np.float32)


def test_load_state_dict_rejects_mismatched_groups():
    params, _ = make_params(np.float32)
    sd = optim.SGD(params, lr=0.1).state_dict()
    with pytest.raises(ValueError, match="parameter groups"):
        optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="parameters"):
        optim.SGD(params[:2], lr=0.1).load_state_dict(sd)


def test_zero_grad_and_version_bump():
    params, _ = make_params(np.float32)
    set_grads(params, grad_sequence(np.float32)[0])
    opt = optim.SGD(params, lr=0.1)
    versions = [p._version for p in params]
    opt.step()
    assert all(p._version == v + 1 for p, v in zip(params, versions))
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    opt.step()  # no gradients: nothing moves
    assert all(p._version == v + 1 for p, v in zip(params, versions))


def test_step_runs_closure_and_rejects_misshapen_grad():
    params, _ = make_params(np.float32)
    opt = optim.SGD(params, lr=0.1)

    def closure():
        loss = sum((p * p).sum() for p in params)
        loss.backward()
        return loss

    assert float(opt.step(closure)) > 0
    params[0].grad = unet.Tensor(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="grad"):
        opt.step()


# ---------------------------------------------------------------- clipping

@pytest.mark.parametrize("max_norm", [0.5, 1e3])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    ours, theirs = make_params(np.float32)
    feed(ours, theirs, grad_sequence(np.float32)[1])  # the last parameter has no grad
    total = optim.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    for p, t in zip(ours[:2], theirs[:2]):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_clip_grad_norm_edge_cases():
    p = nn.Parameter(np.ones(3, np.float64))
    assert float(optim.clip_grad_norm_(p, 1.0)) == 0.0  # no gradient at all
    p.grad = unet.Tensor(np.array([3.0, 4.0, 0.0]))
    assert float(optim.clip_grad_norm_(p, 1.0)) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8, 0.0], rtol=1e-6)
    p.grad = unet.Tensor(np.array([np.nan, 1.0, 0.0]))
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm_([p], -1.0)
    with pytest.raises(ValueError, match="norm_type"):
        optim.clip_grad_norm_([p], 1.0, norm_type=0)


def test_clip_grad_value_matches_torch():
    ours, theirs = make_params(np.float32)
    feed(ours, theirs, grad_sequence(np.float32)[0])
    optim.clip_grad_value_(ours, 0.5)
    torch.nn.utils.clip_grad_value_(theirs, 0.5)
    for p, t in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())


# ---------------------------------------------------------------- schedules

SCHEDULES = {
    "StepLR": lambda m, o: m.StepLR(o, step_size=3, gamma=0.5),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=8, eta_min=0.001),
    "LinearLR": lambda m, o: m.LinearLR(o, start_factor=0.25, end_factor=0.9, total_iters=6),
    "LambdaLR": lambda m, o: m.LambdaLR(o, [lambda e: 0.9 ** e, lambda e: 1 / (e + 1)]),
    "SequentialLR": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.StepLR(o, 2, 0.7),
            m.CosineAnnealingLR(o, T_max=6)], milestones=[5, 11]),
}


def two_group_optimizers():
    ours, theirs = make_params(np.float32)
    opt = optim.SGD([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.3}], lr=0.1)
    ref = torch.optim.SGD([{"params": theirs[:1]}, {"params": theirs[1:], "lr": 0.3}], lr=0.1)
    return opt, ref


def run_schedule(opt, sched, steps):
    lrs = [sched.get_last_lr()]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())
        assert [g["lr"] for g in opt.param_groups] == lrs[-1]
    return lrs


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_matches_torch(name):
    opt, ref = two_group_optimizers()
    ours = run_schedule(opt, SCHEDULES[name](lr_scheduler, opt), 20)
    theirs = run_schedule(ref, SCHEDULES[name](torch.optim.lr_scheduler, ref), 20)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


def test_warmup_cosine_matches_torch_composition():
    opt, ref = two_group_optimizers()
    ours = run_schedule(opt, lr_scheduler.warmup_cosine(opt, warmup_iters=4, total_iters=16,
                                                        eta_min=0.01), 20)
    T = torch.optim.lr_scheduler
    theirs = run_schedule(ref, T.SequentialLR(ref, [T.LinearLR(ref, start_factor=0.25, total_iters=4),
                                                    T.CosineAnnealingLR(ref, T_max=12, eta_min=0.01)],
                                              milestones=[4]), 20)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert ours[4] == [0.1, 0.3] and ours[16] == pytest.approx([0.01, 0.01])


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_state_dict_resumes(name):
    opt, _ = two_group_optimizers()
    sched = SCHEDULES[name](lr_scheduler, opt)
    run_schedule(opt, sched, 7)
    saved_opt = opt.state_dict()
    saved = json.loads(json.dumps(sched.state_dict()))  # plain numbers only
    expected = run_schedule(opt, sched, 10)

    fresh, _ = two_group_optimizers()
    resumed = SCHEDULES[name](lr_scheduler, fresh)
    fresh.load_state_dict(saved_opt)
    resumed.load_state_dict(saved)
    assert resumed.get_last_lr() == expected[0]
    assert run_schedule(fresh, resumed, 10) == expected


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("cls, kwargs, argname", [
    (optim.SGD, dict(lr=-0.1), "lr"),
    (optim.SGD, dict(lr=float("nan")), "lr"),
    (optim.SGD, dict(lr=0.1, momentum=-0.5), "momentum"),
    (optim.SGD, dict(lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (optim.SGD, dict(lr=0.1, nesterov=True), "nesterov"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (optim.Adam, dict(lr=-1.0), "lr"),
    (optim.Adam, dict(betas=(1.0, 0.999)), r"betas\[0\]"),
    (optim.Adam, dict(betas=(0.9, -0.1)), r"betas\[1\]"),
    (optim.Adam, dict(eps=-1e-8), "eps"),
    (optim.Adam, dict(weight_decay=-0.1), "weight_decay"),
    (optim.AdamW, dict(weight_decay=-0.1), "weight_decay"),
])
def test_invalid_options_name_the_argument(cls, kwargs, argname):
    params, _ = make_params(np.float32)
    with pytest.raises(ValueError, match=argname):
        cls(params, **kwargs)
    with pytest.raises(ValueError, match=argname):  # the same check guards each group
        cls([{"params": params[:1]}, {"params": params[1:], **kwargs}])


def test_invalid_params():
    p = nn.Parameter(np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="params"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="set"):
        optim.SGD({p}, lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2], lr=0.1)


@pytest.mark.parametrize("make, argname", [
    (lambda o: lr_scheduler.StepLR(o, step_size=0), "step_size"),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=0), "T_max"),
    (lambda o: lr_scheduler.LinearLR(o, start_factor=0.0), "start_factor"),
    (lambda o: lr_scheduler.LinearLR(o, end_factor=1.5), "end_factor"),
    (lambda o: lr_scheduler.LambdaLR(o, [lambda e: 1.0] * 3), "lr_lambda"),
    (lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(o, 2)], milestones=[3]), "milestones"),
    (lambda o: lr_scheduler.warmup_cosine(o, warmup_iters=5, total_iters=5), "total_iters"),
    (lambda o: lr_scheduler.StepLR(o, 2, last_epoch=3), "last_epoch"),
])
def test_invalid_schedules_name_the_argument(make, argname):
    opt, _ = two_group_optimizers()
    with pytest.raises((ValueError, KeyError), match=argname):
        make(opt)
