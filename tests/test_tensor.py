"""Tensors: construction, dtypes, devices, conversions (numpy, DLPack), in-place ops, bad input."""
import ml_dtypes
import numpy as np
import pytest
import torch

import unet
from unet import creation

DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16,
          "bfloat16": ml_dtypes.bfloat16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}
TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


# ---------------------------------------------------------------- construction and dtypes

@pytest.mark.parametrize("data, dtype", [
    (1.5, "float32"), ([1.0, 2.0], "float32"), ([[1, 2], [3, 4]], "int64"), (3, "int64"),
    (True, "bool"), ([True, False], "bool"), ([1, 2.5], "float32"), ([], "float32"),
    (np.array([1.0, 2.0]), "float64"), (np.float64(2.0), "float64"), (np.float32(2.0), "float32"),
    (np.array([1, 2], dtype=np.int32), "int32"), (np.array([1.0], dtype=np.float16), "float16"),
    (np.array([1.0], dtype=ml_dtypes.bfloat16), "bfloat16"), (np.array([1, 2], dtype=np.uint8), "int64"),
])
def test_default_dtype_inference_matches_torch(data, dtype):
    t = unet.tensor(data)
    assert t.dtype == np.dtype(DTYPES[dtype])
    if not (isinstance(data, np.ndarray) and data.dtype in (np.uint8, ml_dtypes.bfloat16)):
        # torch keeps uint8 (unet has none) and cannot read bfloat16 numpy arrays
        assert str(torch.tensor(data).dtype) == f"torch.{dtype}"


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_explicit_dtype_every_spelling(dtype):
    values = [0, 1, 1]
    for spelling in (dtype, getattr(unet, dtype if dtype != "bool" else "bool_"), DTYPES[dtype]):
        t = unet.tensor(values, dtype=spelling)
        assert t.dtype == np.dtype(DTYPES[dtype])
        np.testing.assert_array_equal(t.numpy().astype(np.float64), [0, 1, 1])


@pytest.mark.parametrize("alias, dtype", [("double", "float64"), ("float", "float32"), ("half", "float16"),
                                          ("bf16", "bfloat16"), ("long", "int64"), ("int", "int32"),
                                          (float, "float32"), (int, "int64"), (bool, "bool")])
def test_dtype_aliases(alias, dtype):
    assert unet.zeros(1, dtype=alias).dtype == np.dtype(DTYPES[dtype])


@pytest.mark.parametrize("bad", ["float33", "f4", "complex64", "int8", np.uint8, np.complex128, "", 3,
                                 torch.float32])
def test_bad_dtype_is_type_error_naming_dtype(bad):
    for make in (lambda: unet.tensor([1.0], dtype=bad), lambda: unet.zeros(2, dtype=bad),
                 lambda: unet.tensor([1.0]).to(bad) if isinstance(bad, str) and bad else
                 unet.tensor([1.0]).to(dtype=bad)):
        with pytest.raises(TypeError, match="dtype"):
            make()


def test_unsupported_data_is_rejected():
    with pytest.raises(TypeError, match="data"):
        unet.tensor(np.array([1 + 2j]))
    with pytest.raises(TypeError, match="data"):
        unet.tensor(["a", "b"])


def test_tensor_copies_its_input():
    a = np.array([1.0, 2.0])
    t = unet.tensor(a)
    a[0] = 9
    assert t.numpy()[0] == 1.0
    u = unet.tensor(t)
    u.data[1] = 9
    assert t.numpy()[1] == 2.0
    assert unet.Tensor(a).numpy()[0] == 9.0 and not np.shares_memory(unet.Tensor(a).numpy(), a)


def test_properties():
    t = unet.zeros(2, 3, 4)
    assert t.shape == (2, 3, 4) and t.ndim == 3 and t.dim() == 3 and t.numel() == 24
    assert t.size() == (2, 3, 4) and t.size(1) == 3 and t.size(-1) == 4 and len(t) == 2
    assert t.device == "cpu" and t.device == unet.device("cpu") and str(t.device) == "cpu"
    assert t.is_leaf and not t.requires_grad and t.grad is None
    with pytest.raises(TypeError, match="0-d"):
        len(unet.tensor(1.0))


