"""Module: registration, traversal, modes, state dicts (unet, numpy and torch values), to(), repr."""
import numpy as np
import pytest
import torch

import unet
from unet import nn


def pair(lib):
    """The same small model built from unet.nn or torch.nn."""

    class Net(lib.Module):
        def __init__(self):
            super().__init__()
            self.embed = lib.Embedding(10, 6, padding_idx=0)
            self.encoder = lib.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
            self.head = lib.Sequential(lib.Linear(10, 8), lib.ReLU(), lib.Dropout(0.1), lib.LayerNorm(8),
                                       lib.Linear(8, 3, bias=False))

        def forward(self, ids):
            out, _ = self.encoder(self.embed(ids))
            return self.head(out)

    return Net()


IDS = np.array([[1, 4, 0, 9], [2, 2, 7, 3]])


def test_torch_state_dict_loads_and_gives_the_same_outputs():
    theirs, ours = pair(torch.nn), pair(nn)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert ours.load_state_dict(theirs.state_dict()) == ([], [])
    ours.eval(), theirs.eval()
    expected = theirs(torch.from_numpy(IDS)).detach().numpy()
    np.testing.assert_allclose(ours(unet.tensor(IDS)).numpy(), expected, rtol=1e-4, atol=1e-5)
    # and back: unet's state dict, as numpy arrays, loads into torch
    theirs2 = pair(torch.nn).eval()
    theirs2.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in ours.state_dict().items()})
    np.testing.assert_allclose(theirs2(torch.from_numpy(IDS)).detach().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("convert", [lambda t: t, lambda t: t.numpy(), lambda t: torch.from_numpy(t.numpy().copy()),
                                     lambda t: t.numpy().tolist()], ids=["unet", "numpy", "torch", "list"])
def test_load_state_dict_accepts_tensors_arrays_and_torch(convert):
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    weight = target.weight
    target.load_state_dict({k: convert(v) for k, v in source.state_dict().items()})
    assert target.weight is weight  # loaded in place: optimizers holding the parameter still see it
    np.testing.assert_array_equal(target.weight.numpy(), source.weight.numpy())
    np.testing.assert_array_equal(target.bias.numpy(), source.bias.numpy())


def test_load_state_dict_strictness_and_shapes():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    state = model.state_dict()
    before = {k: v.numpy().copy() for k, v in state.items()}
    with pytest.raises(KeyError, match="missing keys \\['1.bias'\\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "1.bias"})
    with pytest.raises(KeyError, match="unexpected keys \\['extra'\\]"):
        model.load_state_dict({**state, "extra": np.zeros(1)})
    missing, unexpected = model.load_state_dict({"0.weight": np.ones((2, 3)), "extra": 1}, strict=False)
    assert missing == ["0.bias", "1.weight", "1.bias"] and unexpected == ["extra"]
    np.testing.assert_array_equal(model[0].weight.numpy(), 1)
    bad = {k: np.zeros(v.shape) for k, v in state.items()}
    bad["1.weight"] = np.zeros((2, 1))
    model.load_state_dict({k: v for k, v in before.items()})
    with pytest.raises(ValueError, match=r"^state_dict\['1.weight'\]: expected shape \(1, 2\), got \(2, 1\)"):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():  # nothing written: the check runs before any copy
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_state_dict_of_a_module_with_a_none_bias_matches_torch():
    ours, theirs = nn.Linear(3, 2, bias=False), torch.nn.Linear(3, 2, bias=False)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    ours.load_state_dict(theirs.state_dict())


def test_parameter_names_match_torch():
    ours = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.ModuleList([nn.LSTM(3, 4, bidirectional=True)]))
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(),
                                 torch.nn.ModuleList([torch.nn.LSTM(3, 4, bidirectional=True)]))
    names = [n for n, _ in ours.named_parameters()]
    assert names == [n for n, _ in theirs.named_parameters()]
    assert "0.weight" in names and "2.0.weight_ih_l0_reverse" in names
    assert [n for n, _ in ours.named_parameters(prefix="model")][0] == "model.0.weight"
    assert len(list(ours.parameters())) == len(names)
    assert list(ours[2][0].named_parameters(recurse=False))[0][0] == "weight_ih_l0"
    assert list(ours.named_parameters(recurse=False)) == []


def test_children_and_modules():
    ours, theirs = pair(nn), pair(torch.nn)
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()] == \
        ["embed", "encoder", "head"]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in theirs.modules()]
    assert list(ours.children())[2] is ours.head


def test_shared_modules_and_tied_parameters_are_listed_once():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    assert len(list(model.modules())) == 3
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    tied = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5))
    tied[1].weight = tied[0].weight
    assert [n for n, _ in tied.named_parameters()] == ["0.weight", "1.bias"]


def test_train_and_eval_propagate():
    model = pair(nn)
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.head.train()
    assert model.head[2].training and not model.training
    with pytest.raises(ValueError, match="^mode"):
        model.train("no")

    class Counting(nn.Module):
        calls = 0

        def train(self, mode=True):  # a child's override is honoured, as in torch
            Counting.calls += 1
            return super().train(mode)

    nn.Sequential(Counting()).eval()
    assert Counting.calls == 1


def test_dropout_follows_the_model_mode():
    model = nn.Sequential(nn.Dropout(0.5))
    x = unet.ones(1000)
    assert (model(x).numpy() == 0).any()
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), 1)


def test_apply_visits_children_first():
    model = pair(nn)
    seen = []
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    expected = []
    pair(torch.nn).apply(lambda m: expected.append(type(m).__name__))
    assert seen == expected
    model.apply(lambda m: nn.init.zeros_(m.weight) if isinstance(m, nn.Linear) else None)
    assert not model.head[0].weight.numpy().any()


