"""Connectionist temporal classification loss on the CTC kernels of ``unet._C`` (torch's meaning).

One kernel call computes every sequence's negative log-likelihood and, when a gradient is
wanted, its derivative with respect to ``log_probs`` (log-space alpha/beta recursions over
the extended label sequence; see ``csrc/include/unet/ctc.h``). The reduction runs on top,
through autograd.

The gradient is the exact derivative of the loss with respect to ``log_probs``: minus the
occupancy of each class at each step. torch returns softmax(log_probs) minus the occupancy
instead; the two agree after the backward of ``log_softmax`` (the usual input), and only
this one is also correct for log_probs that are not normalised.

float16/bfloat16 follow the mixed-precision rule of ``functional/linear.py``: the kernel
runs in float32 and the results are rounded back.
"""
from __future__ import annotations

import numpy as np

from .. import _C, backend
from ..autograd import Function, is_grad_enabled
from ..backend import array_module, current_stream_ptr, is_cupy_array
from ..tensor import Tensor
from .loss import check_reduction

_KERNEL_DTYPES = (backend.float32, backend.float64)


class CTCLossFunction(Function):
    """log_probs (T, N, C) -> loss (N,); the gradient comes from the forward call."""

    saves_inputs = False  # backward reads only the gradient the kernel already wrote

    def forward(self, log_probs, *, targets, input_lengths, target_lengths, max_target_length,
                blank, zero_infinity, want_grad):
        xp = array_module(log_probs)
        compute = log_probs.dtype if log_probs.dtype in _KERNEL_DTYPES else backend.float32
        lp = xp.ascontiguousarray(log_probs, dtype=compute)
        steps, batch, _ = lp.shape
        loss = xp.empty(batch, compute)
        self.grad = xp.empty_like(lp) if want_grad else None
        workspace = xp.empty((batch, steps + 2, 2 * max_target_length + 1), compute)
        _C.ctc_loss(lp, targets, input_lengths, target_lengths, blank, zero_infinity, loss,
                    self.grad, workspace, current_stream_ptr(lp))
        self.dtype = log_probs.dtype
        return loss.astype(log_probs.dtype, copy=False)

    def backward(self, g):
        return (self.grad * g.astype(self.grad.dtype, copy=False)[None, :, None]).astype(self.dtype, copy=False)


def _host_ints(value, argname):
    """``value`` (Tensor, numpy/CuPy array, sequence or int) as a host int64 array. A GPU array is
    copied to the host (one synchronisation): the checks and the lengths need the values."""
    raw = value.data if isinstance(value, Tensor) else value
    if is_cupy_array(raw):
        raw = raw.get()
    try:
        array = np.asarray(raw)
    except (TypeError, ValueError):
        raise TypeError(f"{argname}: expected integers (a Tensor, array or sequence), got "
                        f"{type(value).__name__}") from None
    if array.dtype.kind not in "iu" and array.size:  # np.asarray([]) is float64: an empty list is fine
        raise TypeError(f"{argname}: expected integers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.int64)


def _lengths(value, batch, unbatched, argname):
    lengths = _host_ints(value, argname)
    if unbatched and lengths.ndim == 0:
        lengths = lengths.reshape(1)
    if lengths.shape != (batch,):
        expected = "an int or shape (1,)" if unbatched else f"shape ({batch},), one per sequence"
        raise ValueError(f"{argname}: expected {expected}, got shape {lengths.shape}")
    return lengths


def ctc_loss(log_probs: Tensor, targets, input_lengths, target_lengths, blank: int = 0,
             reduction: str = "mean", zero_infinity: bool = False) -> Tensor:
    """The CTC loss of torch.nn.functional.ctc_loss.

    ``log_probs`` (T, N, C) log-probabilities (usually ``log_softmax`` output), or (T, C) for one
    sequence. ``targets`` (N, S) padded (row n's first ``target_lengths[n]`` labels count) or 1-D
    concatenated (``sum(target_lengths)`` labels), or (S,) unbatched; labels in [0, C), never
    ``blank``. ``input_lengths``, ``target_lengths``: N ints each (sequence, array or Tensor; an
    int when unbatched), 0 <= input_lengths <= T. ``reduction``: 'none' gives the N losses,
    'sum' their sum, 'mean' the mean of each loss divided by its target length (at least 1).
    Alignments that cannot exist give inf, or 0 and a zero gradient with ``zero_infinity``.
    """
    if not isinstance(log_probs, Tensor):
        raise TypeError(f"log_probs: expected a Tensor, got {type(log_probs).__name__}")
    if not backend.is_floating(log_probs.dtype):
        raise TypeError(f"log_probs: expected a floating-point tensor, got {log_probs.dtype}")
    if log_probs.ndim not in (2, 3):
        raise ValueError(f"log_probs: expected shape (T, N, C), or (T, C) unbatched, got {log_probs.shape}")
    check_reduction(reduction)
    if isinstance(blank, (bool, np.bool_)) or not isinstance(blank, (int, np.integer)):
        raise TypeError(f"blank: expected an int, got {type(blank).__name__}")
    if not isinstance(zero_infinity, (bool, np.bool_)):
        raise TypeError(f"zero_infinity: expected a bool, got {type(zero_infinity).__name__}")

    unbatched = log_probs.ndim == 2
    batched = log_probs.reshape(log_probs.shape[0], 1, log_probs.shape[1]) if unbatched else log_probs
    steps, batch, classes = batched.shape
    targets = _host_ints(targets, "targets")
    if unbatched:
        if targets.ndim != 1:
            raise ValueError(f"targets: expected shape (S,) for unbatched log_probs {log_probs.shape}, "
                             f"got {targets.shape}")
        targets = targets.reshape(1, -1)
    input_lengths = _lengths(input_lengths, batch, unbatched, "input_lengths")
    target_lengths = _lengths(target_lengths, batch, unbatched, "target_lengths")
    # the lengths' bounds and the labels are checked by the binding (host arrays) or here
    # before the upload (a GPU kernel cannot report them)
    indices = (targets, input_lengths, target_lengths)
    xp = array_module(log_probs.data)
    if xp is not np:
        _C.ctc_check(*indices, steps, classes, int(blank))
        indices = tuple(xp.asarray(a) for a in indices)
    loss = CTCLossFunction.apply(
        batched, targets=indices[0], input_lengths=indices[1], target_lengths=indices[2],
        # bounded by the targets' size: a bad length must not allocate before the check fails
        max_target_length=min(int(target_lengths.max(initial=0)), targets.shape[-1]), blank=int(blank),
        zero_infinity=bool(zero_infinity), want_grad=is_grad_enabled() and log_probs.requires_grad)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        divisor = xp.asarray(np.maximum(target_lengths, 1), dtype=loss.dtype)
        return (loss / Tensor._wrap(divisor)).mean()
    return loss.reshape(()) if unbatched else loss
