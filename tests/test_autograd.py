"""The reverse-mode engine: graph order, accumulation, grad modes, freed graphs, in-place checks."""
import threading

import numpy as np
import pytest
import torch

import unet
from gradcheck import gradcheck


def leaf(*values, dtype="float64"):
    return unet.tensor(np.array(values, dtype=np.float64), dtype=dtype, requires_grad=True)


# ---------------------------------------------------------------- graph order

def test_diamond_graph_sums_every_path():
    x = leaf(0.5, -1.0, 2.0)
    a = x * 2
    b, c = a.exp(), a * a          # a feeds two branches that meet again in d
    d = (b + c) * a
    d.sum().backward()
    t = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    ta = t * 2
    ((ta.exp() + ta * ta) * ta).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_tensor_used_many_times_and_deep_chain():
    x = leaf(0.3, 0.7)
    y = x
    for _ in range(50):  # every node must run after all its consumers: one wrong order and
        y = y * 0.9 + x * 0.1 + y.tanh() * 0.01  # a branch's gradient arrives too late
    y.sum().backward()
    assert gradcheck(lambda x: _chain(x), [leaf(0.3, 0.7)])
    t = torch.tensor([0.3, 0.7], dtype=torch.float64, requires_grad=True)
    ty = t
    for _ in range(50):
        ty = ty * 0.9 + t * 0.1 + ty.tanh() * 0.01
    ty.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def _chain(x):
    y = x
    for _ in range(50):
        y = y * 0.9 + x * 0.1 + y.tanh() * 0.01
    return y


def test_long_graph_does_not_hit_recursion_limit():
    x = leaf(1.0)
    y = x
    for _ in range(5000):
        y = y + 0.0
    y.backward()
    assert x.grad.item() == 1.0


def test_same_tensor_on_both_sides():
    x = leaf(3.0, -2.0)
    (x * x + x - x / x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([3.0, -2.0]) + 1)


# ---------------------------------------------------------------- accumulation

def test_two_backward_calls_accumulate_into_leaf_grad():
    x = leaf(1.0, 2.0)
    (x * 3).sum().backward()
    g = x.grad
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3 + 2, 3 + 4])
    assert x.grad is g  # accumulated in place, as torch does
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3, 3])


def test_leaf_grad_does_not_alias_graph_buffers():
    x = leaf(1.0, 2.0)
    y = x.reshape(2)  # reshape(same shape) and Add pass their gradient array through unchanged
    g = unet.tensor([1.0, 1.0], dtype="float64")
    (y + 0).backward(g)
    x.grad.data += 5
    np.testing.assert_array_equal(g.numpy(), [1.0, 1.0])


def test_grad_of_float32_leaf_through_float64_op_stays_float32():
    x = leaf(1.0, 2.0, dtype="float32")
    w = leaf(3.0, 4.0)
    h = x @ w  # numpy promotes to float64
    h.backward()
    assert h.dtype == unet.float64
    assert x.grad.dtype == unet.float32 and w.grad.dtype == unet.float64