def test_zero_grad_and_requires_grad():
    layer = nn.Linear(3, 2)
    layer(unet.randn(4, 3)).sum().backward()
    assert layer.weight.grad is not None
    layer.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(layer.weight.grad.numpy(), 0)
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None
    layer.requires_grad_(False)
    assert not any(p.requires_grad for p in layer.parameters())


def test_to_casts_parameters_grads_and_float_buffers_in_place():
    model = nn.Sequential(nn.Linear(3, 2), nn.CrossEntropyLoss(weight=[1.0, 2.0]))
    model.register_buffer("steps", unet.tensor([3]))
    weight = model[0].weight
    model[0](unet.randn(1, 3)).sum().backward()
    assert model.double() is model
    assert model[0].weight is weight and weight.dtype == unet.float64 and weight.requires_grad
    assert weight.grad.dtype == unet.float64
    assert model[1].weight.dtype == unet.float64
    assert model.steps.dtype == unet.int64  # integer buffers keep their dtype
    model.to(unet.bfloat16)
    assert weight.dtype == unet.bfloat16 and model.steps.dtype == unet.int64
    model.to("float32")
    assert weight.dtype == unet.float32  # from bfloat16 back: bfloat16 counts as floating point
    model.to("cpu")
    assert weight.device == "cpu"


def test_buffers():
    model = nn.Linear(2, 2)
    model.register_buffer("mask", unet.ones(2))
    assert [n for n, _ in model.named_buffers()] == ["mask"]
    assert "mask" in model.state_dict() and "mask" not in dict(model.named_parameters())
    model.mask = unet.zeros(2)  # reassigning a Tensor keeps it a buffer
    assert [n for n, _ in model.named_buffers()] == ["mask"] and not model.mask.numpy().any()
    with pytest.raises(TypeError, match="^mask"):
        model.mask = [1, 2]
    model.mask = None
    assert list(model.buffers()) == [] and "mask" in model._buffers
    with pytest.raises(TypeError, match="^mask"):
        model.register_buffer("mask", np.zeros(2))
    with pytest.raises(KeyError, match="name: expected"):
        model.register_buffer("a.b", unet.ones(1))


def test_none_keeps_the_slot_and_a_later_parameter_is_seen():
    layer = nn.Linear(3, 2)
    layer.bias = None
    assert "bias" in layer._parameters and layer.bias is None
    assert list(layer.state_dict()) == ["weight"]
    assert layer(unet.randn(4, 3)).shape == (4, 2)
    layer.bias = nn.Parameter(np.ones(2, np.float32))
    assert layer.bias is layer._parameters["bias"]  # no stale attribute shadows it
    assert list(layer.state_dict()) == ["weight", "bias"]
    bare = nn.Linear(3, 2, bias=False)
    bare.bias = nn.Parameter(np.ones(2, np.float32))
    assert bare.bias is not None and "bias" in dict(bare.named_parameters())


def test_assigning_a_plain_tensor_to_a_parameter_is_refused():
    layer = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="^weight"):
        layer.weight = unet.zeros(2, 3)
    with pytest.raises(TypeError, match="^0"):
        nn.Sequential(nn.Linear(1, 1)).__setattr__("0", 5)


def test_attributes_move_between_kinds():
    m = nn.Module()
    m.thing = nn.Linear(1, 1)
    assert "thing" in m._modules
    del m.thing
    assert not hasattr(m, "thing")
    m.thing = 3
    assert m.thing == 3 and "thing" not in m._modules


def test_missing_super_init_is_explained():
    class Broken(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Broken()


def test_repr_matches_torch():
    ours = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.LayerNorm(4), nn.Tanh()),
                         nn.Embedding(10, 4, padding_idx=1), nn.LSTM(4, 4, num_layers=2), nn.Softmax(dim=1),
                         nn.LeakyReLU(0.2), nn.Identity())
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),
                                 torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.Tanh()),
                                 torch.nn.Embedding(10, 4, padding_idx=1), torch.nn.LSTM(4, 4, num_layers=2),
                                 torch.nn.Softmax(dim=1), torch.nn.LeakyReLU(0.2), torch.nn.Identity())
    assert repr(ours) == repr(theirs)
    assert repr(nn.Linear(3, 4, activation="gelu")) == \
        "Linear(in_features=3, out_features=4, bias=True, activation='gelu')"
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25)"


def test_containers():
    layers = [nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and seq[-1] is layers[2] and list(seq) == layers
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head) == layers[:2]
    x = unet.randn(5, 2)
    np.testing.assert_allclose(seq(x).numpy(), layers[2](layers[1](layers[0](x))).numpy())
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict([("proj", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert [n for n, _ in named.named_parameters()] == ["proj.weight", "proj.bias"]
    assert seq.append(nn.Identity()) is seq and len(seq) == 4
    mlist = nn.ModuleList(layers[:1]).extend(layers[1:])
    assert len(mlist) == 3 and mlist[1] is layers[1] and isinstance(mlist[1:], nn.ModuleList)
    assert [n for n, _ in mlist.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(TypeError, match=r"^module"):
        mlist.append(lambda x: x)
    with pytest.raises(TypeError, match=r"^modules\[1\]"):
        nn.Sequential(nn.ReLU(), "relu")
    with pytest.raises(IndexError):
        seq[7]


def test_parameter_is_a_leaf_that_requires_grad():
    p = nn.Parameter(np.zeros(3, np.float32))
    assert p.requires_grad and p.is_leaf and isinstance(p, unet.Tensor)
    assert repr(p).startswith("Parameter containing:\n")
    assert not nn.Parameter(unet.zeros(2), requires_grad=False).requires_grad
