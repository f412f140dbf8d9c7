"""Loss modules over ``unet.functional``'s losses."""
from __future__ import annotations

import numbers

from .. import functional as F
from ..functional.loss import check_reduction
from ..tensor import Tensor
from .module import Module


def _optional_tensor(value, argname):
    """Class weights etc. become buffers (saved, moved and cast with the module): Tensors or None."""
    if value is None or isinstance(value, Tensor):
        return value
    try:
        return Tensor(value)
    except (TypeError, ValueError):
        raise TypeError(f"{argname}: expected a Tensor or an array of numbers, got {type(value).__name__}") from None


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class MSELoss(_Loss):
    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"ignore_index: expected an int, got {ignore_index!r}")
        self.ignore_index = ignore_index
        weight = _optional_tensor(weight, "weight")
        if weight is not None and weight.ndim != 1:
            raise ValueError(f"weight: expected a 1-D tensor, one weight per class, got shape {weight.shape}")
        self.register_buffer("weight", weight)


class NLLLoss(_WeightedLoss):
    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, ignore_index, reduction)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
                or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                               self.label_smoothing)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.register_buffer("weight", _optional_tensor(weight, "weight"))
        self.register_buffer("pos_weight", _optional_tensor(pos_weight, "pos_weight"))

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction,
                                                  self.pos_weight)


class CTCLoss(_Loss):
    """Connectionist temporal classification (``F.ctc_loss``): log_probs (T, N, C), targets,
    input_lengths, target_lengths."""

    def __init__(self, blank=0, reduction="mean", zero_infinity=False):
        super().__init__(reduction)
        if isinstance(blank, bool) or not isinstance(blank, int) or blank < 0:
            raise ValueError(f"blank: expected a non-negative int (a class index), got {blank!r}")
        if not isinstance(zero_infinity, bool):
            raise TypeError(f"zero_infinity: expected a bool, got {type(zero_infinity).__name__}")
        self.blank = blank
        self.zero_infinity = zero_infinity

    def forward(self, log_probs, targets, input_lengths, target_lengths):
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank,
                          self.reduction, self.zero_infinity)

    def extra_repr(self):
        parts = [f"blank={self.blank}", super().extra_repr()] + (["zero_infinity=True"] if self.zero_infinity else [])
        return ", ".join(p for p in parts if p)
