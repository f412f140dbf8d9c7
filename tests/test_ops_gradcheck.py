"""Every differentiable primitive against PyTorch (values and gradients, float64 and float32) and
against central differences (float64, ``gradcheck``). Small inputs, many cases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import unet
import unet.functional as F
from gradcheck import gradcheck


def data(*shape, seed=0, low=None, away=(), margin=0.1):
    """Standard normal samples; ``low`` shifts them to |x| + low (positive), ``away`` keeps them at
    least ``margin`` from each listed point (kinks of relu, abs, clamp ...)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    if low is not None:
        x = np.abs(x) + low
    for point in away:
        near = np.abs(x - point) < margin
        x = np.where(near, point + np.where(x >= point, margin, -margin) * 2, x)
    return x


def _listify(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _np_dtype(t):
    return np.dtype(str(t.dtype).replace("torch.", ""))


TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}
TORCH = {np.float64: torch.float64, np.float32: torch.float32}


def compare(fn, tfn, *arrays, gc=True):
    """fn on unet tensors vs tfn on torch tensors: values, dtypes, gradients; then gradcheck.

    Floating arrays become leaves that require grad (in float64, then float32); integer
    and bool arrays are passed as constant tensors.
    """
    for dtype in (np.float64, np.float32):
        floating = [a.dtype.kind == "f" for a in arrays]
        xs = [unet.tensor(a.astype(dtype), requires_grad=True) if f else unet.tensor(a)
              for a, f in zip(arrays, floating)]
        ts = [torch.tensor(a.astype(dtype), requires_grad=True) if f else torch.tensor(a)
              for a, f in zip(arrays, floating)]
        outs, refs = _listify(fn(*xs)), _listify(tfn(*ts))
        assert len(outs) == len(refs)
        for o, r in zip(outs, refs):
            assert o.shape == tuple(r.shape)
            assert o.dtype == _np_dtype(r), (o.dtype, r.dtype)
            np.testing.assert_allclose(o.numpy().astype(np.float64), r.detach().double().numpy(),
                                       **TOL[dtype])
        rng = np.random.default_rng(7)
        pairs = [(o, r, rng.standard_normal(o.shape)) for o, r in zip(outs, refs) if r.requires_grad]
        assert pairs, "nothing to differentiate"
        for o, r, w in pairs:
            assert o.requires_grad
            o.backward(unet.tensor(w, dtype=dtype), retain_graph=True)
        torch.autograd.backward([r for _, r, _ in pairs],
                                [torch.tensor(w, dtype=TORCH[dtype]) for _, _, w in pairs])
        for x, t in zip(xs, ts):
            if not t.requires_grad:
                continue
            expected = np.zeros(t.shape) if t.grad is None else t.grad.double().numpy()
            assert x.grad is not None and x.grad.dtype == x.dtype and x.grad.shape == x.shape
            np.testing.assert_allclose(x.grad.numpy().astype(np.float64), expected, **TOL[dtype])
    if gc:
        leaves = [unet.tensor(a, requires_grad=True) if a.dtype.kind == "f" else unet.tensor(a)
                  for a in arrays]
        assert gradcheck(fn, leaves)


# ---------------------------------------------------------------- arithmetic, broadcasting

BINARY = {
    "add": (lambda a, b: a + b, None),
    "sub": (lambda a, b: a - b, None),
    "mul": (lambda a, b: a * b, None),
    "div": (lambda a, b: a / b, "b_away"),
    "pow": (lambda a, b: a ** b, "a_positive"),
}
SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((3,), (2, 3)), ((2, 1), (1, 3)), ((4, 1, 3), (2, 1)),
          ((), (2, 3)), ((2, 3), ()), ((), ()), ((1,), (2, 3)), ((2, 3, 1), (3, 4))]


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("op", BINARY)
def test_binary_broadcast(op, shapes):
    fn, kind = BINARY[op]
    a = data(*shapes[0], seed=1, low=0.5 if kind == "a_positive" else None)
    b = data(*shapes[1], seed=2, low=0.5 if kind == "b_away" else None)
    if kind == "b_away":
        b = b * np.where(data(*shapes[1], seed=3) > 0, 1, -1)
    compare(fn, fn, a, b)


