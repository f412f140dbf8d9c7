"""A minimal tracer: run a model's forward while every autograd ``Function`` call is recorded.

unet's differentiable ops all go through ``Function.apply``; for the length of a ``trace`` block
that classmethod is wrapped so that each call (on the tracing thread) is kept as an ``OpCall``:
the Function class, its arguments and its outputs, in execution order. A few layers have a
single ONNX operator for what unet computes with several ops (LayerNorm, global average
pooling): a module call that ``whole(module)`` accepts is kept as one ``OpCall`` whose
function is the module's class (args: the module, then its arguments) and the ops inside it
are not recorded. The recorded calls hold their Tensors, so ``id()`` identifies them for the
whole export.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

from ..autograd import Function
from ..nn.module import Module

_lock = threading.Lock()  # the patch is process-wide: one trace at a time


@dataclass
class OpCall:
    function: type
    args: tuple
    kwargs: dict
    outputs: tuple  # always a tuple, one Tensor per output


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


@contextlib.contextmanager
def trace(whole=lambda module: False):
    """Yield a list that fills with the ``OpCall`` of every ``Function.apply`` made inside the block
    (and of every module call ``whole`` accepts, instead of the ops inside it)."""
    calls, thread, inside_whole = [], threading.get_ident(), [0]
    original_apply, original_call = Function.__dict__["apply"], Module.__call__

    def recording_apply(cls, *args, **kwargs):
        result = original_apply.__func__(cls, *args, **kwargs)
        if not inside_whole[0] and threading.get_ident() == thread:
            calls.append(OpCall(cls, args, kwargs, _as_tuple(result)))
        return result

    def recording_call(module, *args, **kwargs):
        if inside_whole[0] or threading.get_ident() != thread or not whole(module):
            return original_call(module, *args, **kwargs)
        inside_whole[0] += 1
        try:
            result = original_call(module, *args, **kwargs)
        finally:
            inside_whole[0] -= 1
        calls.append(OpCall(type(module), (module,) + args, kwargs, _as_tuple(result)))
        return result

    with _lock:
        Function.apply, Module.__call__ = classmethod(recording_apply), recording_call
        try:
            yield calls
        finally:
            Function.apply, Module.__call__ = original_apply, original_call
