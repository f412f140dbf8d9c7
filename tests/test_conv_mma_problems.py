"""The index arithmetic of the tensor-core convolutions (csrc/cuda/conv_mma_problems.cuh), checked
on the host: tests/cuda_host/conv_problems_check.cpp sums each implicit GEMM through the problems'
own table entries, loads and stores, and compares with the definition. Built with the C++ compiler
that built unet._C (no CUDA, no GPU); the kernel around the problems (tiles, mma fragments) runs
only in the GPU tests."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# N, C_in, H, W, C_out, KH, KW, sh, sw, pt, pb, pl, pr, dh, dw, groups
CASES = [
    (2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),
    (3, 4, 9, 8, 6, 3, 2, 2, 1, 0, 1, 2, 0, 1, 2, 2),
    (2, 5, 11, 13, 7, 5, 3, 3, 2, 2, 2, 1, 1, 2, 1, 1),
    (2, 6, 1, 17, 4, 1, 5, 1, 1, 0, 0, 2, 2, 1, 1, 1),   # 1-D, "same"
    (1, 4, 6, 6, 6, 2, 2, 2, 2, 1, 0, 0, 1, 1, 1, 2),    # even kernel, uneven padding
    (2, 8, 5, 7, 8, 3, 3, 1, 2, 1, 1, 1, 1, 2, 1, 4),
    (0, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),    # no images: zero weight gradient
]


def _cxx():
    """The C++ compiler: $CXX, else the first of c++, g++, clang++ on the PATH (one built unet._C)."""
    names = [os.environ["CXX"].split()[0]] if os.environ.get("CXX") else []
    for name in names + ["c++", "g++", "clang++"]:
        if shutil.which(name):
            return shutil.which(name)
    raise RuntimeError("no C++ compiler found (set CXX)")


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("conv_problems") / "conv_problems_check")
    build = subprocess.run([_cxx(), "-std=c++17", "-O1", "-I", os.path.join(ROOT, "csrc", "include"),
                            "-I", os.path.join(ROOT, "csrc", "cuda"),
                            os.path.join(ROOT, "tests", "cuda_host", "conv_problems_check.cpp"), "-o", exe],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe


@pytest.mark.parametrize("case", CASES, ids=str)
def test_problems_sum_the_convolution(checker, case):
    run = subprocess.run([checker, *map(str, case)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