SCALAR = {
    "x+2": lambda x: x + 2, "2+x": lambda x: 2 + x, "x-2.5": lambda x: x - 2.5,
    "2.5-x": lambda x: 2.5 - x, "x*3": lambda x: x * 3, "3*x": lambda x: 3 * x,
    "x/4": lambda x: x / 4, "4/x": lambda x: 4 / x, "x**2": lambda x: x ** 2,
    "x**3": lambda x: x ** 3, "x**0.5": lambda x: x ** 0.5, "x**-1": lambda x: x ** -1,
    "2**x": lambda x: 2.0 ** x, "0.5**x": lambda x: 0.5 ** x, "-x": lambda x: -x,
    "x.pow(1.5)": lambda x: x.pow(1.5), "x*x*x": lambda x: x * x * x, "x/x": lambda x: x / x,
    "abs()": lambda x: abs(x),
}


@pytest.mark.parametrize("shape", [(2, 3), ()], ids=str)
@pytest.mark.parametrize("expr", SCALAR)
def test_scalar_operand(expr, shape):
    # positive inputs keep x**0.5, 4/x and x**-1 away from their poles
    compare(SCALAR[expr], SCALAR[expr], data(*shape, seed=4, low=0.5))


def test_numpy_array_operand_either_side():
    c = data(2, 3, seed=5)
    compare(lambda x: c * x + x / (c * c + 1) - c,
            lambda x: torch.tensor(c) * x + x / (torch.tensor(c) ** 2 + 1) - torch.tensor(c),
            data(2, 3, seed=6))


def test_mixed_precision_promotes_like_torch():
    a = data(2, 3, seed=1).astype(np.float32)
    b = data(3, seed=2)
    x, y = unet.tensor(a, requires_grad=True), unet.tensor(b, requires_grad=True)
    out = x * y
    assert out.dtype == unet.float64
    out.sum().backward()
    assert x.grad.dtype == unet.float32 and y.grad.dtype == unet.float64
    np.testing.assert_allclose(x.grad.numpy(), np.broadcast_to(b, (2, 3)), rtol=1e-6)
    np.testing.assert_allclose(y.grad.numpy(), a.sum(0).astype(np.float64), rtol=1e-6)


# ---------------------------------------------------------------- matmul

MATMUL = [((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((5, 2, 3), (5, 3, 4)),
          ((5, 2, 3), (3, 4)), ((3,), (5, 3, 4)), ((5, 2, 3), (3,)), ((2, 1, 2, 3), (4, 3, 2)),
          ((1, 2, 3), (4, 3, 2))]


@pytest.mark.parametrize("shapes", MATMUL, ids=str)
def test_matmul(shapes):
    compare(lambda a, b: a @ b, lambda a, b: a @ b, data(*shapes[0], seed=1), data(*shapes[1], seed=2))


def test_matmul_method_and_reversed_numpy():
    w = data(3, 2, seed=3)
    compare(lambda x: x.matmul(x.T) + np.eye(2, dtype=x.dtype) @ x @ w.astype(x.dtype),
            lambda x: x @ x.T + torch.eye(2, dtype=x.dtype) @ x @ torch.tensor(w, dtype=x.dtype),
            data(2, 3, seed=4))


# ---------------------------------------------------------------- elementwise math

UNARY = {
    "exp": (lambda x: x.exp(), torch.exp, {}),
    "log": (lambda x: x.log(), torch.log, dict(low=0.2)),
    "sqrt": (lambda x: x.sqrt(), torch.sqrt, dict(low=0.2)),
    "abs": (lambda x: x.abs(), torch.abs, dict(away=(0,))),
    "tanh": (lambda x: x.tanh(), torch.tanh, {}),
    "sigmoid": (lambda x: x.sigmoid(), torch.sigmoid, {}),
    "relu": (lambda x: x.relu(), torch.relu, dict(away=(0,))),
    "F.relu": (F.relu, TF.relu, dict(away=(0,))),
    "F.tanh": (F.tanh, torch.tanh, {}),
    "F.sigmoid": (F.sigmoid, torch.sigmoid, {}),
    "gelu": (F.gelu, TF.gelu, {}),
    "leaky_relu": (F.leaky_relu, TF.leaky_relu, dict(away=(0,))),
    "leaky_relu(0.2)": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2), dict(away=(0,))),
    "clamp(min)": (lambda x: x.clamp(min=-0.5), lambda x: x.clamp(min=-0.5), dict(away=(-0.5,))),
    "clamp(max)": (lambda x: x.clamp(max=0.5), lambda x: x.clamp(max=0.5), dict(away=(0.5,))),
    "clamp(both)": (lambda x: x.clamp(-0.5, 0.5), lambda x: x.clamp(-0.5, 0.5), dict(away=(-0.5, 0.5))),
    "softmax(-1)": (lambda x: F.softmax(x, -1), lambda x: torch.softmax(x, -1), {}),
    "softmax(0)": (lambda x: F.softmax(x, dim=0), lambda x: torch.softmax(x, 0), {}),
    "log_softmax(-1)": (lambda x: F.log_softmax(x), lambda x: torch.log_softmax(x, -1), {}),
    "log_softmax(1)": (lambda x: F.log_softmax(x, 1), lambda x: torch.log_softmax(x, 1), {}),
}


