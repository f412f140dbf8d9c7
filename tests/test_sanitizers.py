"""AddressSanitizer + UBSan over the CPU kernels: a sanitized build of unet._C runs the kernel
tests and the binding fuzz cases with no report, and a deliberate out-of-bounds read (compiled
into that build only) proves the sanitizers are on."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import unet

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# the binding tests of every kernel family (they hold its fuzz cases too)
KERNEL_TESTS = sorted(p.name for p in (ROOT / "tests").glob("test_*_kernel.py")) + ["test_ctc.py",
                                                                                    "test_fused_optim.py"]


def _preload() -> str:
    """libasan first; libstdc++ beside it, else ASan cannot find the real __cxa_throw when the
    module (loaded later) throws the exceptions that carry argument errors to Python."""
    paths = []
    for compiler, library in (("gcc", "libasan.so"), ("g++", "libstdc++.so")):
        path = subprocess.run([compiler, f"-print-file-name={library}"], capture_output=True,
                              text=True).stdout.strip()
        if not os.path.isabs(path):
            pytest.fail(f"{compiler} has no {library}; the sanitizer build needs it")
        paths.append(path)
    return " ".join(paths)


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory):
    """(PYTHONPATH, environment) under which `import unet` gets the sanitized _C."""
    build = ROOT / "build" / "sanitize"  # kept between runs: the rebuild is incremental
    # cmake and ninja from the test extra sit beside this interpreter (a virtual environment's bin)
    tools = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    for command in (["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", "-DUNET_CUDA=OFF",
                     "-DUNET_SANITIZE=ON", f"-DPython_EXECUTABLE={sys.executable}"],
                    ["cmake", "--build", str(build)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=tools)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(Path(unet.__file__).parent, site / "unet",
                    ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
    for module in build.glob("_C*.so"):
        shutil.copy(module, site / "unet")
    env = {**os.environ, "PYTHONPATH": str(site), "LD_PRELOAD": _preload(),
           "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1",  # CPython's own allocations are not ours
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    return env


def run(env, *args, timeout=1800):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT / "tests")


@pytest.mark.parametrize("kind,report", [("heap", "AddressSanitizer: heap-buffer-overflow"),
                                         ("overflow", "runtime error: signed integer overflow")])
def test_the_canaries_are_caught(sanitized, kind, report):
    done = run(sanitized, "-c", f"import unet._C as c; c._sanitizer_canary({kind!r}, 1)")
    assert done.returncode != 0
    assert report in done.stderr, done.stderr[-2000:]


def test_kernel_tests_and_fuzzing_run_clean(sanitized):
    env = {**sanitized, "UNET_FUZZ_WORKER": "1", "UNET_FUZZ_EXAMPLES": "200"}
    done = run(env, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *KERNEL_TESTS)
    reports = [line for line in done.stderr.splitlines() if "Sanitizer" in line or "runtime error" in line]
    assert not reports, "\n".join(reports[:20]) + done.stderr[-3000:]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
