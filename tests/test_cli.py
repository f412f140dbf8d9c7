"""The ``unet`` command and ``unet.info()``."""
import subprocess
import sys

import numpy as np
import pytest

import unet
from unet import UNet
from unet.cli import main, sine_delay_task


def run(*args):
    return subprocess.run([sys.executable, "-m", "unet", *args], capture_output=True, text=True,
                          timeout=120)


def test_info_command():
    result = run("info")
    assert result.returncode == 0, result.stderr
    for line in ("unet", "CUDA kernels", "CPU features", "OpenMP threads", "GPUs", "torch"):
        assert line in result.stdout


def test_train_command_quiet_and_save(tmp_path):
    path = tmp_path / "model.safetensors"
    result = run("train", "--epochs", "2", "--quiet", "--save", str(path))
    assert result.returncode == 0, result.stderr
    assert "final: train mse" in result.stdout and "epoch" not in result.stdout
    assert UNet.load(path, restore_rng=False).predict(np.zeros((5, 1))).shape == (5, 1)


def test_train_prints_the_loss_falling(capsys):
    assert main(["train", "--epochs", "3", "--examples", "64", "--steps", "10", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    losses = [float(line.split()[3]) for line in out.splitlines() if line.startswith("epoch")]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert "final:" in out


@pytest.mark.parametrize("argv", [[], ["train", "--epochs", "0"], ["train", "--lr", "nan"], ["bench"]])
def test_bad_command_lines_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_info_returns_a_report(capsys):
    report = unet.info()
    assert capsys.readouterr().out == ""  # quiet unless asked
    assert report["version"] == unet.__version__
    assert isinstance(report["cuda_compiled"], bool) and isinstance(report["gpus"], list)
    assert set(report["packages"]) >= {"cupy", "mpi4py", "ml_dtypes", "torch"}
    assert report["packages"]["ml_dtypes"] is not None
    unet.info(verbose=True)
    assert "OpenMP threads" in capsys.readouterr().out


def test_sine_delay_task_is_deterministic_and_delayed():
    x1, y1 = sine_delay_task(4, 20, delay=3, noise=0.0, rng=np.random.default_rng(0))
    x2, _ = sine_delay_task(4, 20, delay=3, noise=0.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(x1, x2)
    assert x1.shape == y1.shape == (4, 20, 1)
    np.testing.assert_allclose(y1[:, 3:], x1[:, :-3], atol=1e-6)  # without noise: y is x, 3 steps later