# every op on a 3-D tensor, and on a 0-d one where it has no dim argument past 0
UNARY_CASES = [(name, shape) for name in UNARY for shape in [(2, 3, 4), ()]
               if not (shape == () and name.endswith("(1)"))]


@pytest.mark.parametrize("name, shape", UNARY_CASES, ids=str)
def test_unary(name, shape):
    fn, tfn, kw = UNARY[name]
    compare(fn, tfn, data(*shape, seed=8, **kw))


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softmax(-1)", "log_softmax(-1)", "gelu", "exp"])
def test_unary_large_inputs_stay_finite(name):
    fn, tfn, _ = UNARY[name]
    x = np.array([[-800.0, -30.0, 0.0, 30.0, 700.0]]) if name == "exp" else \
        np.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0]])
    out = fn(unet.tensor(x, dtype="float64", requires_grad=True))
    np.testing.assert_allclose(out.numpy(), tfn(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-300)


def test_relu_at_infinity_and_zero():
    x = unet.tensor([-np.inf, -1.0, 0.0, 2.0, np.inf], dtype="float64", requires_grad=True)
    y = x.relu()
    np.testing.assert_array_equal(y.numpy(), [0, 0, 0, 2, np.inf])
    y.backward(unet.ones(5, dtype="float64"))
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 0, 1, 1])  # relu'(0) = 0, as in torch


def test_clamp_needs_a_bound():
    with pytest.raises(ValueError, match="min"):
        unet.tensor([1.0]).clamp()


# ---------------------------------------------------------------- reductions

REDUCE = {
    "sum()": (lambda x: x.sum(), lambda x: x.sum()),
    "sum(0)": (lambda x: x.sum(0), lambda x: x.sum(0)),
    "sum(1,keep)": (lambda x: x.sum(1, keepdim=True), lambda x: x.sum(1, keepdim=True)),
    "sum((0,2))": (lambda x: x.sum(dim=(0, 2)), lambda x: x.sum(dim=(0, 2))),
    "sum(-1)": (lambda x: x.sum(-1), lambda x: x.sum(-1)),
    "mean()": (lambda x: x.mean(), lambda x: x.mean()),
    "mean(1)": (lambda x: x.mean(1), lambda x: x.mean(1)),
    "mean((0,-1),keep)": (lambda x: x.mean((0, -1), keepdim=True), lambda x: x.mean((0, -1), keepdim=True)),
    "var()": (lambda x: x.var(), lambda x: x.var()),
    "var(0)": (lambda x: x.var(0), lambda x: x.var(0)),
    "var(1,keep)": (lambda x: x.var(1, keepdim=True), lambda x: x.var(1, keepdim=True)),
    "var(-1,c=0)": (lambda x: x.var(-1, correction=0), lambda x: x.var(-1, correction=0)),
    "var(2,unbiased=False)": (lambda x: x.var(2, unbiased=False), lambda x: x.var(2, unbiased=False)),
    "std()": (lambda x: x.std(), lambda x: x.std()),
    "std(1)": (lambda x: x.std(1), lambda x: x.std(1)),
    "std((0,1),keep)": (lambda x: x.std((0, 1), keepdim=True), lambda x: x.std((0, 1), keepdim=True)),
    "max()": (lambda x: x.max(), lambda x: x.max()),
    "min()": (lambda x: x.min(), lambda x: x.min()),
    "max(0)": (lambda x: tuple(x.max(0)), lambda x: tuple(x.max(0))),
    "max(1,keep)": (lambda x: tuple(x.max(1, keepdim=True)), lambda x: tuple(x.max(1, keepdim=True))),
    "min(-1)": (lambda x: tuple(x.min(-1)), lambda x: tuple(x.min(-1))),
    "min(2,keep)": (lambda x: tuple(x.min(dim=2, keepdim=True)), lambda x: tuple(x.min(dim=2, keepdim=True))),
}


