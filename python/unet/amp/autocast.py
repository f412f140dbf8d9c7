"""Autocast: which precision each op runs in while mixed precision is on.

    with unet.amp.autocast("bf16"):
        loss = F.cross_entropy(model(x), y)   # linear/matmul in bfloat16, the loss in float32
    loss.backward()                           # outside: the backward follows the forward's choices

The policy (torch.autocast's, with one meaning for 16-bit products):

- matrix-product ops (``F.linear`` / ``nn.Linear``, ``Tensor @``, the recurrent layers'
  input and recurrent products, convolutions) round their float32/float16/bfloat16
  inputs to the autocast dtype and accumulate the products in float32. Linear and
  matmul (and the convolutions) give outputs in the autocast dtype; the recurrent layers, whose kernels are
  float32, give float32 outputs. Gradients of float32 tensors (master parameters)
  arrive in float32. Each such op asks ``cast_for_matmul`` in its forward: that is the
  one place the choice is made.
- softmax, log_softmax, the losses, layer_norm and the reductions sum/mean/var compute in
  float32: 16-bit inputs are cast up first (``cast_for_fp32``).
- everything else runs in the dtype of its inputs (numpy's promotion: 16-bit with
  float32 gives float32).

float64 tensors are never cast. The state is per thread; ``autocast(enabled=False)``
inside an autocast region turns it off for its body.
"""
from __future__ import annotations

import functools
import threading

from .. import backend

HALF_DTYPES = (backend.float16, backend.bfloat16)
# what autocast rounds: float32 and the 16-bit types (float64 is left alone, as in torch)
CASTABLE = frozenset({backend.float32, *HALF_DTYPES})

_state = threading.local()


def get_autocast_dtype():
    """The dtype matrix products run in on this thread: float16 or bfloat16 inside autocast, else None."""
    return getattr(_state, "dtype", None)


def is_autocast_enabled() -> bool:
    return get_autocast_dtype() is not None


def resolve_half_dtype(dtype, argname: str = "dtype"):
    """'bf16', 'bfloat16', 'fp16', 'float16', 'half' or the numpy dtypes, as a numpy dtype."""
    try:
        resolved = backend.resolve_dtype(dtype, argname)
    except TypeError:
        resolved = None
    if resolved not in HALF_DTYPES:
        raise ValueError(f"{argname}: expected 'bf16'/'bfloat16' or 'fp16'/'float16', got {dtype!r}")
    return resolved


class autocast:
    """Context manager and decorator: matrix products in ``dtype`` (bf16 or fp16), fp32-sensitive ops
    in float32, on this thread, until the block ends. Nestable; ``enabled=False`` turns it off inside."""

    def __init__(self, dtype="bfloat16", enabled: bool = True):
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled: expected a bool, got {enabled!r}")
        self.dtype = resolve_half_dtype(dtype)
        self.enabled = enabled
        self._previous = []  # a stack, so one instance may be entered again while active

    def __enter__(self):
        self._previous.append(get_autocast_dtype())
        _state.dtype = self.dtype if self.enabled else None
        return self

    def __exit__(self, *exc):
        _state.dtype = self._previous.pop()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.dtype, self.enabled):
                return fn(*args, **kwargs)
        return wrapper

    def __repr__(self):
        return f"autocast(dtype={self.dtype}, enabled={self.enabled})"


def cast_for_matmul(*arrays):
    """Inputs of a matrix-product op, as its forward should use them: inside autocast every float32,
    float16 or bfloat16 array rounded to the autocast dtype; otherwise (and for float64, integer
    arrays and None) unchanged. Returns a tuple, one entry per argument."""
    dtype = get_autocast_dtype()
    if dtype is None:
        return arrays
    return tuple(a if a is None or a.dtype not in CASTABLE or a.dtype == dtype else a.astype(dtype)
                 for a in arrays)


def cast_for_fp32(tensor):
    """``tensor`` as an fp32-policy op (softmax, losses, norms, reductions) should read it: inside
    autocast a float16/bfloat16 Tensor is cast to float32 (differentiably); anything else as it is."""
    if get_autocast_dtype() is None or tensor.dtype not in HALF_DTYPES:
        return tensor
    return tensor.to(backend.float32)


def dtypes_mix(*dtypes) -> bool:
    """Whether tensors of these dtypes may meet in one matrix-product op: all equal, or, inside
    autocast, all float32/float16/bfloat16 (the op rounds them to the autocast dtype)."""
    if all(d == dtypes[0] for d in dtypes):
        return True
    return is_autocast_enabled() and all(d in CASTABLE for d in dtypes)
