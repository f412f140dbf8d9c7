"""Losses with torch's reductions: 'mean' (default), 'sum' or 'none'."""
from __future__ import annotations

import numbers

import numpy as np

from ..amp.autocast import cast_for_fp32
from ..autograd import Function
from ..backend import array_module
from ..tensor import Tensor
from .activation import log_softmax
from .embedding import check_indices

REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")


def _check_input(input) -> Tensor:
    """``input`` checked; under autocast a 16-bit input comes back in float32 (losses run in float32)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input: expected a Tensor, got {type(input).__name__}")
    return cast_for_fp32(input)


def _like_input(value, input, argname):
    """``value`` (Tensor, array, list or scalar) as a Tensor of input's dtype on input's device."""
    if isinstance(value, Tensor):
        if value.device != input.device:
            raise ValueError(f"{argname}: on {value.device}, input on {input.device}; move one with .to()")
        return value if value.dtype == input.dtype else value.to(input.dtype)
    try:
        return Tensor._wrap(array_module(input.data).asarray(value, dtype=input.dtype))
    except (TypeError, ValueError):
        raise TypeError(f"{argname}: expected a Tensor or an array of numbers, got {type(value).__name__}") from None


def _same_shape(input, target):
    if input.shape != target.shape:
        raise ValueError(f"target: expected shape {input.shape} (like input), got {target.shape}")


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    input = _check_input(input)
    check_reduction(reduction)
    target = _like_input(target, input, "target")
    _same_shape(input, target)
    diff = input - target
    return _reduce(diff * diff, reduction)


def _class_last(x: Tensor) -> Tensor:
    """(N, C, d1, ...) -> (N, d1, ..., C) so classes are the last axis."""
    return x if x.ndim <= 2 else x.permute(0, *range(2, x.ndim), 1)


def _check_targets(input, target, ignore_index):
    """Class-index targets: shape (N, d1, ...) for input (N, C, d1, ...), () for unbatched (C,)."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index: expected an int, got {ignore_index!r}")
    if input.ndim == 0:
        raise ValueError("input: expected shape (C,), (N, C) or (N, C, d1, ...), got a 0-d tensor")
    raw = target.data if isinstance(target, Tensor) else array_module(input.data).asarray(target)
    classes = input.shape[1] if input.ndim >= 2 else input.shape[0]
    expected = (input.shape[0],) + input.shape[2:] if input.ndim >= 2 else ()
    if raw.shape != expected:
        raise ValueError(f"target: expected shape {expected} for input of shape {input.shape}, got {raw.shape}")
    check_indices(raw, classes, "target", ignore_index)
    return raw, classes


def _class_weight(weight, input, classes):
    if weight is None:
        return None
    weight = _like_input(weight, input, "weight")
    if weight.shape != (classes,):
        raise ValueError(f"weight: expected shape ({classes},), one per class, got {weight.shape}")
    return weight.data


def _nll(logp, target, weight, ignore_index, reduction):
    """nll on validated raw targets and raw weights; returns the loss and the mean's denominator."""
    xp = array_module(logp.data)
    valid = target != ignore_index
    safe = xp.where(valid, target, 0)
    picked = -_class_last(logp).gather(-1, safe[..., None]).squeeze(-1)
    w = (weight[safe] if weight is not None else xp.ones(safe.shape, dtype=logp.dtype)) * valid
    loss = picked * Tensor._wrap(w.astype(logp.dtype, copy=False))
    if reduction == "mean":  # torch's weighted mean: divided by the weights of the counted targets
        return loss.sum() / _counted_weight(w), w
    return _reduce(loss, reduction), w


def _counted_weight(w) -> float:
    """The mean's denominator; 1 when nothing counts, so that a batch whose targets are all
    ignored contributes loss 0 and no gradient (torch gives NaN there, which poisons training)."""
    total = float(w.sum())
    return total if total != 0.0 else 1.0


def nll_loss(input: Tensor, target, weight=None, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class ``target`` under log-probabilities ``input`` (N, C, ...)."""
    input = _check_input(input)
    check_reduction(reduction)
    target, classes = _check_targets(input, target, ignore_index)
    return _nll(input, target, _class_weight(weight, input, classes), ignore_index, reduction)[0]


def cross_entropy(input: Tensor, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over the class dim (1, or 0 for unbatched input) + nll, with optional label smoothing.

    With smoothing ε the target is (1 - ε) one-hot + ε/C uniform, as in torch:
    loss = (1 - ε) nll + ε/C * sum_c -w_c log p_c, the second term masked and
    normalised like the first (by the summed weights of the counted targets).
    """
    input = _check_input(input)
    check_reduction(reduction)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing!r}")
    target, classes = _check_targets(input, target, ignore_index)
    weight = _class_weight(weight, input, classes)
    logp = log_softmax(input, dim=1 if input.ndim >= 2 else 0)
    nll, counted = _nll(logp, target, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return nll
    per_class = _class_last(logp)
    if weight is not None:
        per_class = per_class * Tensor._wrap(weight)
    valid = (target != ignore_index).astype(input.dtype)
    smooth = -per_class.sum(dim=-1) * Tensor._wrap(valid)
    smooth = smooth.sum() / _counted_weight(counted) if reduction == "mean" else _reduce(smooth, reduction)
    return nll * (1.0 - label_smoothing) + smooth * (label_smoothing / classes)


class _Softplus(Function):
    """log(1 + exp(x)) in the stable form max(x, 0) + log1p(exp(-|x|)); gradient sigmoid(x).

    One op rather than a composition of abs/relu, whose subgradients at x = 0
    would give 0 instead of sigmoid(0) = 1/2.
    """

    def forward(self, x):
        xp = array_module(x)
        self.x = x
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-abs(x)))

    def backward(self, g):
        xp = array_module(g)
        e = xp.exp(-abs(self.x))  # sigmoid split by sign so exp never overflows
        return g * xp.where(self.x >= 0, 1 / (1 + e), e / (1 + e)).astype(g.dtype, copy=False)


def binary_cross_entropy_with_logits(input: Tensor, target, weight=None, reduction: str = "mean",
                                     pos_weight=None) -> Tensor:
    """-w [pw y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))] = w [(1 - y) x + (1 + (pw - 1) y) softplus(-x)]."""
    input = _check_input(input)
    check_reduction(reduction)
    target = _like_input(target, input, "target")
    _same_shape(input, target)
    log_term = _Softplus.apply(-input)
    if pos_weight is None:
        loss = (1 - target) * input + log_term
    else:
        pos_weight = _broadcastable(pos_weight, input, "pos_weight")
        loss = (1 - target) * input + (1 + (pos_weight - 1) * target) * log_term
    if weight is not None:
        loss = loss * _broadcastable(weight, input, "weight")
    return _reduce(loss, reduction)


def _broadcastable(value, input, argname):
    value = _like_input(value, input, argname)
    try:
        fits = np.broadcast_shapes(value.shape, input.shape) == input.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{argname}: shape {value.shape} does not broadcast to input's {input.shape}")
    return value