@pytest.mark.parametrize("name", REDUCE)
def test_reduction(name):
    fn, tfn = REDUCE[name]
    compare(fn, tfn, data(2, 3, 4, seed=9))


def test_reductions_of_0d_tensor_accept_dim_0():
    compare(lambda x: x.sum(0) + x.mean(-1) + x.max(0).values,
            lambda x: x.sum(0) + x.mean(-1) + x.max(0).values, np.array(1.5))


def test_max_min_ties_share_the_gradient_like_torch():
    a = np.array([[1.0, 3.0], [3.0, -2.0], [-2.0, 0.5]])
    compare(lambda x: x.max() * 2 + x.min(), lambda x: x.max() * 2 + x.min(), a, gc=False)
    compare(lambda x: x.max(1)[0], lambda x: x.max(1)[0], a)


def test_argmax_argmin_match_torch():
    a = data(3, 4, seed=10)
    x, t = unet.tensor(a), torch.tensor(a)
    for dim in (None, 0, 1, -1):
        for keep in (False, True):
            if dim is None and keep:
                continue
            np.testing.assert_array_equal(x.argmax(dim, keepdim=keep).numpy(), t.argmax(dim, keepdim=keep).numpy())
            np.testing.assert_array_equal(x.argmin(dim, keepdim=keep).numpy(), t.argmin(dim, keepdim=keep).numpy())
    assert x.argmax(1).dtype == unet.int64


@pytest.mark.filterwarnings("ignore:var")
def test_var_of_one_element_is_nan_without_crashing():
    x = unet.tensor([2.0], dtype="float64", requires_grad=True)
    v = x.var()
    assert np.isnan(v.item())
    v.backward()
    t = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    t.var().backward()
    np.testing.assert_array_equal(np.isnan(x.grad.numpy()), np.isnan(t.grad.numpy()))


# ---------------------------------------------------------------- shapes

SHAPE_OPS = {
    "reshape(6,4)": lambda x: x.reshape(6, 4),
    "reshape(-1)": lambda x: x.reshape(-1),
    "reshape((4,-1))": lambda x: x.reshape((4, -1)),
    "view(3,8)": lambda x: x.view(3, 8),
    "transpose(0,2)": lambda x: x.transpose(0, 2),
    "transpose(-1,1)": lambda x: x.transpose(-1, 1),
    "permute(2,0,1)": lambda x: x.permute(2, 0, 1),
    "permute(-1,0,1)": lambda x: x.permute(-1, 0, 1),
    "unsqueeze(0)": lambda x: x.unsqueeze(0),
    "unsqueeze(-1)": lambda x: x.unsqueeze(-1),
    "unsqueeze(2)": lambda x: x.unsqueeze(2),
    "flatten()": lambda x: x.flatten(),
    "flatten(1)": lambda x: x.flatten(1),
    "flatten(0,1)": lambda x: x.flatten(0, 1),
    "flatten(-2,-1)": lambda x: x.flatten(-2, -1),
    "unsqueeze.expand": lambda x: x.unsqueeze(1).expand(2, 5, 3, 4),
    "expand(-1)": lambda x: x[:, :1].expand(-1, 3, -1),
    "expand lead": lambda x: x[:1].expand(2, 2, 3, 4),
    "view.T": lambda x: x.reshape(6, 4).T,
    "t()": lambda x: x.reshape(6, 4).t(),
    "transpose.reshape": lambda x: x.transpose(0, 1).reshape(3, 8),
}


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_op(name):
    compare(SHAPE_OPS[name], SHAPE_OPS[name], data(2, 3, 4, seed=11))


