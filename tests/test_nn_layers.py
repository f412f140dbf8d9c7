"""unet.nn layers against torch.nn on copied weights: outputs and every gradient."""
import math

import numpy as np
import pytest
import torch

import unet
import unet.functional as F
from gradcheck import gradcheck
from unet import nn

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [np.float32, np.float64]
TORCH_ACT = {"none": lambda z: z, "relu": torch.relu, "gelu": torch.nn.functional.gelu,
             "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def rng(seed=0):
    return np.random.default_rng(seed)


def leaf(array):
    return unet.tensor(array, requires_grad=True)


def tleaf(array):
    return torch.tensor(array, requires_grad=True)


def close(ours, theirs, dtype, scale=1.0):
    ours = ours.numpy() if isinstance(ours, unet.Tensor) else ours
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    tol = TOL[dtype]
    np.testing.assert_allclose(ours, theirs, rtol=tol["rtol"], atol=tol["atol"] * scale)


def twin(ours, theirs, dtype):
    """Give the torch module unet's weights (through unet's state_dict) and both the same dtype."""
    theirs = theirs.to(torch.float64 if dtype == np.float64 else torch.float32)
    ours.to(dtype)
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    return ours, theirs


def compare_module(ours, theirs, x, dtype):
    """Forward, then backward a random cotangent through both; compare output, dx and every parameter grad."""
    ours, theirs = twin(ours, theirs, dtype)
    xu, xt = leaf(x), tleaf(x)
    yu, yt = ours(xu), theirs(xt)
    close(yu, yt, dtype)
    cot = rng(1).standard_normal(yt.shape).astype(dtype)
    yu.backward(cot)
    yt.backward(torch.from_numpy(cot))
    close(xu.grad, xt.grad, dtype, scale=10)
    tparams = dict(theirs.named_parameters())
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(tparams)
    for name, p in ours.named_parameters():
        close(p.grad, tparams[name].grad, dtype, scale=10)


# ---------------------------------------------------------------- Linear

class TorchLinear(torch.nn.Linear):
    """torch's Linear followed by the activation that unet fuses into its kernel."""

    def __init__(self, in_features, out_features, bias, activation):
        super().__init__(in_features, out_features, bias)
        self.act = TORCH_ACT[activation]

    def forward(self, x):
        return self.act(super().forward(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", list(TORCH_ACT))
@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5)])
def test_linear_matches_torch(dtype, bias, activation, shape):
    ours = nn.Linear(5, 3, bias=bias, activation=activation)
    theirs = TorchLinear(5, 3, bias, activation)
    compare_module(ours, theirs, rng().standard_normal(shape).astype(dtype), dtype)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_zero_size_batch(bias):
    layer = nn.Linear(4, 3, bias=bias, activation="tanh")
    x = leaf(np.zeros((0, 4), np.float32))
    y = layer(x)
    assert y.shape == (0, 3)
    y.backward(np.zeros((0, 3), np.float32))
    assert x.grad.shape == (0, 4)
    np.testing.assert_array_equal(layer.weight.grad.numpy(), 0)
    if bias:
        np.testing.assert_array_equal(layer.bias.grad.numpy(), 0)


@pytest.mark.parametrize("dtype", [unet.float16, unet.bfloat16])
def test_linear_half_precision_goes_through_float32(dtype):
    layer = nn.Linear(6, 4, activation="gelu")
    x32 = rng().standard_normal((3, 6)).astype(np.float32)
    ref = layer(unet.tensor(x32.astype(dtype).astype(np.float32), dtype="float32"))
    layer.to(dtype)
    w32, b32 = layer.weight.numpy().astype(np.float32), layer.bias.numpy().astype(np.float32)
    y = layer(unet.tensor(x32, dtype=dtype))
    assert y.dtype == dtype
    expected = TORCH_ACT["gelu"](torch.from_numpy(x32.astype(dtype).astype(np.float32)) @ torch.from_numpy(w32).T
                                 + torch.from_numpy(b32))
    np.testing.assert_allclose(y.numpy().astype(np.float32), expected.numpy(), rtol=2e-2, atol=2e-2)
    assert ref.shape == y.shape


