"""Shared pytest configuration for every test module (add shared fixtures here).

Tests marked ``gpu`` need CuPy and a CUDA device; where either is missing they are
skipped, so the whole suite runs on a CPU-only machine.

Tests marked ``fuzz`` (binding fuzzing, see kernel_checks.FUZZ) run only in the worker
processes that tests/test_binding_fuzz.py starts (UNET_FUZZ_WORKER=1), so that a crash
fails one test with its example instead of ending the whole run.
"""
import os

import pytest

# torch ships its own libgomp.so.1, which unet._C then shares; loaded by `import torch` before unet
# sets its passive wait policy, its threads spin and stall whenever other processes hold the cores
# (measured: the digits example 4.2 -> 17.9 s of CPU). Set it before any test module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _gpu_available():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "no GPU"
        return False


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("UNET_FUZZ_WORKER"):
        fuzz = [item for item in items if "fuzz" in item.keywords]
        if fuzz:
            config.hook.pytest_deselected(items=fuzz)
            items[:] = [item for item in items if "fuzz" not in item.keywords]
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _gpu_available():
        skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)
