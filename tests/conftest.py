"""Shared pytest configuration for every test module (add shared fixtures here).

Tests marked ``gpu`` need CuPy and a CUDA device; where either is missing they are
skipped, so the whole suite runs on a CPU-only machine.
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
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _gpu_available():
        skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)
