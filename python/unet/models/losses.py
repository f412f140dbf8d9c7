"""The losses a ready model takes by name (or as a callable), and the target each one expects."""
from __future__ import annotations

import numpy as np

from .. import backend
from .. import functional as F
from ..tensor import Tensor

LOSSES = ("mse", "cross_entropy", "bce_with_logits")


class Loss:
    """``loss(output, target)`` -> scalar Tensor, after checking and converting ``target``.

    * ``"mse"``, ``"bce_with_logits"``: a real-valued target shaped like the output
      (cast to the output's dtype).
    * ``"cross_entropy"``: integer class indices shaped like the output without its
      last axis, which holds the class logits.
    * a callable ``fn(output, target)``: gets the target as a Tensor on the output's
      device (floats in the output's dtype, integers as int64) and checks it itself.
    """

    def __init__(self, spec):
        if callable(spec):
            self.name, self.fn = None, spec
        elif isinstance(spec, str) and spec in LOSSES:
            self.name, self.fn = spec, None
        else:
            raise ValueError(f"loss: expected one of {LOSSES} or a callable(output, target), got {spec!r}")

    def __call__(self, output: Tensor, target) -> Tensor:
        target = self._as_tensor(target, output)
        if self.fn is not None:
            return self.fn(output, target)
        expected = output.shape[:-1] if self.name == "cross_entropy" else output.shape
        if target.shape != expected:
            raise ValueError(f"target: expected shape {expected} for an output of shape {output.shape}"
                             f" with loss {self.name!r}, got {target.shape}")
        if self.name == "mse":
            return F.mse_loss(output, target)
        if self.name == "bce_with_logits":
            return F.binary_cross_entropy_with_logits(output, target)
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def output_size_for(self, targets) -> int | None:
        """The output features that ``targets`` (examples first) call for; None if it can't tell."""
        if self.name in ("mse", "bce_with_logits") and targets.ndim >= 2:
            return int(targets.shape[-1])
        if self.name == "cross_entropy" and targets.size:
            return int(targets.max()) + 1  # classes 0 .. max seen
        return None

    def _as_tensor(self, target, output: Tensor) -> Tensor:
        if backend.is_cupy_array(target):
            target = Tensor._wrap(target)
        if isinstance(target, Tensor):
            if target.device != output.device:
                raise ValueError(f"target: on {target.device}, the output on {output.device}; "
                                 "move it with .to()")
            kind = target.dtype.kind if target.dtype != backend.bfloat16 else "f"
        else:
            target = np.asarray(target)
            kind = target.dtype.kind
        if kind not in "biuf":
            raise TypeError(f"target: expected real numbers, got dtype {target.dtype}")
        if self.name == "cross_entropy":
            if kind not in "iu":
                raise TypeError(f"target: loss 'cross_entropy' expects integer class indices, "
                                f"got dtype {target.dtype}")
            dtype = backend.int64
        elif self.name is None and kind in "iu":
            dtype = backend.int64  # a custom loss may want class indices
        else:
            dtype = output.dtype
        if isinstance(target, Tensor):
            return target if target.dtype == dtype else target.to(dtype)
        return Tensor(target, dtype=dtype, device=output.device)