@pytest.mark.parametrize("activation", list(TORCH_ACT))
def test_linear_gradcheck(activation):
    r = rng(3)
    x = leaf(r.standard_normal((3, 4)))
    w = leaf(r.standard_normal((2, 4)))
    b = leaf(r.standard_normal(2))
    assert gradcheck(lambda x, w, b: F.linear(x, w, b, activation), [x, w, b])


def test_linear_init_and_shapes_match_torch():
    unet.manual_seed(0)
    ours, theirs = nn.Linear(400, 300), torch.nn.Linear(400, 300)
    assert ours.weight.shape == tuple(theirs.weight.shape) and ours.bias.shape == tuple(theirs.bias.shape)
    bound = 1 / math.sqrt(400)
    for p in (ours.weight.numpy(), ours.bias.numpy()):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.98 * bound  # fills the whole interval, not a narrower one
    # U(-b, b) has std b/sqrt(3); 120k samples put the estimate within ~0.5%
    assert abs(ours.weight.numpy().std() / (bound / math.sqrt(3)) - 1) < 0.02
    assert abs(ours.weight.numpy().mean()) < 0.01 * bound


@pytest.mark.parametrize("bad, err, name", [
    (lambda: nn.Linear(0, 3), ValueError, "in_features"),
    (lambda: nn.Linear(3, -1), ValueError, "out_features"),
    (lambda: nn.Linear(2.5, 3), ValueError, "in_features"),
    (lambda: nn.Linear(True, 3), ValueError, "in_features"),
    (lambda: nn.Linear(3, 3, activation="swish"), ValueError, "activation"),
    (lambda: nn.Linear(3, 3, bias="yes"), TypeError, "bias"),
    (lambda: nn.Linear(3, 3, dtype="int64"), TypeError, "dtype"),
    (lambda: nn.Linear(3, 2)(unet.randn(4, 5)), ValueError, "x"),
    (lambda: nn.Linear(3, 2)(unet.randn(4, 3, dtype="float64")), TypeError, "weight"),
    (lambda: nn.Linear(3, 2)(np.zeros((4, 3), np.float32)), TypeError, "x"),
    (lambda: nn.Linear(3, 2)(unet.tensor([[1, 2, 3]])), TypeError, "x"),
    (lambda: F.linear(unet.randn(4, 3), unet.randn(2, 3), unet.randn(3)), ValueError, "bias"),
    (lambda: F.linear(unet.randn(4, 3), unet.randn(3)), ValueError, "weight"),
    (lambda: F.linear(unet.randn(4, 3), unet.randn(2, 3), activation="elu"), ValueError, "activation"),
    (lambda: nn.Embedding(0, 3), ValueError, "num_embeddings"),
    (lambda: nn.Embedding(5, 0), ValueError, "embedding_dim"),
    (lambda: nn.Embedding(5, 3, padding_idx=5), ValueError, "padding_idx"),
    (lambda: nn.Embedding(5, 3)(unet.tensor([0.0, 1.0])), TypeError, "ids"),
    (lambda: F.embedding(unet.tensor([0]), unet.randn(5)), ValueError, "weight"),
    (lambda: nn.Dropout(1.5), ValueError, "p"),
    (lambda: nn.Dropout(-0.1), ValueError, "p"),
    (lambda: nn.Dropout("half"), ValueError, "p"),
    (lambda: nn.LayerNorm(0), ValueError, "normalized_shape"),
    (lambda: nn.LayerNorm(()), ValueError, "normalized_shape"),
    (lambda: nn.LayerNorm(4, eps=0.0), ValueError, "eps"),
    (lambda: nn.LayerNorm(4, elementwise_affine="no"), TypeError, "elementwise_affine"),
    (lambda: nn.LayerNorm(4)(unet.randn(4, 3)), ValueError, "x"),
    (lambda: nn.LayerNorm((2, 4))(unet.randn(4)), ValueError, "x"),
    (lambda: F.layer_norm(unet.randn(2, 4), 4, unet.randn(3)), ValueError, "weight"),
    (lambda: nn.LeakyReLU("a"), ValueError, "negative_slope"),
    (lambda: nn.Softmax(dim=1.5), TypeError, "dim"),
    (lambda: nn.GELU(approximate="tanh"), ValueError, "approximate"),
    (lambda: nn.ReLU()([1.0, 2.0]), TypeError, "x"),
])
def test_bad_input_is_rejected_with_the_argument_named(bad, err, name):
    with pytest.raises(err, match=rf"^{name}\b"):
        bad()


