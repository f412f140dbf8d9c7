"""unet.save / unet.load: nested structures, dtypes, atomic replacement, clear errors."""
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import unet
from unet import checkpoint, nn
from unet.backend import random_state


def assert_same(a, b, where="obj"):
    """Equal values of the same types, recursively (arrays bit for bit, with dtype and shape)."""
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, (unet.Tensor, np.ndarray, np.generic)):
        x, y = (np.asarray(a.numpy() if isinstance(a, unet.Tensor) else a) for a in (a, b))
        assert x.dtype == y.dtype and x.shape == y.shape, where
        as_bytes = lambda v: np.ascontiguousarray(v).reshape(-1).view(np.uint8)  # NaN == NaN, -0 != 0
        np.testing.assert_array_equal(as_bytes(x), as_bytes(y), err_msg=where)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def training_state():
    model = nn.Linear(3, 2)
    opt = unet.optim.Adam(model.parameters(), lr=1e-3)
    model(unet.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_keeps_structure_types_and_values(tmp_path):
    model, opt = training_state()
    rng = np.random.default_rng(0)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),  # int keys, tuples (betas), arrays, numbers
        "step": 10,
        "config": {"hidden_size": 32, "name": "unet", "dropout": 0.1, "flags": [True, None]},
        "arrays": {
            "f64": rng.standard_normal((2, 3)),
            "f16": rng.standard_normal(5).astype(np.float16),
            "bf16": rng.standard_normal((3, 2)).astype(ml_dtypes.bfloat16),
            "i32": np.arange(6, dtype=np.int32).reshape(2, 3)[:, ::2],  # not contiguous
            "bool": np.array([True, False]),
            "scalar_array": np.array(2.5),
            "empty": np.zeros((0, 4), np.float32),
        },
        "numpy_scalars": [np.float32(1.5), np.int64(-3), ml_dtypes.bfloat16(0.1)],
        "special_floats": [float("inf"), float("-inf"), float("nan")],
        "pair": (1, "a", (2.0, None)),
        "int_keys": {0: "zero", 1: {"nested": np.ones(2)}},
        "tag_like_key": {"__tensor__": "not a reference"},
        "rng": random_state.get_state(),
    }
    unet.save(state, tmp_path / "ckpt.safetensors")
    loaded = unet.load(tmp_path / "ckpt.safetensors")
    assert_same(dict(state, model=dict(state["model"])), loaded)


def test_weights_are_readable_safetensors_under_their_paths(tmp_path):
    model, _ = training_state()
    unet.save({"model": model.state_dict()}, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="np") as f:
        assert set(f.keys()) == {"model/weight", "model/bias"}
        np.testing.assert_array_equal(f.get_tensor("model/weight"), model.weight.numpy())


def test_names_that_collide_stay_distinct(tmp_path):
    state = {"a/b": np.zeros(1), "a": {"b": np.ones(1)}}
    unet.save(state, tmp_path / "c")
    assert_same(state, unet.load(tmp_path / "c"))


def test_plain_safetensors_file_loads_as_arrays(tmp_path):
    save_file({"w": np.arange(3.0)}, str(tmp_path / "plain.safetensors"))
    loaded = unet.load(tmp_path / "plain.safetensors")
    np.testing.assert_array_equal(loaded["w"], np.arange(3.0))


def test_optimizer_resumes_identically(tmp_path):
    model, opt = training_state()
    unet.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "s")
    loaded = unet.load(tmp_path / "s")
    twin = nn.Linear(3, 2)
    twin.load_state_dict(loaded["model"])
    twin_opt = unet.optim.Adam(twin.parameters(), lr=0.5)
    twin_opt.load_state_dict(loaded["optimizer"])
    x = unet.randn(4, 3)
    for m, o in ((model, opt), (twin, twin_opt)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    np.testing.assert_array_equal(model.weight.numpy(), twin.weight.numpy())


def test_rng_state_round_trip(tmp_path):
    unet.manual_seed(5)
    unet.randn(3)
    unet.save({"rng": random_state.get_state()}, tmp_path / "r")
    expected = unet.randn(4).numpy()
    random_state.set_state(unet.load(tmp_path / "r")["rng"])
    np.testing.assert_array_equal(unet.randn(4).numpy(), expected)


def test_interrupted_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    unet.save({"step": 1, "w": np.ones(3)}, path)

    def dies_midway(arrays, metadata=None):
        raise KeyboardInterrupt  # while the temporary file is open

    monkeypatch.setattr(checkpoint, "_serialize", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        unet.save({"step": 2, "w": np.zeros(3)}, path)
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temporary file left behind
    assert_same(unet.load(path), {"step": 1, "w": np.ones(3)})


def test_failed_rename_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    unet.save({"step": 1}, path)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        unet.save({"step": 2}, path)
    assert os.listdir(tmp_path) == ["ckpt"]
    assert unet.load(path) == {"step": 1}


def test_save_replaces_an_existing_checkpoint(tmp_path):
    unet.save({"step": 1}, tmp_path / "c")
    unet.save({"step": 2}, tmp_path / "c")
    assert unet.load(tmp_path / "c") == {"step": 2}


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        unet.load(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.safetensors"):
        unet.load(garbage)
    unet.save({"w": np.ones(100)}, tmp_path / "whole")
    truncated = tmp_path / "truncated"
    truncated.write_bytes((tmp_path / "whole").read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        unet.load(truncated)
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        unet.save({"step": 1}, tmp_path / "no_such_dir" / "c")


def test_unsupported_values_name_their_place():
    with pytest.raises(TypeError, match=r"\['config'\]\['fn'\]"):
        unet.save({"config": {"fn": print}}, "unused")
    with pytest.raises(TypeError, match="complex"):
        unet.save({"z": np.zeros(2, np.complex64)}, "unused")