@pytest.mark.parametrize("expr", ["squeeze()", "squeeze(1)", "squeeze(-1)", "squeeze(0)", "squeeze(3)"])
def test_squeeze(expr):
    fn = eval(f"lambda x: x.{expr}")
    compare(fn, fn, data(2, 1, 3, 1, seed=12))


# ---------------------------------------------------------------- joining and splitting

JOIN = {
    "cat(0)": (lambda a, b: unet.cat([a, b]), lambda a, b: torch.cat([a, b]), [(2, 3), (1, 3)]),
    "cat(1)": (lambda a, b: unet.cat([a, b], 1), lambda a, b: torch.cat([a, b], 1), [(2, 3), (2, 2)]),
    "cat(-1)x3": (lambda a, b, c: unet.concat((a, b, c), dim=-1), lambda a, b, c: torch.cat((a, b, c), -1),
                  [(2, 1), (2, 3), (2, 2)]),
    "F.cat same": (lambda a: F.cat([a, a * 2, a], 0), lambda a: torch.cat([a, a * 2, a], 0), [(2, 2)]),
    "stack(0)": (lambda a, b: unet.stack([a, b]), lambda a, b: torch.stack([a, b]), [(2, 3), (2, 3)]),
    "stack(1)": (lambda a, b: unet.stack([a, b], 1), lambda a, b: torch.stack([a, b], 1), [(2, 3), (2, 3)]),
    "stack(2)": (lambda a, b: unet.stack([a, b], 2), lambda a, b: torch.stack([a, b], 2), [(2, 3), (2, 3)]),
    "stack(-1)": (lambda a, b: F.stack([a, b], -1), lambda a, b: torch.stack([a, b], -1), [(2, 3), (2, 3)]),
    "stack 0-d": (lambda a, b: unet.stack([a, b]), lambda a, b: torch.stack([a, b]), [(), ()]),
    "split(2)": (lambda a: a.split(2), lambda a: a.split(2), [(5, 3)]),
    "split([1,3,1])": (lambda a: a.split([1, 3, 1]), lambda a: a.split([1, 3, 1]), [(5, 3)]),
    "split(2,dim=1)": (lambda a: a.split(2, dim=1), lambda a: a.split(2, dim=1), [(3, 5)]),
    "split(4,-1)": (lambda a: F.split(a, 4, -1), lambda a: torch.split(a, 4, -1), [(2, 3)]),
    "chunk(3)": (lambda a: a.chunk(3), lambda a: a.chunk(3), [(5, 3)]),
    "chunk(2,-1)": (lambda a: a.chunk(2, -1), lambda a: a.chunk(2, -1), [(3, 5)]),
    "chunk(4) of 6": (lambda a: a.chunk(4), lambda a: a.chunk(4), [(6,)]),
    "split some used": (lambda a: a.split(2)[1] * a.split(2)[0], lambda a: a.split(2)[1] * a.split(2)[0], [(6, 2)]),
}


@pytest.mark.parametrize("name", JOIN)
def test_join_split(name):
    fn, tfn, shapes = JOIN[name]
    compare(fn, tfn, *[data(*s, seed=13 + i) for i, s in enumerate(shapes)])


# ---------------------------------------------------------------- indexing

