"""A minimal tracer: run a model's forward while every autograd ``Function`` call is recorded.

unet's differentiable ops all go through ``Function.apply``; for the length of a ``trace`` block
that classmethod is wrapped so that each call is kept as an ``OpCall`` (the Function class, its
arguments and its outputs, in execution order). The recorded calls are the graph the exporter
converts; the Tensors they hold stay alive, so ``id()`` identifies them for the whole export.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

from ..autograd import Function

_lock = threading.Lock()  # the patch is process-wide: one trace at a time


@dataclass
class OpCall:
    function: type
    args: tuple
    kwargs: dict
    outputs: tuple  # always a tuple, one Tensor per output


@contextlib.contextmanager
def trace():
    """Yield a list that fills with the ``OpCall`` of every ``Function.apply`` made inside the block."""
    calls = []
    original = Function.__dict__["apply"]

    def recording_apply(cls, *args, **kwargs):
        result = original.__func__(cls, *args, **kwargs)
        calls.append(OpCall(cls, args, kwargs, result if isinstance(result, tuple) else (result,)))
        return result

    with _lock:
        Function.apply = classmethod(recording_apply)
        try:
            yield calls
        finally:
            Function.apply = original