# ---------------------------------------------------------------- Embedding

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_matches_torch(dtype, padding_idx):
    ours = nn.Embedding(7, 4, padding_idx=padding_idx)
    theirs = torch.nn.Embedding(7, 4, padding_idx=padding_idx)
    ours, theirs = twin(ours, theirs, dtype)
    ids = np.array([[0, 2, 6, 2], [6, 1, 2, 5]])  # repeats, so the gradient must accumulate
    yu, yt = ours(unet.tensor(ids)), theirs(torch.from_numpy(ids))
    close(yu, yt, dtype)
    cot = rng().standard_normal(yt.shape).astype(dtype)
    yu.backward(cot)
    yt.backward(torch.from_numpy(cot))
    close(ours.weight.grad, theirs.weight.grad, dtype)
    if padding_idx is not None:
        np.testing.assert_array_equal(ours.weight.grad.numpy()[padding_idx], 0)
        np.testing.assert_array_equal(nn.Embedding(7, 4, padding_idx=padding_idx).weight.numpy()[padding_idx], 0)


def test_embedding_accepts_lists_and_scalars():
    emb = nn.Embedding(5, 3)
    assert emb([1, 4]).shape == (2, 3)
    assert emb(unet.tensor(3)).shape == (3,)
    np.testing.assert_array_equal(emb([3]).numpy()[0], emb.weight.numpy()[3])


@pytest.mark.parametrize("bad", [5, -1, 100])
def test_embedding_out_of_range_names_ids_and_value(bad):
    with pytest.raises(IndexError, match=rf"^ids: .*{bad}"):
        nn.Embedding(5, 3)(unet.tensor([0, bad, 1]))


def test_embedding_init_is_standard_normal():
    unet.manual_seed(1)
    w = nn.Embedding(1000, 50).weight.numpy()
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1) < 0.01


def test_embedding_gradcheck():
    w = leaf(rng().standard_normal((6, 3)))
    ids = unet.tensor([[1, 1, 0], [5, 2, 1]])
    assert gradcheck(lambda w: F.embedding(ids, w), [w])
    # padding_idx's row is excluded from training on purpose, so it differs from finite differences
    w.grad = None
    F.embedding(ids, w, padding_idx=2).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy()[2], 0)
    np.testing.assert_array_equal(w.grad.numpy()[1], 3)


# ---------------------------------------------------------------- Dropout

def test_dropout_train_and_eval():
    unet.manual_seed(0)
    layer = nn.Dropout(0.3)
    x = leaf(np.ones((200, 100), np.float32))
    y = layer(x)
    out = y.numpy()
    dropped = out == 0
    assert abs(dropped.mean() - 0.3) < 0.01
    np.testing.assert_allclose(out[~dropped], 1 / 0.7, rtol=1e-6)
    y.backward(np.ones_like(out))
    np.testing.assert_allclose(x.grad.numpy(), out)  # d(x * mask/(1-p))/dx = mask/(1-p)
    layer.eval()
    assert layer(x) is x
    layer.train()
    assert nn.Dropout(0.0)(x) is x
    np.testing.assert_array_equal(nn.Dropout(1.0)(x).numpy(), 0)


