"""Post-accumulate-grad hooks and end-of-backward callbacks (what DDP builds on)."""
import numpy as np
import pytest

import unet
from unet.autograd import queue_callback


def test_hook_sees_the_complete_gradient_of_a_leaf_used_many_times():
    w = unet.tensor([1.0, 2.0, 3.0], requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    # w feeds three nodes; the hook must run once, after the last of them
    loss = (w * 2.0).sum() + (w * w).sum() + w.exp().sum()
    loss.backward()
    expected = 2.0 + 2.0 * np.array([1.0, 2.0, 3.0]) + np.exp([1.0, 2.0, 3.0])
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], expected, rtol=1e-6)


def test_hooks_run_in_backward_order_and_once_per_pass():
    a = unet.tensor([1.0], requires_grad=True)
    b = unet.tensor([2.0], requires_grad=True)
    order = []
    a.register_post_accumulate_grad_hook(lambda t: order.append("a"))
    b.register_post_accumulate_grad_hook(lambda t: order.append("b"))
    # b is consumed last in the forward pass, so its gradient is complete first
    y = (a * 3.0).tanh()
    z = (y * b).sum()
    z.backward()
    assert order == ["b", "a"]
    (a * b).sum().backward()
    assert sorted(order[2:]) == ["a", "b"]


def test_hook_accumulates_across_passes_and_remove_stops_it():
    w = unet.tensor([1.0, -1.0], requires_grad=True)
    grads = []
    handle = w.register_post_accumulate_grad_hook(lambda t: grads.append(t.grad.numpy().copy()))
    (w * 2.0).sum().backward()
    (w * 2.0).sum().backward()
    np.testing.assert_allclose(grads[1], [4.0, 4.0])  # .grad accumulates across passes, as in torch
    handle.remove()
    (w * 2.0).sum().backward()
    assert len(grads) == 2


def test_hook_on_a_leaf_that_is_the_root_and_a_leaf_without_gradient():
    w = unet.tensor([3.0], requires_grad=True)
    unused = unet.tensor([1.0], requires_grad=True)
    calls = []
    w.register_post_accumulate_grad_hook(lambda t: calls.append("w"))
    unused.register_post_accumulate_grad_hook(lambda t: calls.append("unused"))
    w.backward(unet.tensor([1.0]))
    assert calls == ["w"]
    (w * unused.detach()).sum().backward()  # `unused` is outside this graph: no call
    assert calls == ["w", "w"]


def test_queue_callback_runs_after_every_hook():
    a = unet.tensor([1.0, 2.0], requires_grad=True)
    b = unet.tensor([3.0, 4.0], requires_grad=True)
    log = []

    def hook(t):
        log.append("hook")
        if len(log) == 1:
            queue_callback(lambda: log.append("callback"))

    a.register_post_accumulate_grad_hook(hook)
    b.register_post_accumulate_grad_hook(hook)
    (a * b).sum().backward()
    assert log == ["hook", "hook", "callback"]


def test_bad_registrations_raise():
    with pytest.raises(RuntimeError, match="does not require grad"):
        unet.tensor([1.0]).register_post_accumulate_grad_hook(lambda t: None)
    x = unet.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="only leaf tensors"):
        (x * 2.0).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(TypeError, match="hook: expected a callable"):
        x.register_post_accumulate_grad_hook(3)
    with pytest.raises(RuntimeError, match="no backward pass is running"):
        queue_callback(lambda: None)


def test_hooks_match_torch_gradient_on_a_small_model():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0, x0 = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    w = unet.tensor(w0, requires_grad=True)
    got = {}
    w.register_post_accumulate_grad_hook(lambda t: got.setdefault("g", t.grad.numpy().copy()))
    x = unet.tensor(x0)
    ((x @ w.T).tanh() @ w).sum().backward()
    tw = torch.tensor(w0, requires_grad=True)
    ((torch.tensor(x0) @ tw.T).tanh() @ tw).sum().backward()
    np.testing.assert_allclose(got["g"], tw.grad.numpy(), rtol=1e-12)