def test_backward_with_explicit_gradient():
    x = leaf(1.0, 2.0, 3.0)
    (x * 2).backward(unet.tensor([1.0, 0.0, -1.0]))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 0.0, -2.0])
    x.grad = None
    (x * 2).backward(np.array([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="gradient"):
        (x * 2).backward(unet.tensor([1.0, 2.0]))


def test_backward_on_leaf_itself():
    x = leaf(5.0)
    x.backward()
    x.backward()
    assert x.grad.item() == 2.0


# ---------------------------------------------------------------- errors

def test_backward_on_non_scalar_needs_gradient():
    x = leaf(1.0, 2.0)
    with pytest.raises(RuntimeError, match="gradient"):
        (x * 2).backward()
    (x * 2)[1:].backward()  # one element, any shape: fine
    assert x.grad.numpy().tolist() == [0.0, 2.0]


def test_backward_without_graph_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        unet.tensor([1.0]).sum().backward()
    x = leaf(1.0)
    with unet.no_grad():
        y = x * 2
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_requires_grad_on_integer_and_bool_tensors_raises_type_error():
    for data, dtype in (([1, 2], None), ([1.0], "int32"), ([True], None), ([1.5], "int64")):
        with pytest.raises(TypeError, match="requires_grad"):
            unet.tensor(data, dtype=dtype, requires_grad=True)
    with pytest.raises(TypeError, match="requires_grad"):
        unet.zeros(2, dtype="int64", requires_grad=True)
    with pytest.raises(TypeError, match="requires_grad"):
        unet.arange(3).requires_grad_()
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        assert unet.zeros(2, dtype=dtype, requires_grad=True).requires_grad


def test_integer_results_of_differentiable_inputs_are_constants():
    x = leaf(1.5, 2.5)
    i = x.long()
    assert i.dtype == unet.int64 and not i.requires_grad and i.is_leaf
    assert not (x > 2).requires_grad
    assert not x.argmax().requires_grad
    values, indices = x.max(0)
    assert values.requires_grad and not indices.requires_grad
    (x * i).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 2.0])


def test_second_backward_through_freed_graph_raises():
    x = leaf(1.0, 2.0)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    z = x.exp()
    z.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph"):  # a new graph on a freed node
        (z * 2).sum().backward()


def test_retain_graph_allows_second_backward():
    x = leaf(1.0, 2.0)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * first)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_freed_graph_releases_saved_arrays():
    x = leaf(1.0, 2.0)
    y = x.exp()
    node = y.grad_fn
    assert node.out is not None
    y.sum().backward()
    assert not hasattr(node, "out")  # the saved output is dropped, not kept until y dies


# ---------------------------------------------------------------- in-place changes

def test_inplace_change_of_saved_output_is_detected():
    x = leaf(1.0, 2.0)
    y = x.exp()  # Exp saves its output
    with unet.no_grad():
        y.add_(1)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_inplace_change_of_saved_input_is_detected():
    x = leaf(1.0, 2.0)
    w = leaf(3.0, 4.0)
    y = (x * w).sum()  # Mul saves both inputs
    with unet.no_grad():
        w.mul_(2)  # an optimizer step before backward
    with pytest.raises(RuntimeError, match="version 0 -> 1"):
        y.backward()


@pytest.mark.parametrize("how", ["detach", "slice", "reshape", "transpose", "split", "setitem"])
def test_inplace_change_through_a_view_is_detected(how):
    x = leaf(1.0, 2.0, 3.0, 4.0)
    y = x.exp()
    with unet.no_grad():
        if how == "detach":
            y.detach().add_(1)
        elif how == "slice":
            y[1:3].mul_(2)
        elif how == "reshape":
            y.reshape(2, 2).fill_(0)
        elif how == "transpose":
            y.reshape(2, 2).T.zero_()
        elif how == "split":
            y.split(2)[1].copy_(unet.zeros(2))
        else:
            y.detach()[0] = 5.0
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_inplace_change_of_unsaved_tensor_or_copy_is_fine():
    x = leaf(1.0, 2.0)
    y = x * 2
    s = y + 1  # Add saves nothing
    with unet.no_grad():
        y.add_(10)
        c = x.exp()[[0, 1]]  # advanced indexing copies: not a view
        c.add_(1)
    s.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])
    z = x.exp()
    with unet.no_grad():
        z.exp().add_(1)  # a new array, not z
    z.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0] + np.exp([1.0, 2.0]))


def test_inplace_on_tensor_requiring_grad_needs_no_grad():
    x = leaf(1.0, 2.0)
    for op in (lambda: x.add_(1), lambda: x.mul_(2), lambda: x.fill_(0), lambda: x.zero_(),
               lambda: x.copy_(unet.zeros(2)), lambda: x.__setitem__(0, 1.0)):
        with pytest.raises(RuntimeError, match="no_grad"):
            op()
    with unet.no_grad():
        x.add_(1)
        x[0] = 7.0
    np.testing.assert_array_equal(x.numpy(), [7.0, 3.0])
    assert x._version == 2


