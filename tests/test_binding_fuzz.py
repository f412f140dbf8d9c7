"""Every unet._C binding fuzzed with hypothesis (kernel_checks.FUZZ: 1000 cases a test) in a
worker process: wrong ranks, shapes, dtypes, layouts, devices, aliasing and junk arguments
must raise a ValueError/TypeError naming the argument, and valid ones must run. A crash
(a signal, not an exception) fails the test, printing the example that was running."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
FUZZED_FILES = sorted(p.name for p in TESTS.glob("test_*.py")
                      if p.name != Path(__file__).name and "pytest.mark.fuzz" in p.read_text())


def test_every_binding_has_fuzz_tests():
    from unet import _C
    bindings = {name for name in dir(_C) if not name.startswith("_") and callable(getattr(_C, name))}
    text = "".join((TESTS / name).read_text() for name in FUZZED_FILES)
    unfuzzed = sorted(b for b in bindings - {"info"} if f"_C.{b}" not in text)
    assert not unfuzzed, f"bindings without a fuzz test: {unfuzzed}"


@pytest.mark.parametrize("test_file", FUZZED_FILES)
def test_bindings_survive_fuzzing(test_file):
    env = {**os.environ, "UNET_FUZZ_WORKER": "1"}
    # -s and verbose hypothesis: each example is printed before it runs, so the last one
    # printed before a crash is the one that crashed
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-x", "-m", "fuzz", "-p", "no:cacheprovider",
         "--hypothesis-verbosity=verbose", str(TESTS / test_file)],
        capture_output=True, text=True, env=env, timeout=1200)
    if result.returncode < 0 or result.returncode not in (0, 1):
        trying = re.findall(r"Trying example: .*", result.stdout)
        pytest.fail(f"{test_file}: the worker died (exit {result.returncode}) running\n"
                    f"{trying[-1] if trying else '(no example printed)'}\n{result.stderr[-2000:]}")
    assert result.returncode == 0, result.stdout[-4000:]
    assert re.search(r"\d+ passed", result.stdout), result.stdout[-2000:]