def test_item_tolist_and_python_numbers():
    assert unet.tensor([[2.5]]).item() == 2.5
    assert unet.tensor([1, 2]).tolist() == [1, 2]
    assert float(unet.tensor(1.5)) == 1.5 and int(unet.tensor(7)) == 7
    assert bool(unet.tensor([True])) and not bool(unet.tensor(0.0))
    with pytest.raises(ValueError, match="one-element"):
        unet.tensor([1.0, 2.0]).item()
    assert "requires_grad=True" in repr(unet.ones(2, requires_grad=True))
    assert "bfloat16" in repr(unet.ones(2, dtype="bfloat16"))


# ---------------------------------------------------------------- factories

@pytest.mark.parametrize("make, torch_make", [
    (lambda: unet.zeros(2, 3), lambda: torch.zeros(2, 3)),
    (lambda: unet.zeros((2, 3)), lambda: torch.zeros((2, 3))),
    (lambda: unet.ones([4]), lambda: torch.ones([4])),
    (lambda: unet.ones(2, dtype="int32"), lambda: torch.ones(2, dtype=torch.int32)),
    (lambda: unet.zeros(0, 3), lambda: torch.zeros(0, 3)),
    (lambda: unet.full((2, 2), 1.5), lambda: torch.full((2, 2), 1.5)),
    (lambda: unet.full((2,), 3), lambda: torch.full((2,), 3)),
    (lambda: unet.full((2,), True), lambda: torch.full((2,), True)),
    (lambda: unet.full((2,), 3, dtype="float64"), lambda: torch.full((2,), 3, dtype=torch.float64)),
    (lambda: unet.arange(5), lambda: torch.arange(5)),
    (lambda: unet.arange(2, 8, 2), lambda: torch.arange(2, 8, 2)),
    (lambda: unet.arange(5, 0, -1), lambda: torch.arange(5, 0, -1)),
    (lambda: unet.arange(0.0, 1.0, 0.25), lambda: torch.arange(0.0, 1.0, 0.25)),
    (lambda: unet.arange(3, dtype="float64"), lambda: torch.arange(3, dtype=torch.float64)),
    (lambda: unet.zeros_like(unet.ones(2, dtype="int32")), lambda: torch.zeros_like(torch.ones(2, dtype=torch.int32))),
    (lambda: unet.ones_like(unet.zeros(2, 2), dtype=unet.float64),
     lambda: torch.ones_like(torch.zeros(2, 2), dtype=torch.float64)),
    (lambda: unet.zeros_like(unet.ones(3), dtype="float64"), lambda: torch.zeros(3, dtype=torch.float64)),
    (lambda: creation.full_like(unet.zeros(2, dtype="float16"), 7),
     lambda: torch.full_like(torch.zeros(2, dtype=torch.float16), 7)),
])
def test_factories_match_torch(make, torch_make):
    t, r = make(), torch_make()
    assert t.shape == tuple(r.shape) and str(r.dtype) == f"torch.{t.dtype}"
    np.testing.assert_array_equal(t.numpy(), r.numpy())


def test_factories_with_requires_grad():
    for t in (unet.zeros(2, requires_grad=True), unet.ones(2, requires_grad=True),
              unet.randn(2, requires_grad=True), unet.rand(2, requires_grad=True),
              unet.full((2,), 1.0, requires_grad=True), unet.zeros_like(unet.ones(2), requires_grad=True)):
        assert t.requires_grad and t.is_leaf


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_random_factories(dtype):
    unet.manual_seed(3)
    n = unet.randn(200, 100, dtype=dtype)
    u = unet.rand(200, 100, dtype=dtype)
    assert n.dtype == np.dtype(DTYPES[dtype]) and u.shape == (200, 100)
    values = n.numpy().astype(np.float64)
    assert abs(values.mean()) < 0.03 and abs(values.std() - 1) < 0.03
    uv = u.numpy().astype(np.float64)
    assert uv.min() >= 0 and uv.max() <= 1 and abs(uv.mean() - 0.5) < 0.02
    assert creation.randn_like(n).dtype == n.dtype and creation.rand_like(u, dtype="float64").dtype == np.float64


def test_manual_seed_makes_draws_repeatable():
    unet.manual_seed(11)
    a, b = unet.randn(5), unet.rand(3)
    unet.manual_seed(11)
    np.testing.assert_array_equal(unet.randn(5).numpy(), a.numpy())
    np.testing.assert_array_equal(unet.rand(3).numpy(), b.numpy())
    assert not np.array_equal(unet.randn(5).numpy(), a.numpy())
    for bad in (-1, 1.5, "3"):
        with pytest.raises(ValueError, match="seed"):
            unet.manual_seed(bad)


