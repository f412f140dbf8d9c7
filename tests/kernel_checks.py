"""Helpers shared by the kernel tests (test_linear_kernel.py, test_rnn_kernel.py, test_rnn_gpu.py).

Argument validation: ways to spoil a valid float array argument (MUTATIONS), the check that
a binding then raises an exception naming that argument (check_mutation, assert_names), and
an object posing as a CUDA array (FakeCudaArray), and junk arguments for never-crash fuzzing
(junk_arguments). GPU: the ``cupy`` fixture, which skips
unless CuPy, a CUDA device and a CUDA build of unet._C are all there (import it into a test
module to use it).
"""
import os
import re

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from unet import _C


def strided(a):
    """A non-contiguous view with a's shape and values (every other element of a wider buffer)."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    view = wide[..., ::2]
    view[...] = a
    return view


def read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def grow_dim(a, rng):
    shape = list(a.shape)
    shape[rng.integers(len(shape))] += 1
    return np.ones(shape, a.dtype)


# mutation -> (expected exception, how to apply it to a valid float array argument)
MUTATIONS = {
    "ndim+1": (ValueError, lambda a, rng: a[..., None].copy()),
    "ndim-1": (ValueError, lambda a, rng: a.reshape(-1) if a.ndim >= 2 else a.reshape(1, -1)),
    "0-d": (ValueError, lambda a, rng: np.array(1.0, a.dtype)),
    "shape": (ValueError, grow_dim),
    "transposed": (ValueError, lambda a, rng: np.asfortranarray(a) if a.ndim >= 2 else strided(a)),
    "strided": (ValueError, lambda a, rng: strided(a)),
    "other float": (TypeError, lambda a, rng: a.astype(np.float32 if a.dtype == np.float64 else np.float64)),
    "float16": (TypeError, lambda a, rng: a.astype(np.float16)),
    "bfloat16": (TypeError, lambda a, rng: a.astype(ml_dtypes.bfloat16)),
    "int64": (TypeError, lambda a, rng: a.astype(np.int64)),
    "int32": (TypeError, lambda a, rng: a.astype(np.int32)),
    "bool": (TypeError, lambda a, rng: a.astype(bool)),
    "complex": (TypeError, lambda a, rng: a.astype(np.complex128)),
    "big-endian": (TypeError, lambda a, rng: a.astype(a.dtype.newbyteorder(">"))),
    "object": (TypeError, lambda a, rng: a.astype(object)),
    "list": (TypeError, lambda a, rng: a.tolist()),
    "str": (TypeError, lambda a, rng: "not an array"),
    "int": (TypeError, lambda a, rng: 3),
    "bytes": (TypeError, lambda a, rng: a.tobytes()),
}


# Binding fuzz tests carry @pytest.mark.fuzz and these settings. They run in a worker
# process (tests/test_binding_fuzz.py), where a crash fails one test with the example
# that caused it; the in-process suite leaves them out (conftest.py).
FUZZ = settings(max_examples=int(os.environ.get("UNET_FUZZ_EXAMPLES", "1000")), deadline=None,
                database=None, suppress_health_check=[HealthCheck.too_slow])


def assert_names(excinfo, name):
    """The exception caught in ``excinfo`` names ``name`` (as a whole word) and says what
    was expected and what came."""
    msg = str(excinfo.value)
    assert re.search(rf"\b{name}\b", msg), f"message does not name {name!r}: {msg}"
    assert "expected" in msg and ("got" in msg or "not" in msg), f"message lacks expected/got: {msg}"


def check_mutation(fn, args, name, mutation, rng, mutations=MUTATIONS):
    """``fn(**args)`` with ``args[name]`` spoilt by ``mutations[mutation]`` raises the expected
    exception, naming ``name``."""
    expected, apply = mutations[mutation]
    args[name] = apply(args[name], rng)
    with pytest.raises(expected) as excinfo:
        fn(**args)
    assert_names(excinfo, name)


class FakeCudaArray:
    """Claims to be a CUDA array: without a CUDA build, or with a bogus pointer, it must
    be refused before anything touches its memory."""

    def __init__(self, shape, typestr="<f4", ptr=1234):
        self.__cuda_array_interface__ = dict(shape=shape, typestr=typestr, data=(ptr, False),
                                             strides=None, version=3)


def _array(shape, fill, dtype, order, writeable):
    a = np.full(shape, fill, dtype, order=order)
    a.setflags(write=writeable)
    return a


def junk_arguments(fill, booleans=False):
    """A hypothesis strategy for anything at all in an argument position: small arrays of
    ``fill`` (any dtype, order, writeability, strided or not), None, ints, (with ``booleans``,
    bools,) strings and lists of floats."""
    arrays = st.builds(_array, st.lists(st.integers(0, 3), max_size=3).map(tuple), st.just(fill),
                       st.sampled_from([np.float32, np.float64, np.int64, np.float16, bool]),
                       st.sampled_from(["C", "F"]), st.booleans())
    return st.one_of(arrays, arrays.map(lambda a: a[::2] if a.ndim else a), st.none(), st.integers(-3, 3),
                     *([st.booleans()] if booleans else []), st.text(max_size=3), st.lists(st.floats(), max_size=3))


@pytest.fixture
def cupy():
    cp = pytest.importorskip("cupy")
    if cp.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no CUDA device")
    if not _C.info()["cuda_compiled"]:
        pytest.skip("unet._C was built without CUDA")
    return cp
