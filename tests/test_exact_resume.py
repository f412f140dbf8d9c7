"""Exact resume: 2K steps in one go equal K steps, a Ctrl-C that saves in mid-epoch, and K more in a
new process, bitwise (weights, optimizer moments, loss scale, RNG state, data position, every
step's loss), with float16 loss scaling, dropout and shuffled data, alone and on 2 DDP ranks."""
import os

import numpy as np
import pytest

import unet

from dist_run import assert_ok, run_ranks

pytest.importorskip("mpi4py", reason="the resume test runs its processes through unet launch (mpi4py)")


def assert_bitwise_equal(a, b, where="state"):
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, (unet.Tensor, np.ndarray)):
        x, y = (np.asarray(v.numpy() if isinstance(v, unet.Tensor) else v) for v in (a, b))
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), where
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("nprocs", [1, 2])
def test_stop_in_mid_epoch_and_resume_in_a_new_process_is_bitwise_exact(nprocs, tmp_path):
    assert_ok(run_ranks(nprocs, "dist_worker_resume.py", str(tmp_path), "straight"), nprocs, "straight")
    assert os.path.exists(tmp_path / "checkpoint.unet")
    assert_ok(run_ranks(nprocs, "dist_worker_resume.py", str(tmp_path), "resume"), nprocs, "resume")
    finals = []
    for rank in range(nprocs):
        straight, first, resumed = (unet.load(str(tmp_path / f"{run}-rank{rank}.unet"))
                                    for run in ("straight", "first", "resumed"))
        steps = straight["trainer"]["step"]
        assert len(first["losses"]) == steps // 2 and first["data"]["position"] not in (0, None)
        assert first["losses"] + resumed["losses"] == straight["losses"]  # every step's loss and scale
        scales = [scale for _, scale in straight["losses"]]
        assert min(scales) < 2.0 ** 24 and any(b > a for a, b in zip(scales, scales[1:]))  # backoff, growth
        assert_bitwise_equal(straight, {**resumed, "losses": straight["losses"]}, f"rank {rank}")
        finals.append(straight)
    for other in finals[1:]:  # DDP: every rank holds the same weights, moments and scale
        assert_bitwise_equal(finals[0]["model"], other["model"])
        assert_bitwise_equal(finals[0]["optimizer"], other["optimizer"])
        assert finals[0]["scaler"] == other["scaler"]