@pytest.mark.parametrize("make", [lambda: unet.zeros(-1), lambda: unet.ones(2, 1.5), lambda: unet.randn((2, -3)),
                                  lambda: unet.full((-1,), 0.0), lambda: unet.rand(None)])
def test_bad_sizes(make):
    with pytest.raises(ValueError, match="size"):
        make()


def test_bad_factory_arguments():
    with pytest.raises(TypeError, match="dtype"):
        unet.randn(2, dtype="int64")
    with pytest.raises(TypeError, match="dtype"):
        unet.rand(2, dtype="bool")
    with pytest.raises(ValueError, match="step"):
        unet.arange(0, 3, 0)


# ---------------------------------------------------------------- devices

CUDA = [lambda: unet.tensor([1.0], device="cuda"), lambda: unet.zeros(2, device="cuda"),
        lambda: unet.ones(2, device="cuda:0"), lambda: unet.randn(2, device="cuda"),
        lambda: unet.rand(2, device=unet.device("cuda")), lambda: unet.full((2,), 1.0, device="cuda"),
        lambda: unet.arange(3, device="cuda"), lambda: unet.tensor([1.0]).to("cuda"),
        lambda: unet.tensor([1.0]).cuda(), lambda: unet.tensor([1.0], requires_grad=True).to("cuda:0")]


@pytest.mark.skipif(unet.cuda_available(), reason="checks the message when no GPU is present")
@pytest.mark.parametrize("make", CUDA)
def test_cuda_without_gpu_is_a_clear_runtime_error(make):
    with pytest.raises(RuntimeError, match="CuPy and a CUDA GPU"):
        make()


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cpu:0", "tpu", 3])
def test_bad_device_spelling(bad):
    with pytest.raises((ValueError, TypeError), match="device"):
        unet.zeros(2, device=bad)
    with pytest.raises((ValueError, TypeError), match="device"):
        unet.tensor([1.0], device=bad)


def test_device_object():
    d = unet.device("cuda")
    assert d == "cuda:0" and d.type == "cuda" and d.index == 0 and str(d) == "cuda:0"
    assert unet.device("cpu") != d and unet.device(d) == d and hash(unet.device("cpu")) == hash(unet.device("cpu"))
    assert unet.tensor([1.0]).to("cpu").device == "cpu"


@pytest.mark.skipif(not unet.cuda_available(), reason="needs a CUDA GPU and CuPy")
def test_cuda_round_trip_with_gradient():
    x = unet.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    y = (x.cuda() * 3).exp().cpu()
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.exp(3 * np.array([1.0, 2.0])))
    with pytest.raises(ValueError, match="device"):
        x + x.detach().cuda()


# ---------------------------------------------------------------- conversions

@pytest.mark.parametrize("src", list(DTYPES))
@pytest.mark.parametrize("dst", list(DTYPES))
def test_to_dtype_matches_numpy_cast(src, dst):
    a = np.array([-1.5, 0.0, 2.25, 3.0]).astype(DTYPES[src])
    t = unet.tensor(a).to(dst)
    assert t.dtype == np.dtype(DTYPES[dst])
    np.testing.assert_array_equal(t.numpy(), a.astype(DTYPES[dst]))


def test_to_variants():
    x = unet.tensor([1.0, 2.0])
    assert x.to("float32") is x and x.to("cpu") is x
    assert x.to("cpu", "float64").dtype == unet.float64
    assert x.to(dtype=unet.float16, device="cpu").dtype == unet.float16
    assert x.to(unet.device("cpu"), unet.bfloat16).dtype == unet.bfloat16
    assert x.double().dtype == unet.float64 and x.half().dtype == unet.float16
    assert x.bfloat16().dtype == unet.bfloat16 and x.long().dtype == unet.int64
    assert x.double().float().dtype == unet.float32 and x.cpu() is x


