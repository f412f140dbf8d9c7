"""Losses with torch's reductions: 'mean' (default), 'sum' or 'none'."""
from __future__ import annotations

from .. import backend
from ..backend import array_module
from ..tensor import Tensor, _operand
from .activation import log_softmax
from .embedding import check_indices
from .tensor_ops import where

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


def _same_shape(input, target):
    if input.shape != target.shape:
        raise ValueError(f"target: expected shape {input.shape} (like input), got {target.shape}")


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    check_reduction(reduction)
    target = _operand(target, input) if not isinstance(target, Tensor) else target
    _same_shape(input, target)
    diff = input - target
    return _reduce(diff * diff, reduction)


def _class_last(x: Tensor) -> Tensor:
    """(N, C, d1, ...) -> (N, d1, ..., C) so classes are the last axis."""
    return x if x.ndim <= 2 else x.permute(0, *range(2, x.ndim), 1)


def _check_targets(input, target, ignore_index):
    if not isinstance(target, Tensor):
        target = Tensor._wrap(array_module(input.data).asarray(target))
    classes = input.shape[1] if input.ndim >= 2 else input.shape[0]
    expected = (input.shape[0],) + input.shape[2:] if input.ndim >= 2 else ()
    if target.shape != expected:
        raise ValueError(f"target: expected shape {expected} for input of shape {input.shape}, got {target.shape}")
    check_indices(target.data, classes, "target", ignore_index)
    return target, classes


def nll_loss(input: Tensor, target, weight=None, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class ``target`` under log-probabilities ``input`` (N, C, ...)."""
    check_reduction(reduction)
    target, classes = _check_targets(input, target, ignore_index)
    xp = array_module(input.data)
    logp = _class_last(input)
    valid = target.data != ignore_index
    safe = xp.where(valid, target.data, 0)
    picked = -logp.gather(logp.ndim - 1, safe[..., None]).squeeze(-1)
    w = (weight.data[safe] if weight is not None else xp.ones(safe.shape, dtype=input.dtype)) * valid
    loss = picked * Tensor._wrap(w.astype(input.dtype))
    if reduction == "mean":
        return loss.sum() / float(w.sum())
    return _reduce(loss, reduction)


def cross_entropy(input: Tensor, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over the class dim (1, or 0 for unbatched input) + nll, with optional label smoothing."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")
    class_dim = 1 if input.ndim >= 2 else 0
    logp = log_softmax(input, dim=class_dim)
    nll = nll_loss(logp, target, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return nll
    target, classes = _check_targets(input, target, ignore_index)
    xp = array_module(input.data)
    per_class = _class_last(logp)
    if weight is not None:
        per_class = per_class * weight
    valid = target.data != ignore_index
    smooth = -per_class.sum(dim=-1) * Tensor._wrap(valid.astype(input.dtype))
    if reduction == "mean":
        if weight is not None:
            denom = float(weight.data[xp.where(valid, target.data, 0)][valid].sum())
        else:
            denom = float(valid.sum())
        smooth = smooth.sum() / denom
    else:
        smooth = _reduce(smooth, reduction)
    return nll * (1.0 - label_smoothing) + smooth * (label_smoothing / classes)


def binary_cross_entropy_with_logits(input: Tensor, target, weight=None, reduction: str = "mean",
                                     pos_weight=None) -> Tensor:
    """Sigmoid + binary cross-entropy in the stable form max(x,0) - x*y + log(1 + exp(-|x|))."""
    check_reduction(reduction)
    target = _operand(target, input) if not isinstance(target, Tensor) else target
    _same_shape(input, target)
    log_term = (1 + (-input.abs()).exp()).log() + (-input).relu()
    if pos_weight is None:
        loss = (1 - target) * input + log_term
    else:
        loss = (1 - target) * input + (1 + (pos_weight - 1) * target) * log_term
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)