INDEX = {
    "1": 1, "-1": -1, "1:3": slice(1, 3), "::-1": slice(None, None, -1), "::-2": slice(None, None, -2),
    ":,1": (slice(None), 1), "...,0": (Ellipsis, 0), "None,1:": (None, slice(1, None)),
    "1,::-1": (1, slice(None, None, -1)), ":,-2:0:-1": (slice(None), slice(-2, 0, -1)),
    "3:0:-2,::-3": (slice(3, 0, -2), slice(None, None, -3)), "[0,2,0]": [0, 2, 0],
    "array[1,1,1]": np.array([1, 1, 1]), "([0,0,3],[1,1,4])": ([0, 0, 3], [1, 1, 4]),
    ":,[2,0,2]": (slice(None), [2, 0, 2]), "[[0,1],[1,0]]": np.array([[0, 1], [1, 0]]),
    "rows mask": np.array([True, False, True, True]), "mask,1:": (np.array([False, True, True, True]), slice(1, None)),
    "-1,[-1,-1]": (-1, np.array([-1, -1])), "[3,3],::-2": (np.array([3, 3]), slice(None, None, -2)),
}


def _as_unet_index(index):
    """The same index with its arrays as unet tensors (both spellings must work)."""
    if isinstance(index, np.ndarray):
        return unet.tensor(index)
    if isinstance(index, tuple):
        return tuple(_as_unet_index(i) for i in index)
    return index


@pytest.mark.parametrize("tensor_index", [False, True], ids=["raw", "tensor"])
@pytest.mark.parametrize("name", INDEX)
def test_getitem_against_numpy(name, tensor_index):
    """numpy is the reference (torch has no negative steps); the gradient of x[i] adds up the
    output gradient at every place i reads, repeated indices included."""
    index = INDEX[name]
    a = data(4, 5, seed=14)
    uindex = _as_unet_index(index) if tensor_index else index
    x = unet.tensor(a, requires_grad=True)
    y = x[uindex]
    np.testing.assert_array_equal(y.numpy(), a[index])
    w = data(*y.shape, seed=15)
    y.backward(unet.tensor(w))
    expected = np.zeros_like(a)
    np.add.at(expected, index, w)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)
    assert gradcheck(lambda x: x[uindex], [unet.tensor(a, requires_grad=True)])


def test_getitem_by_computed_mask():
    a = data(3, 4, seed=16)
    compare(lambda x: x[x > 0] * 2, lambda x: x[x > 0] * 2, a)
    compare(lambda x: x[x.sum(1) > -100][:, 1:], lambda x: x[x.sum(1) > -100][:, 1:], a)


def test_getitem_3d_and_matches_torch():
    a = data(3, 4, 5, seed=17)
    idx = np.array([2, 0, 2])
    compare(lambda x: x[1, :, 2:4], lambda x: x[1, :, 2:4], a)
    compare(lambda x: x[idx, 1:3], lambda x: x[torch.tensor(idx), 1:3], a)
    compare(lambda x: x[:, [1, 1], [0, 4]], lambda x: x[:, [1, 1], [0, 4]], a)


# ---------------------------------------------------------------- gather

GATHER = {
    "dim1": (1, (3, 4), np.array([[0, 0, 3], [1, 2, 2], [3, 3, 3]])),
    "dim0 repeats": (0, (3, 4), np.array([[0, 1, 2, 2], [0, 0, 0, 0]])),
    "dim-1 smaller": (-1, (3, 4), np.array([[1, 1], [0, 3]])),
    "3d dim1": (1, (2, 3, 2), np.array([[[2, 2], [0, 1]], [[1, 0], [1, 1]]])),
    "take column": (1, (4, 5), np.array([[3], [0], [4], [3]])),
}


@pytest.mark.parametrize("name", GATHER)
def test_gather(name):
    dim, shape, index = GATHER[name]
    compare(lambda x, i: x.gather(dim, i), lambda x, i: x.gather(dim, i), data(*shape, seed=18), index)


def test_gather_accepts_raw_index_and_rejects_bad_ones():
    x = unet.tensor(data(3, 4, seed=19))
    np.testing.assert_array_equal(x.gather(1, [[0], [1], [2]]).numpy().ravel(), x.numpy()[[0, 1, 2], [0, 1, 2]])
    with pytest.raises(IndexError, match="dim"):
        x.gather(2, unet.tensor([[0]]))
    with pytest.raises(TypeError, match="index"):
        x.gather(1, unet.tensor([[0.5]]))
    with pytest.raises(ValueError, match="index"):
        x.gather(1, unet.tensor([[0]] * 4))
    with pytest.raises(ValueError, match="index"):
        x.gather(1, unet.tensor([0, 1]))


