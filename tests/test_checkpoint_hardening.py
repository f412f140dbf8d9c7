"""Checkpoints under attack: hostile files never run code or crash, and a killed save loses nothing."""
import hashlib
import json
import pickle
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from unet import checkpoint, nn


def write_raw(path, header: dict, data: bytes, header_bytes: bytes | None = None):
    raw = header_bytes if header_bytes is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def assert_refused(path, *words):
    with pytest.raises(ValueError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert repr(str(path)) in message, message
    for word in words:
        assert word in message, message


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_renamed_to_safetensors_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"weight": _Payload(str(marker))}))
    assert_refused(path)
    assert not marker.exists()


def test_truncated_files_are_refused_at_every_cut(tmp_path):
    good = tmp_path / "good.safetensors"
    checkpoint.save({"w": np.arange(50, dtype=np.float32), "step": 3}, good)
    blob = good.read_bytes()
    header_len = struct.unpack("<Q", blob[:8])[0]
    for cut in sorted({0, 3, 8, 9, 8 + header_len // 2, 8 + header_len, 8 + header_len + 7, len(blob) - 1}):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(blob[:cut])
        assert_refused(bad)


def test_oversized_header_length_is_refused(tmp_path):
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    assert_refused(path, "header length")


def test_overlapping_tensors_name_the_tensor(tmp_path):
    path = tmp_path / "overlap.safetensors"
    write_raw(path, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12))
    assert_refused(path, "'b'", "overlaps 'a'")


def test_byte_size_not_matching_shape_and_dtype_names_the_tensor(tmp_path):
    path = tmp_path / "size.safetensors"
    write_raw(path, {"weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}, bytes(20))
    assert_refused(path, "'weight'", "expected 24")


def test_offsets_past_the_data_name_the_tensor(tmp_path):
    path = tmp_path / "past.safetensors"
    write_raw(path, {"bias": {"dtype": "F64", "shape": [4], "data_offsets": [0, 32]}}, bytes(16))
    assert_refused(path, "'bias'")


def test_unknown_dtype_and_bad_shape_are_refused(tmp_path):
    path = tmp_path / "dtype.safetensors"
    write_raw(path, {"x": {"dtype": "PYOBJ", "shape": [1], "data_offsets": [0, 8]}}, bytes(8))
    assert_refused(path, "'x'", "PYOBJ")
    write_raw(path, {"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4))
    assert_refused(path, "'x'", "shape")


def test_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "dup.safetensors"
    raw = (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
           b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')
    write_raw(path, {}, bytes(4), header_bytes=raw)
    assert_refused(path, "duplicate", "'w'")


def test_structure_naming_a_missing_tensor_is_refused(tmp_path):
    path = tmp_path / "missing.safetensors"
    structure = json.dumps({"weight": {"__tensor__": "weight"}})
    write_raw(path, {"__metadata__": {"unet.format": "1", "unet.structure": structure}}, b"")
    assert_refused(path, "weight")


def test_a_failed_load_leaves_the_model_untouched(tmp_path):
    model = nn.Linear(4, 3)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    path = tmp_path / "m.safetensors"
    checkpoint.save(model.state_dict(), path)
    blob = bytearray(path.read_bytes())
    path.write_bytes(bytes(blob[:-5]))
    with pytest.raises(ValueError):
        model.load_state_dict(checkpoint.load(path))
    wrong = {k: np.zeros((9,) + v.shape, np.float32) for k, v in before.items()}
    with pytest.raises(ValueError, match="weight|bias"):
        model.load_state_dict(wrong)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_random_byte_mutations_load_or_raise_value_error(tmp_path):
    good = tmp_path / "good.safetensors"
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    checkpoint.save({"model": model.state_dict(), "step": 7, "names": ("a", "b")}, good)
    blob = good.read_bytes()
    rng = random.Random(0)
    bad = tmp_path / "bad.safetensors"
    refused = 0
    for _ in range(1000):
        mutated = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        bad.write_bytes(bytes(mutated))
        try:
            checkpoint.load(bad)
        except ValueError as e:
            assert repr(str(bad)) in str(e)
            refused += 1
    assert refused > 100  # most mutations hit the header or the structure


# ---------------------------------------------------------------- killed saves

SAVER = textwrap.dedent("""
    import hashlib, os, signal, sys
    import numpy as np
    from unet import checkpoint
    path, mode, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode != "random":
        # die at a chosen point of the second save: inside the write (after the data,
        # before the fsync) or just before the rename
        target = {"in_write": "_fsync", "before_rename": "replace"}[mode]
        holder = checkpoint if target == "_fsync" else checkpoint.os
        real, calls = getattr(holder, target), []
        def dying(*args):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args)
        setattr(holder, target, dying)
    for step in range(start, start + 10**6):
        weights = np.full(1 << 20, step, dtype=np.float32)
        digest = hashlib.sha256(weights.tobytes()).hexdigest()
        checkpoint.save({"step": step, "weights": weights, "sha256": digest}, path)
        print(step, flush=True)
""")


def check_intact(path, min_step):
    state = checkpoint.load(path)
    assert hashlib.sha256(state["weights"].tobytes()).hexdigest() == state["sha256"]
    assert np.all(state["weights"] == state["step"]) and state["step"] >= min_step
    return state["step"]


@pytest.mark.slow
def test_sigkill_at_20_moments_never_loses_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    rng = random.Random(1)
    last = -1
    modes = ["in_write", "before_rename"] * 3 + ["random"] * 14
    for run, mode in enumerate(modes):
        child = subprocess.Popen([sys.executable, "-c", SAVER, str(path), mode, str(last + 1)],
                                 stdout=subprocess.PIPE, text=True)
        done = int(child.stdout.readline())  # one save finished: a checkpoint to lose
        if mode == "random":
            time.sleep(rng.uniform(0.0, 0.15))
            child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL, f"run {run} ({mode})"
        last = check_intact(path, done)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    assert len(leftovers) <= 1 and all(name.endswith(".tmp") for name in leftovers), leftovers
    checkpoint.save({"step": 0}, path)  # the next save clears what the killed ones left
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_full_disk_raises_and_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    script = textwrap.dedent("""
        import resource, signal, sys
        import numpy as np
        from unet import checkpoint
        path = sys.argv[1]
        checkpoint.save({"w": np.ones(1000, np.float32)}, path)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us instead of failing the write
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            checkpoint.save({"w": np.ones(1 << 20, np.float32)}, path)
        except Exception as e:
            print("raised", type(e).__name__, e)
        else:
            print("no error")
    """)
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("raised"), result.stdout
    state = checkpoint.load(path)
    np.testing.assert_array_equal(state["w"], np.ones(1000, np.float32))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the partial temporary file is gone