def test_numpy_and_asarray_share_memory_but_np_array_copies():
    t = unet.tensor([1.0, 2.0])
    assert np.shares_memory(t.numpy(), t.data)
    assert np.shares_memory(np.asarray(t), t.data)
    assert not np.shares_memory(np.array(t), t.data)
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    s = unet.tensor([1.0, 2.0]).sum()  # a reduction: still an array, not a numpy scalar
    assert isinstance(s.numpy(), np.ndarray) and np.asarray(s).shape == ()
    s.fill_(3.0)
    assert s.item() == 3.0


def test_numpy_operands_either_side_give_tensors():
    t = unet.tensor([1.0, 2.0])
    a = np.array([3.0, 4.0], dtype=np.float32)
    for out in (a + t, t + a, a * t, a - t, a / t, a @ t, np.float32(2) * t, t * np.float32(2)):
        assert isinstance(out, unet.Tensor)
    np.testing.assert_array_equal((a - t).numpy(), [2.0, 2.0])


# ---------------------------------------------------------------- DLPack

@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "int32", "int64", "bool"])
def test_dlpack_round_trip_numpy(dtype):
    a = np.array([[0, 1, 2], [3, 4, 5]]).astype(DTYPES[dtype])
    t = unet.from_dlpack(a)
    assert t.dtype == a.dtype and np.shares_memory(t.data, a)
    back = np.from_dlpack(t)
    np.testing.assert_array_equal(back, a)
    assert np.shares_memory(back, a)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "int32", "int64", "bool"])
def test_dlpack_round_trip_torch(dtype):
    r = torch.arange(6).reshape(2, 3).to(TORCH_DTYPES[dtype])
    t = unet.from_dlpack(r)
    assert t.shape == (2, 3) and t.dtype == np.dtype(DTYPES[dtype])
    np.testing.assert_array_equal(t.numpy(), r.numpy())
    back = torch.from_dlpack(t)
    assert back.dtype == r.dtype and torch.equal(back, r)
    if dtype != "bool":
        r[0, 0] = 7  # all three share one buffer
        assert t.numpy()[0, 0] == 7 and back[0, 0] == 7


def test_dlpack_of_views_and_results():
    r = torch.arange(12.0).reshape(3, 4)[:, 1::2]  # strided
    t = unet.from_dlpack(r)
    np.testing.assert_array_equal(t.numpy(), r.numpy())
    x = unet.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = (x * 2).T
    np.testing.assert_array_equal(torch.from_dlpack(y.detach()).numpy(), y.numpy())
    np.testing.assert_array_equal(torch.from_dlpack(x.sum().detach()).numpy(), 10.0)
    assert unet.from_dlpack(unet.tensor([1, 2])).tolist() == [1, 2]


def test_dlpack_unsupported_dtypes_fail_clearly():
    with pytest.raises(TypeError, match="dtype"):
        unet.from_dlpack(torch.zeros(2, dtype=torch.uint8))
    with pytest.raises(TypeError, match="dtype"):
        unet.from_dlpack(np.zeros(2, dtype=np.complex64))
    with pytest.raises((BufferError, RuntimeError, TypeError)):  # numpy's DLPack has no bfloat16
        unet.from_dlpack(torch.zeros(2, dtype=torch.bfloat16))


# ---------------------------------------------------------------- in place, comparisons

def test_inplace_ops_bump_version_and_mutate():
    t = unet.zeros(3)
    assert t._version == 0
    t.add_(1).mul_(3)
    t.add_(unet.ones(3), alpha=2)
    t[0] = 10.0
    t[unet.tensor([1])] = unet.tensor([20.0])
    assert t.numpy().tolist() == [10.0, 20.0, 5.0] and t._version == 5
    t.copy_(np.array([1.0, 2.0, 3.0]))
    t.copy_(unet.tensor(4.0))  # broadcasts
    assert t.numpy().tolist() == [4.0, 4.0, 4.0]
    assert t.zero_() is t and t.fill_(2).numpy().tolist() == [2.0, 2.0, 2.0] and t._version == 9


def test_comparisons_and_logic():
    a, b = unet.tensor([1.0, 2.0, 3.0]), unet.tensor([3.0, 2.0, 1.0])
    assert (a < b).tolist() == [True, False, False] and (a <= b).tolist() == [True, True, False]
    assert (a > 2).tolist() == [False, False, True] and (a >= 2).tolist() == [False, True, True]
    assert (a == b).tolist() == [False, True, False] and (a != 2).tolist() == [True, False, True]
    assert (~(a > 2)).tolist() == [True, True, False]
    assert ((a > 1) & (b > 1)).tolist() == [False, True, False]
    assert ((a > 2) | (b > 2)).tolist() == [True, False, True]
    assert (a == b).dtype == unet.bool_