# ---------------------------------------------------------------- grad modes

def test_no_grad_context_manager():
    x = leaf(1.0)
    with unet.no_grad():
        y = x * 2
        assert not unet.is_grad_enabled()
    assert unet.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf


def test_no_grad_as_decorator_and_reusable():
    x = leaf(1.0)

    @unet.no_grad()
    def double(t):
        assert not unet.is_grad_enabled()
        return t * 2

    for _ in range(2):  # the decorator must work on every call, not just the first
        assert not double(x).requires_grad
        assert unet.is_grad_enabled()
    assert double.__name__ == "double"

    @unet.enable_grad()
    def grad_inside(t):
        return t * 2

    with unet.no_grad():
        assert grad_inside(x).requires_grad


def test_enable_grad_inside_no_grad_and_restored_after_exception():
    x = leaf(1.0)
    with unet.no_grad():
        with unet.enable_grad():
            assert (x * 2).requires_grad
        assert not (x * 2).requires_grad
    with pytest.raises(ZeroDivisionError):
        with unet.no_grad():
            1 / 0
    assert unet.is_grad_enabled()


def test_grad_mode_is_per_thread():
    seen = []
    with unet.no_grad():
        t = threading.Thread(target=lambda: seen.append(unet.is_grad_enabled()))
        t.start()
        t.join()
    assert seen == [True]


def test_backward_builds_no_graph():
    x = leaf(1.0, 2.0)
    (x.exp() * x).sum().backward()
    assert not x.grad.requires_grad and x.grad.grad_fn is None


def test_detach():
    x = leaf(1.0, 2.0)
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    (d * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    assert np.shares_memory(x.detach().numpy(), x.numpy())


def test_requires_grad_flag_propagation():
    x = leaf(1.0)
    c = unet.tensor([2.0], dtype="float64")
    assert (x * c).requires_grad and not (c * c).requires_grad
    assert (x * c).grad_fn is not None and not (x * c).is_leaf
    y = x * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)
    c.requires_grad_()
    (c * 3).sum().backward()
    assert c.grad.item() == 3.0


# ---------------------------------------------------------------- retain_grad, multi-output

def test_retain_grad_on_non_leaf():
    x = leaf(1.0, 2.0)
    h = x * 3
    h.retain_grad()
    y = h * h
    y.retain_grad()
    y.sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * 3 * np.array([1.0, 2.0]))
    np.testing.assert_allclose(y.grad.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(x.grad.numpy(), 18 * np.array([1.0, 2.0]))
    free = x * 2
    assert free.grad is None  # not retained: non-leaf grads are not kept


def test_retain_grad_on_split_output_and_leaf_is_harmless():
    x = leaf(1.0, 2.0, 3.0, 4.0)
    x.retain_grad()
    a, b = x.split(2)
    b.retain_grad()
    (a * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2, 2, 0, 0])
    np.testing.assert_allclose(b.grad.numpy(), [0, 0])


@pytest.mark.parametrize("used", [(0,), (1,), (2,), (0, 2)])
def test_multi_output_op_with_some_outputs_used(used):
    x = leaf(*range(7))
    parts = x.split([2, 3, 2])
    total = sum((parts[i] * (i + 1)).sum() for i in used)
    total.backward()
    expected = np.zeros(7)
    for i, (lo, hi) in enumerate([(0, 2), (2, 5), (5, 7)]):
        if i in used:
            expected[lo:hi] = i + 1
    np.testing.assert_allclose(x.grad.numpy(), expected)


def test_chunk_outputs_used_in_separate_backwards():
    x = leaf(1.0, 2.0, 3.0, 4.0)
    a, b = x.chunk(2)
    (a * a).sum().backward(retain_graph=True)
    (b * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 3.0, 3.0])


def test_gradients_flow_through_int_index_and_mask_tensors_only_to_floats():
    x = leaf(1.0, 2.0, 3.0)
    idx = unet.tensor([2, 2, 0])
    (x[idx].sum() + x[x > 1.5].sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0, 3.0])
    assert idx.grad is None