def test_dropout_is_reproducible_under_a_seed():
    x = unet.ones(50)
    unet.manual_seed(7)
    a = nn.Dropout()(x).numpy()
    unet.manual_seed(7)
    np.testing.assert_array_equal(a, nn.Dropout()(x).numpy())


# ---------------------------------------------------------------- LayerNorm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, normalized", [((4, 6), 6), ((2, 3, 4), (3, 4)), ((5,), 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(dtype, shape, normalized, affine):
    ours = nn.LayerNorm(normalized, elementwise_affine=affine)
    theirs = torch.nn.LayerNorm(normalized, elementwise_affine=affine)
    with torch.no_grad():  # non-trivial affine parameters, copied over by twin()
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p))
    ours.load_state_dict(theirs.state_dict())
    compare_module(ours, theirs, 3 + 2 * rng().standard_normal(shape).astype(dtype), dtype)


def test_layer_norm_parameters_and_bias_false():
    ln = nn.LayerNorm((2, 3))
    assert [n for n, _ in ln.named_parameters()] == ["weight", "bias"]
    np.testing.assert_array_equal(ln.weight.numpy(), 1)
    np.testing.assert_array_equal(ln.bias.numpy(), 0)
    assert [n for n, _ in nn.LayerNorm(3, bias=False).named_parameters()] == ["weight"]
    assert list(nn.LayerNorm(3, elementwise_affine=False).parameters()) == []
    assert repr(ln) == repr(torch.nn.LayerNorm((2, 3)))


def test_layer_norm_gradcheck():
    r = rng(4)
    x, w, b = leaf(r.standard_normal((3, 5))), leaf(r.standard_normal(5)), leaf(r.standard_normal(5))
    assert gradcheck(lambda x, w, b: F.layer_norm(x, 5, w, b), [x, w, b])


# ---------------------------------------------------------------- containers and activations

@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_matches_torch(dtype):
    ours = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.LayerNorm(8), nn.Identity(), nn.Linear(8, 3, bias=False))
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.LayerNorm(8),
                                 torch.nn.Identity(), torch.nn.Linear(8, 3, bias=False))
    compare_module(ours, theirs, rng().standard_normal((4, 6)).astype(dtype), dtype)


def residual_stack(lib):
    """The same three residual Linear layers in unet.nn or torch.nn, held in a ModuleList."""

    class Stack(lib.Module):
        def __init__(self):
            super().__init__()
            self.layers = lib.ModuleList([lib.Linear(4, 4) for _ in range(3)])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x) + x
            return x

    return Stack()


@pytest.mark.parametrize("dtype", DTYPES)
def test_module_list_matches_torch(dtype):
    compare_module(residual_stack(nn), residual_stack(torch.nn), rng().standard_normal((2, 4)).astype(dtype), dtype)


ACTIVATIONS = [
    (lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
    (lambda: nn.GELU(), lambda: torch.nn.GELU()),
    (lambda: nn.Tanh(), lambda: torch.nn.Tanh()),
    (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
    (lambda: nn.LeakyReLU(), lambda: torch.nn.LeakyReLU()),
    (lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    (lambda: nn.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1)),
    (lambda: nn.Softmax(), lambda: torch.nn.Softmax(dim=-1)),
    (lambda: nn.LogSoftmax(dim=0), lambda: torch.nn.LogSoftmax(dim=0)),
    (lambda: nn.LogSoftmax(dim=-1), lambda: torch.nn.LogSoftmax(dim=-1)),
    (lambda: nn.Identity(54, unused="x"), lambda: torch.nn.Identity()),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", ACTIVATIONS, ids=lambda m: repr(m[1]()))
def test_activation_matches_torch(dtype, make):
    x = 3 * rng().standard_normal((3, 4, 5)).astype(dtype)
    compare_module(make[0](), make[1](), x, dtype)