@pytest.mark.parametrize("expr", ["x + 5", "5 + x", "x * 2", "x - 1", "x / 2", "x + 0.5", "x * True"])
@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "float16", "float32", "float64"])
def test_scalar_promotion_matches_torch(expr, dtype):
    if dtype == "bool" and expr == "x - 1":
        pytest.skip("torch forbids subtracting from bool")
    a = np.array([0, 1, 1]).astype(DTYPES[dtype])
    out = eval(expr, {"x": unet.tensor(a)})
    ref = eval(expr, {"x": torch.tensor(a)})
    if "/" not in expr:  # true division of ints: torch gives float32, numpy float64 (values agree)
        assert str(ref.dtype) == f"torch.{out.dtype}", (expr, out.dtype, ref.dtype)
    np.testing.assert_allclose(out.numpy().astype(np.float64), ref.double().numpy())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_low_precision_ops_match_torch(dtype):
    a = np.random.default_rng(0).standard_normal((3, 4))
    x = unet.tensor(a, dtype=dtype, requires_grad=True)
    r = torch.tensor(a, dtype=TORCH_DTYPES[dtype], requires_grad=True)
    import unet.functional as F
    out = (F.softmax(x * 2, -1) + x.sigmoid() * x.tanh() - F.gelu(x)).sum(0)
    ref = (torch.softmax(r * 2, -1) + r.sigmoid() * r.tanh() - torch.nn.functional.gelu(r)).sum(0)
    assert out.dtype == x.dtype
    tol = dict(float16=2e-2, bfloat16=6e-2, float32=1e-5)[dtype]
    np.testing.assert_allclose(out.numpy().astype(np.float64), ref.double().detach().numpy(), rtol=tol, atol=tol)
    out.backward(unet.ones(4, dtype=dtype))
    ref.backward(torch.ones(4, dtype=TORCH_DTYPES[dtype]))
    assert x.grad.dtype == x.dtype
    np.testing.assert_allclose(x.grad.numpy().astype(np.float64), r.grad.double().numpy(), rtol=tol, atol=tol)


# ---------------------------------------------------------------- bad dims

DIM_ERRORS = [
    lambda x: x.sum(3), lambda x: x.mean(-4), lambda x: x.var(5), lambda x: x.max(3),
    lambda x: x.min(-4), lambda x: x.argmax(3), lambda x: x.argmin(-4), lambda x: x.transpose(0, 3),
    lambda x: x.permute(0, 1, 3), lambda x: x.squeeze(3), lambda x: x.unsqueeze(4),
    lambda x: x.unsqueeze(-5), lambda x: x.flatten(3), lambda x: x.flatten(0, -4), lambda x: x.split(1, 3),
    lambda x: x.chunk(2, -4), lambda x: x.gather(3, unet.zeros(2, 3, 4, dtype="int64")),
    lambda x: unet.cat([x, x], 3), lambda x: unet.stack([x, x], 4), lambda x: unet.stack([x, x], -5),
    lambda x: unet.functional.softmax(x, 3), lambda x: unet.functional.log_softmax(x, -4),
]


@pytest.mark.parametrize("op", range(len(DIM_ERRORS)))
def test_bad_dim_names_dim(op):
    x = unet.zeros(2, 3, 4)
    with pytest.raises((IndexError, ValueError), match="dim"):
        DIM_ERRORS[op](x)


@pytest.mark.parametrize("make", [lambda x: x.permute(0, 0, 1), lambda x: x.sum((1, 1)),
                                  lambda x: x.flatten(2, 1), lambda x: x.split(0), lambda x: x.split([1, 2]),
                                  lambda x: x.chunk(0), lambda x: unet.cat([]), lambda x: unet.cat([unet.tensor(1.0)]),
                                  lambda x: x.reshape(5, 5), lambda x: x.expand(3, 3, 4)])
def test_bad_shape_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make(unet.zeros(2, 3, 4))


def test_cat_of_non_tensors_is_type_error():
    with pytest.raises(TypeError, match="tensors"):
        unet.cat([unet.zeros(2), np.zeros(2)])