# ---------------------------------------------------------------- selection

def test_where_broadcasts_both_branches():
    cond = data(2, 3, seed=20) > 0
    compare(lambda x, y: unet.where(unet.tensor(cond), x, y), lambda x, y: torch.where(torch.tensor(cond), x, y),
            data(2, 3, seed=21), data(3, seed=22))
    compare(lambda x, y: F.where(cond[:, :1], x, y), lambda x, y: torch.where(torch.tensor(cond[:, :1]), x, y),
            data(1, 3, seed=23), data(2, 1, seed=24))


def test_where_with_scalar_branches():
    cond = data(2, 3, seed=25) > 0
    tc = torch.tensor(cond)
    compare(lambda x: unet.where(cond, x, 0.0), lambda x: torch.where(tc, x, 0.0), data(2, 3, seed=26))
    compare(lambda y: unet.where(cond, 1.5, y), lambda y: torch.where(tc, 1.5, y), data(3, seed=27))
    with pytest.raises(TypeError, match="Tensor"):
        unet.where(cond, 1.0, 2.0)


def test_masked_fill():
    mask = np.array([[True, False, True]])
    tm = torch.tensor(mask)
    compare(lambda x: x.masked_fill(unet.tensor(mask), -1.0), lambda x: x.masked_fill(tm, -1.0), data(2, 3, seed=28))
    # the attention pattern: masked logits get no gradient, the rest see the softmax's
    compare(lambda x: F.softmax(x.masked_fill(mask, float("-inf")), -1),
            lambda x: torch.softmax(x.masked_fill(tm, float("-inf")), -1), data(2, 3, seed=29))


# ---------------------------------------------------------------- casts between dtypes

def test_cast_is_differentiable():
    compare(lambda x: (x.to("float32") * 2).to(unet.float64), lambda x: (x.float() * 2).double(),
            data(2, 3, seed=30), gc=False)
    x = unet.tensor(data(3, seed=31), dtype="float64", requires_grad=True)
    (x.half().float() * x.bfloat16().float()).sum().backward()
    assert x.grad.dtype == unet.float64
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy(), rtol=1e-2)


# ---------------------------------------------------------------- dropout

def test_dropout_statistics():
    unet.manual_seed(0)
    x = unet.ones(200, 500)
    for p in (0.1, 0.5, 0.8):
        y = F.dropout(x, p)
        zeroed = float((y == 0).numpy().mean())
        assert abs(zeroed - p) < 0.01, (p, zeroed)
        assert abs(y.mean().item() - 1.0) < 0.02  # survivors scaled by 1/(1-p) keep the mean
        kept = y.numpy()[y.numpy() != 0]
        np.testing.assert_allclose(kept, 1 / (1 - p), rtol=1e-6)


def test_dropout_gradient_is_the_mask():
    unet.manual_seed(1)
    x = unet.tensor(data(4, 6, seed=32, low=0.5), dtype="float64", requires_grad=True)
    y = F.dropout(x, 0.3)
    y.backward(unet.ones(4, 6, dtype="float64"))
    np.testing.assert_allclose(x.grad.numpy(), y.numpy() / x.numpy(), rtol=1e-12)
    assert set(np.unique(np.round(x.grad.numpy(), 9))) <= {0.0, round(1 / 0.7, 9)}


def test_dropout_seed_eval_and_edges():
    x = unet.tensor(data(8, 8, seed=33), dtype="float64", requires_grad=True)
    unet.manual_seed(5)
    a = F.dropout(x, 0.5).numpy()
    unet.manual_seed(5)
    b = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, F.dropout(x, 0.5).numpy())  # the stream moves on
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), 0)
    assert F.dropout(x.float(), 0.5).dtype == unet.float32
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="p"):
            F.dropout(x, p)
