"""Run a test worker script in N MPI ranks with `unet launch`, for the distributed tests."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
HARD_TIMEOUT_S = 90


def run_ranks(nprocs, script, *args, timeout_s=None):
    """Start ``script`` in ``nprocs`` ranks with `unet launch`; a hard timeout so the suite never hangs."""
    command = [sys.executable, "-m", "unet", "launch", "-n", str(nprocs)]
    command += ["--timeout", str(timeout_s)] if timeout_s else []
    command += [os.path.join(HERE, script), *args]
    environ = dict(os.environ, OMP_NUM_THREADS="1")  # the ranks import the unet this test imports
    return subprocess.run(command, capture_output=True, text=True, timeout=HARD_TIMEOUT_S, env=environ)


def assert_ok(result, nprocs, word):
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for r in range(nprocs):
        assert f"rank {r}: {word} OK" in output, output[-3000:]
