"""unet.amp: autocast's dtype policy and numerics (against float64 numpy on rounded inputs) and
GradScaler's semantics (against torch.amp.GradScaler, the oracle)."""
import threading

import ml_dtypes
import numpy as np
import pytest
import torch

import unet
import unet.functional as F
from unet import _C, amp, nn, optim

LOW = {"bf16": np.dtype(ml_dtypes.bfloat16), "fp16": np.dtype(np.float16)}
EPS = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11}  # unit roundoff of each 16-bit type


def rng(seed=0):
    return np.random.default_rng(seed)


def leaf(array, dtype="float32"):
    return unet.tensor(array, dtype=dtype, requires_grad=True)


def rounded(array, low):
    """``array`` rounded to the 16-bit type and back to float64: what the kernels multiply."""
    return np.asarray(array).astype(low).astype(np.float64)


def assert_close(actual, expected, eps, what):
    """Every element within a few units of 16-bit roundoff of the largest reference value."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    bound = 4 * eps * max(np.abs(expected).max(), 1e-30)
    assert np.abs(actual - expected).max() <= bound, (what, np.abs(actual - expected).max(), bound)


# ================================================================= autocast: state

def test_autocast_nests_disables_and_restores():
    assert amp.get_autocast_dtype() is None and not amp.is_autocast_enabled()
    with amp.autocast("bf16"):
        assert amp.get_autocast_dtype() == unet.bfloat16
        with amp.autocast(enabled=False):
            assert amp.get_autocast_dtype() is None
        with amp.autocast("float16"):
            assert amp.get_autocast_dtype() == unet.float16
        assert amp.get_autocast_dtype() == unet.bfloat16
    assert amp.get_autocast_dtype() is None


def test_autocast_state_is_restored_when_the_block_raises():
    with pytest.raises(KeyError):
        with amp.autocast("fp16"):
            raise KeyError
    assert amp.get_autocast_dtype() is None


def test_autocast_as_a_decorator_also_under_recursion():
    @amp.autocast("fp16")
    def depth(n):
        seen = amp.get_autocast_dtype()
        return [seen] + (depth(n - 1) if n else [])

    assert depth(3) == [unet.float16] * 4
    assert amp.get_autocast_dtype() is None
    off = amp.autocast("bf16", enabled=False)(lambda: amp.get_autocast_dtype())
    with amp.autocast("bf16"):
        assert off() is None and amp.get_autocast_dtype() == unet.bfloat16


def test_one_instance_can_be_entered_again_while_active():
    ctx = amp.autocast("bf16")
    with ctx:
        with amp.autocast("fp16"):
            with ctx:
                assert amp.get_autocast_dtype() == unet.bfloat16
            assert amp.get_autocast_dtype() == unet.float16
        assert amp.get_autocast_dtype() == unet.bfloat16
    assert amp.get_autocast_dtype() is None


def test_autocast_is_per_thread():
    seen = {}
    entered, release = threading.Event(), threading.Event()

    def worker():
        seen["before"] = amp.get_autocast_dtype()
        with amp.autocast("fp16"):
            entered.set()
            release.wait(10)
            seen["inside"] = amp.get_autocast_dtype()

    with amp.autocast("bf16"):
        t = threading.Thread(target=worker)
        t.start()
        entered.wait(10)
        assert amp.get_autocast_dtype() == unet.bfloat16  # the thread's fp16 does not leak here
        release.set()
        t.join(10)
    assert seen == {"before": None, "inside": unet.float16}


@pytest.mark.parametrize("dtype", ["float32", "fp32", "float64", "int8", None, 3])
def test_autocast_rejects_other_dtypes(dtype):
    with pytest.raises(ValueError, match="dtype: expected 'bf16'"):
        amp.autocast(dtype)


def test_autocast_rejects_a_non_bool_enabled():
    with pytest.raises(TypeError, match="enabled: expected a bool"):
        amp.autocast("bf16", enabled="yes")


# ================================================================= autocast: policy

@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_dtype_policy(name):
    low = LOW[name]
    unet.manual_seed(0)
    layer, norm = nn.Linear(6, 5), nn.LayerNorm(5)
    x = unet.randn(4, 6)
    with amp.autocast(name):
        y = layer(x)
        assert y.dtype == low
        assert (y @ y.T).dtype == low and (x @ layer.weight.T).dtype == low
        assert y.tanh().dtype == low                   # elementwise: the input's dtype
        assert (y + x[:, :5]).dtype == unet.float32    # 16-bit with float32: float32
        for out in (F.softmax(y), F.log_softmax(y), norm(y), y.sum(), y.mean(0), y.var(),
                    F.cross_entropy(y, [0, 1, 2, 3]), F.mse_loss(y, np.zeros((4, 5))),
                    F.binary_cross_entropy_with_logits(y, np.ones((4, 5))),
                    F.nll_loss(F.log_softmax(y), [0, 1, 2, 3])):
            assert out.dtype == unet.float32
        d = unet.randn(3, 3).double()
        assert (d @ d).dtype == unet.float64  # float64 is never cast
        loss = F.cross_entropy(layer(x), [0, 1, 2, 3])
    loss.backward()
    assert layer.weight.grad.dtype == unet.float32 and layer.bias.grad.dtype == unet.float32
    assert (y @ y.T).dtype == low  # outside autocast a 16-bit pair stays 16-bit
    assert F.softmax(y).dtype == low and layer(x).dtype == unet.float32


def test_mismatched_dtypes_are_still_refused_outside_autocast_and_for_float64():
    layer = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="weight: dtype float32 differs from x's bfloat16"):
        layer(unet.randn(2, 3).bfloat16())
    with amp.autocast("bf16"):
        assert layer(unet.randn(2, 3).bfloat16()).dtype == unet.bfloat16
        with pytest.raises(TypeError, match="weight: dtype float32 differs from x's float64"):
            layer(unet.randn(2, 3).double())


# ================================================================= autocast: numerics

ACTIVATIONS = {
    "none": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(np.float64)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
    "gelu": (lambda z: z * 0.5 * (1 + _erf(z / np.sqrt(2))),
             lambda z: 0.5 * (1 + _erf(z / np.sqrt(2))) + z * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)),
}


def _erf(x):
    from scipy.special import erf
    return erf(x)


@pytest.mark.parametrize("name", ["bf16", "fp16"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_linear_under_autocast_matches_float64_on_rounded_inputs(name, activation):
    low, eps = LOW[name], EPS[name]
    r = rng(1)
    x, w, b = r.standard_normal((2, 5, 24)), r.standard_normal((7, 24)) * 0.3, r.standard_normal(7)
    g = r.standard_normal((2, 5, 7)).astype(low)
    tx, tw, tb = leaf(x), leaf(w), leaf(b)
    with amp.autocast(name):
        y = F.linear(tx, tw, tb, activation)
    y.backward(g)
    act, dact = ACTIVATIONS[activation]
    xr, wr, br = rounded(x, low), rounded(w, low), rounded(b, low)
    z = xr @ wr.T + br
    assert y.dtype == low
    assert_close(y.numpy(), act(z), eps, "out")
    # backward: dZ = g act'(Z) with Z as stored (16-bit), rounded to 16 bits: the products' input
    dz = rounded(g.astype(np.float64) * dact(rounded(z, low)), low).reshape(-1, 7)
    assert tx.grad.dtype == tw.grad.dtype == tb.grad.dtype == np.float32
    assert_close(tx.grad.numpy(), (dz @ wr).reshape(x.shape), eps, "grad x")
    assert_close(tw.grad.numpy(), dz.T @ xr.reshape(-1, 24), eps, "grad weight")
    assert_close(tb.grad.numpy(), dz.sum(0), eps, "grad bias")


def test_linear_under_autocast_runs_forward_and_backward_on_matmul(monkeypatch):
    calls = []
    for fn in ("matmul", "linear_forward", "linear_backward"):
        original = getattr(_C, fn)
        monkeypatch.setattr(_C, fn, lambda *a, _f=original, _n=fn, **k: (calls.append((_n, k)), _f(*a, **k))[1])
    layer = nn.Linear(8, 4, activation="relu")
    x = unet.randn(3, 8, requires_grad=True)
    with amp.autocast("bf16"):
        y = layer(x)
    assert [c[0] for c in calls] == ["matmul"]
    assert calls[0][1]["activation"] == "relu" and calls[0][1]["bias"] is not None  # fused epilogue
    y.sum().backward()
    assert [c[0] for c in calls] == ["matmul"] * 3
    assert calls[2][1]["trans_a"] and calls[2][1]["bias_grad"] is not None  # dW = g^T x, db fused


def test_linear_under_autocast_without_bias_and_with_frozen_weight():
    x, w = leaf(rng(2).standard_normal((4, 6))), unet.tensor(rng(3).standard_normal((3, 6)), dtype="float32")
    with amp.autocast("fp16"):
        y = F.linear(x, w)
    y.backward(np.ones((4, 3), np.float16))
    assert_close(x.grad.numpy(), np.ones((4, 3)) @ rounded(w.numpy(), np.float16), EPS["fp16"], "grad x")
    b = leaf(np.zeros(3))
    with amp.autocast("fp16"):
        y = F.linear(x.detach(), w, b)
    y.backward(np.full((4, 3), 2, np.float16))
    np.testing.assert_array_equal(b.grad.numpy(), [8, 8, 8])


@pytest.mark.parametrize("name", ["bf16", "fp16"])
@pytest.mark.parametrize("shape_a, shape_b", [
    ((5, 16), (16, 3)),            # one product
    ((2, 4, 5, 16), (16, 3)),      # a shared right factor
    ((4, 5, 16), (4, 16, 3)),      # a batch
    ((2, 1, 5, 16), (3, 16, 3)),   # broadcast batch axes
    ((16,), (4, 16, 3)),           # 1-D left
    ((4, 5, 16), (16,)),           # 1-D right
    ((16,), (16,)),                # a dot product
])
def test_matmul_under_autocast_matches_float64_on_rounded_inputs(name, shape_a, shape_b):
    low, eps = LOW[name], EPS[name]
    r = rng(4)
    a, b = r.standard_normal(shape_a), r.standard_normal(shape_b)
    ta, tb = leaf(a), leaf(b)
    with amp.autocast(name):
        out = ta @ tb
    ar, br = rounded(a, low), rounded(b, low)
    ref = np.matmul(ar, br)
    assert out.dtype == low and out.shape == ref.shape
    assert_close(out.numpy(), ref, eps, "out")
    g = r.standard_normal(ref.shape).astype(low)
    out.backward(g)
    ra, rb = torch.tensor(ar, requires_grad=True), torch.tensor(br, requires_grad=True)
    torch.matmul(ra, rb).backward(torch.tensor(g.astype(np.float64)))
    assert ta.grad.dtype == tb.grad.dtype == np.float32
    assert_close(ta.grad.numpy(), ra.grad.numpy(), eps, "grad a")
    assert_close(tb.grad.numpy(), rb.grad.numpy(), eps, "grad b")


@pytest.mark.parametrize("name", ["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_layers_under_autocast_are_the_float32_layer_on_rounded_values(name, kind):
    """16-bit inputs, float32 accumulation: the float32 layer run on rounded x and weights, up to the
    order of the float32 sums (the input projection runs on the mixed-precision matmul; see
    tests/test_rnn_projection_amp.py). (One layer: a stacked layer's input is the previous layer's
    output, rounded in turn.)"""
    low = LOW[name]
    unet.manual_seed(5)
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    layer = cls(6, 8, bidirectional=True)
    twin = cls(6, 8, bidirectional=True)
    twin.load_state_dict({k: v.to(low).float() for k, v in layer.state_dict().items()})
    x = unet.randn(5, 3, 6)
    xa, xb = x.detach().requires_grad_(), x.to(low).float().detach().requires_grad_()
    with amp.autocast(name):
        out = layer(xa, lengths=[5, 2, 4])[0]
    ref = twin(xb, lengths=[5, 2, 4])[0]
    assert out.dtype == unet.float32
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
    g = rng(6).standard_normal(out.shape).astype(np.float32)
    out.backward(g)
    ref.backward(g)
    np.testing.assert_allclose(xa.grad.numpy(), xb.grad.numpy(), rtol=1e-5, atol=1e-6)
    for (name_a, p), (_, q) in zip(layer.named_parameters(), twin.named_parameters()):
        assert p.grad.dtype == unet.float32
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=name_a)


def test_cast_for_matmul_is_the_one_policy_switch():
    a32, a64 = np.ones(2, np.float32), np.ones(2, np.float64)
    assert amp.cast_for_matmul(a32, None) == (a32, None)
    with amp.autocast("fp16"):
        h, d, n, i = amp.cast_for_matmul(a32, a64, None, np.ones(2, np.int64))
    assert (h.dtype, d.dtype, n, i.dtype) == (np.float16, np.float64, None, np.int64)


# ================================================================= training under autocast

def _train_mlp(name, steps=200):
    unet.manual_seed(0)
    r = rng(7)
    centers = r.standard_normal((4, 16)) * 0.4
    labels = r.integers(0, 4, 512)
    data = (centers[labels] + r.standard_normal((512, 16))).astype(np.float32)
    model = nn.Sequential(nn.Linear(16, 64, activation="gelu"), nn.Linear(64, 64, activation="relu"),
                          nn.Linear(64, 4))
    opt = optim.AdamW(model.parameters(), lr=3e-3)
    scaler = amp.GradScaler(enabled=name == "fp16")
    losses = []
    for step in range(steps):
        index = r.integers(0, 512, 64)
        opt.zero_grad()
        with amp.autocast(name or "bf16", enabled=name is not None):
            loss = F.cross_entropy(model(unet.tensor(data[index])), labels[index])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    with unet.no_grad():
        final = F.cross_entropy(model(unet.tensor(data)), labels).item()
    return final, model


def test_mlp_trained_in_bf16_and_fp16_ends_near_its_fp32_loss():
    fp32, _ = _train_mlp(None)
    assert fp32 < 0.5  # it learned something (chance: log 4 = 1.39)
    for name in ("bf16", "fp16"):
        loss, model = _train_mlp(name)
        assert all(p.dtype == unet.float32 for p in model.parameters())
        assert abs(loss - fp32) <= 0.05 * fp32 + 0.01, (name, loss, fp32)


# ================================================================= GradScaler

class Param:
    """Parameters of a one-group optimizer, with gradients set by hand."""

    def __init__(self, *values):
        self.params = [unet.tensor(np.asarray(v, np.float32), requires_grad=True) for v in values]
        self.opt = optim.SGD(self.params, lr=0.5)

    def set_grads(self, *grads):
        for p, g in zip(self.params, grads):
            p.grad = unet.tensor(np.asarray(g, np.float32))

    def values(self):
        return [p.numpy().copy() for p in self.params]


def test_an_inf_skips_the_step_and_halves_the_scale():
    m = Param([1.0, 2.0], [3.0])
    scaler = amp.GradScaler(init_scale=1024.0)
    m.set_grads([512.0, 1024.0], [np.inf])
    before = m.values()
    scaler.step(m.opt)
    scaler.update()
    assert all((a == b).all() for a, b in zip(before, m.values()))
    assert scaler.get_scale() == 512.0
    m.set_grads([512.0, 1024.0], [256.0])
    scaler.step(m.opt)
    scaler.update()
    np.testing.assert_array_equal(m.values()[0], [1.0 - 0.5 * 1.0, 2.0 - 0.5 * 2.0])  # grads / 512
    np.testing.assert_array_equal(m.values()[1], [3.0 - 0.5 * 0.5])
    m.set_grads([np.nan, 0.0], [0.0])
    scaler.step(m.opt)
    scaler.update()
    assert scaler.get_scale() == 256.0


def test_the_scale_grows_after_growth_interval_clean_steps():
    m = Param([0.0])
    scaler = amp.GradScaler(init_scale=4.0, growth_factor=3.0, growth_interval=3)
    scales = []
    for _ in range(7):
        m.set_grads([1.0])
        scaler.step(m.opt)
        scaler.update()
        scales.append(scaler.get_scale())
    assert scales == [4, 4, 12, 12, 12, 36, 36]
    assert scaler.state_dict()["_growth_tracker"] == 1


def test_the_scale_stops_growing_at_float32s_top():
    m = Param([0.0])
    scaler = amp.GradScaler(init_scale=2.0 ** 127, growth_interval=1)
    m.set_grads([1.0])
    scaler.step(m.opt)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 127 and scaler.state_dict()["_growth_tracker"] == 0


def test_unscale_then_clip_then_step():
    m = Param([0.0, 0.0], [0.0])
    scaler = amp.GradScaler(init_scale=256.0)
    m.set_grads([3.0 * 256, 0.0], [4.0 * 256])
    scaler.unscale_(m.opt)
    np.testing.assert_array_equal(m.params[0].grad.numpy(), [3.0, 0.0])
    norm = optim.clip_grad_norm_(m.params, 1.0)
    assert norm.item() == pytest.approx(5.0)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(m.opt)
    scaler.step(m.opt)  # no second unscaling
    np.testing.assert_allclose(m.values()[0], [-0.5 * 3 / 5, 0.0], rtol=1e-5)
    np.testing.assert_allclose(m.values()[1], [-0.5 * 4 / 5], rtol=1e-5)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(m.opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(m.opt)
    scaler.update()
    assert scaler.get_scale() == 256.0


def test_state_dict_round_trip_and_torch_compatibility():
    m = Param([0.0])
    scaler = amp.GradScaler(init_scale=8.0, growth_factor=4.0, backoff_factor=0.25, growth_interval=5)
    for g in (1.0, np.inf, 1.0, 1.0):
        m.set_grads([g])
        scaler.step(m.opt)
        scaler.update()
    state = scaler.state_dict()
    assert state == {"scale": 2.0, "growth_factor": 4.0, "backoff_factor": 0.25, "growth_interval": 5,
                     "_growth_tracker": 2}
    copy = amp.GradScaler()
    copy.load_state_dict(state)
    assert copy.state_dict() == state
    theirs = torch.amp.GradScaler("cpu")
    theirs.load_state_dict(state)
    assert theirs.state_dict() == state
    back = amp.GradScaler()
    back.load_state_dict(theirs.state_dict())
    assert back.state_dict() == state
    with pytest.raises(ValueError, match="empty"):
        amp.GradScaler().load_state_dict(amp.GradScaler(enabled=False).state_dict())
    with pytest.raises(ValueError, match="missing _growth_tracker"):
        amp.GradScaler().load_state_dict({k: v for k, v in state.items() if k != "_growth_tracker"})


def test_a_disabled_scaler_is_a_pass_through():
    m = Param([1.0])
    scaler = amp.GradScaler(enabled=False)
    loss = unet.tensor(2.0, requires_grad=True)
    assert scaler.scale(loss) is loss
    m.set_grads([1.0])
    scaler.unscale_(m.opt)
    np.testing.assert_array_equal(m.params[0].grad.numpy(), [1.0])
    scaler.step(m.opt)
    scaler.update()
    np.testing.assert_array_equal(m.values()[0], [0.5])
    assert scaler.get_scale() == 1.0 and scaler.state_dict() == {} and not scaler.is_enabled()
    scaler.load_state_dict({})  # nothing to restore on a disabled scaler


def test_scale_multiplies_tensors_and_nested_lists():
    scaler = amp.GradScaler(init_scale=8.0)
    a, b = unet.tensor(1.5), unet.tensor([2.0], dtype="float16")
    out = scaler.scale([a, (b,)])
    assert isinstance(out, list) and isinstance(out[1], tuple)
    assert out[0].item() == 12.0 and out[1][0].item() == 16.0
    assert out[1][0].dtype == unet.float32  # scaled in float32: a float16 loss times 65536 would overflow
    with pytest.raises(TypeError, match="outputs: expected a Tensor"):
        scaler.scale(3.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"init_scale": 0.0}, "init_scale"), ({"init_scale": float("inf")}, "init_scale"),
    ({"init_scale": 1e39}, "init_scale"), ({"growth_factor": 1.0}, "growth_factor"),
    ({"backoff_factor": 1.0}, "backoff_factor"), ({"backoff_factor": 0.0}, "backoff_factor"),
    ({"growth_interval": 0}, "growth_interval"), ({"growth_interval": 2.5}, "growth_interval"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        amp.GradScaler(**kwargs)


def test_misuse_is_refused():
    scaler = amp.GradScaler()
    with pytest.raises(RuntimeError, match="no inf/NaN checks"):
        scaler.update()
    m = Param([1.0])
    m.params[0].grad = unet.tensor([1.0], dtype="float16")
    with pytest.raises(ValueError, match="float16 gradients"):
        scaler.unscale_(m.opt)
    with pytest.raises(RuntimeError, match="closure"):
        scaler.step(m.opt, closure=lambda: 0.0)
    with pytest.raises(TypeError, match="optimizer"):
        scaler.step(object())


def test_scale_sequence_matches_torch_on_the_same_inf_pattern():
    pattern = [0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    settings = dict(init_scale=2.0 ** 10, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    ours, theirs = amp.GradScaler(**settings), torch.amp.GradScaler("cpu", **settings)
    m = Param([1.0, -1.0])
    tp = torch.tensor([1.0, -1.0], requires_grad=True)
    topt = torch.optim.SGD([tp], lr=0.5)
    for step, bad in enumerate(pattern):
        grad = [float("inf") if bad else 0.25 * step, 2.0]
        for_ours, for_theirs = ours.get_scale(), theirs.get_scale()
        assert for_ours == for_theirs, step
        m.set_grads(np.asarray(grad) * for_ours)
        topt.zero_grad()
        theirs.scale(tp.sum() * 0).backward()  # creates the scale; the gradient is set below
        tp.grad = torch.tensor(grad) * for_theirs
        ours.step(m.opt)
        theirs.step(topt)
        ours.update()
        theirs.update()
        np.testing.assert_array_equal(m.values()[0], tp.detach().numpy(), err_msg=str(step))
    assert ours.state_dict() == theirs.state_dict()


class FusedSGD(optim.SGD):
    """A fake fused optimizer on the step_scaled contract: unscaling and the inf check in the update."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.calls = []

    def step_scaled(self, scale):
        self.calls.append(("step_scaled", scale))
        grads = [p.grad.numpy() for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not all(np.isfinite(g).all() for g in grads):
            return True
        with unet.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.data -= group["lr"] * p.grad.numpy() / scale
        return False

    def step(self, closure=None):
        self.calls.append(("step", None))
        return super().step(closure)


def test_fused_optimizers_get_step_scaled_and_leave_the_gradients_scaled():
    p = unet.tensor([1.0, 1.0], requires_grad=True)
    opt = FusedSGD([p], lr=0.5)
    scaler = amp.GradScaler(init_scale=16.0, growth_interval=2)
    p.grad = unet.tensor([16.0, 32.0])
    scaler.step(opt)
    scaler.update()
    assert opt.calls == [("step_scaled", 16.0)]
    np.testing.assert_array_equal(p.numpy(), [0.5, 0.0])
    np.testing.assert_array_equal(p.grad.numpy(), [16.0, 32.0])  # untouched
    p.grad = unet.tensor([np.inf, 0.0])
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(p.numpy(), [0.5, 0.0])
    assert scaler.get_scale() == 8.0
    # after unscale_ (e.g. to clip) the gradients are true ones: the plain step runs
    p.grad = unet.tensor([8.0, 8.0])
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    assert opt.calls[-1] == ("step", None)
    np.testing.assert_array_equal(p.numpy(), [0.0, -0.5])
    # two clean steps in a row: the scale grows as with a plain optimizer
    for _ in range(2):
        p.grad = unet.tensor([0.0, 0.0])
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 16.0


# ================================================================= GPU: the CUDA path against the CPU one

@pytest.mark.gpu
@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_autocast_on_the_gpu_matches_the_cpu(name):
    eps = EPS[name]
    r = rng(8)
    arrays = {"x": r.standard_normal((3, 5, 32)), "w": r.standard_normal((9, 32)) * 0.3,
              "b": r.standard_normal(9), "m": r.standard_normal((3, 9, 4))}
    g = r.standard_normal((3, 5, 4)).astype(np.float32)
    results = {}
    for device in ("cpu", "cuda"):
        t = {k: unet.tensor(v, dtype="float32", device=device, requires_grad=True) for k, v in arrays.items()}
        with amp.autocast(name):
            out = F.linear(t["x"], t["w"], t["b"], "gelu") @ t["m"]
            loss = (out * unet.tensor(g, device=device)).sum()
        loss.backward()
        results[device] = [out.cpu().numpy()] + [t[k].grad.cpu().numpy() for k in arrays]
    for cpu, gpu in zip(results["cpu"], results["cuda"]):
        assert_close(gpu, cpu, eps, "cuda vs cpu")


@pytest.mark.gpu
def test_grad_scaler_on_gpu_gradients():
    p = unet.tensor([1.0, 2.0], device="cuda", requires_grad=True)
    opt = optim.SGD([p], lr=1.0)
    scaler = amp.GradScaler(init_scale=4.0)
    p.grad = unet.tensor([4.0, np.inf], device="cuda")
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(p.cpu().numpy(), [1.0, 2.0])
    assert scaler.get_scale() == 2.0
    p.grad = unet.tensor([2.0, 4.0], device="cuda")
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(p.cpu().numpy(), [0.0, 0.0])
