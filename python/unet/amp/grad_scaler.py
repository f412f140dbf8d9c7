"""Dynamic loss scaling for float16 training (torch.amp.GradScaler's semantics and state).

    scaler = unet.amp.GradScaler()
    for x, y in data:
        opt.zero_grad()
        with unet.amp.autocast("fp16"):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()      # gradients times the scale: small ones survive float16
        scaler.unscale_(opt)               # optional: only to look at or clip the true gradients
        unet.optim.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)                   # skipped if a gradient holds inf/NaN
        scaler.update()                    # halve the scale after a skip, double it after
                                           # growth_interval clean steps

bfloat16 has float32's exponent range, so bf16 training needs no scaler (a scaler still
works: it only costs the checks).

Fused optimizers: an optimizer that can fold the unscaling and the inf/NaN check into its
own update offers ``step_scaled(scale: float) -> bool``. It checks every gradient; if any
holds inf or NaN it changes nothing and returns True; otherwise it updates exactly as
``step()`` would with each gradient divided by ``scale`` and returns False. It leaves the
gradients untouched (still scaled). ``step`` uses it when the optimizer has it and
``unscale_`` was not called for that optimizer in this iteration; otherwise it unscales
the gradients in place and calls ``optimizer.step()`` unless one was not finite.

In a ``unet.distributed`` process group of several ranks the inf/NaN check is made to agree
(a max over the ranks) before any rank steps, so every rank skips the same steps and the
scales stay equal; the fused ``step_scaled`` is not used there, as it decides alone.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..autograd import no_grad
from ..backend import array_module, device_of, float16, float32

READY, UNSCALED, STEPPED = "ready", "unscaled", "stepped"


class GradScaler:
    """Multiplies the loss by ``scale`` before backward, divides the gradients by it before the step.

    A step whose gradients hold inf/NaN is skipped and the scale multiplied by
    ``backoff_factor``; after ``growth_interval`` steps in a row without one the scale is
    multiplied by ``growth_factor``. ``enabled=False`` makes every method a pass-through.
    The scale is a float32 value, updated in float32 arithmetic as torch does.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True):
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled: expected a bool, got {enabled!r}")
        self._enabled = enabled
        self._scale = _as_scale(init_scale, "init_scale")
        self.set_growth_factor(growth_factor)
        self.set_backoff_factor(backoff_factor)
        self.set_growth_interval(growth_interval)
        self._growth_tracker = 0  # clean steps since the scale last changed
        self._optimizers = {}     # id(optimizer) -> {"stage": ..., "found_inf": bool | None}

    # ------------------------------------------------------------ the iteration
    def scale(self, outputs):
        """``outputs`` (a Tensor, or a list/tuple of them, nested) times the scale, in float32 at least."""
        if not self._enabled:
            return outputs
        from ..tensor import Tensor

        if isinstance(outputs, Tensor):
            xp = array_module(outputs.data)
            return outputs * Tensor._wrap(xp.asarray(self._scale, dtype=np.promote_types(outputs.dtype, float32)))
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"outputs: expected a Tensor or a list/tuple of Tensors, got {type(outputs).__name__}")

    def unscale_(self, optimizer) -> None:
        """Divide ``optimizer``'s gradients by the scale, in place, and note whether any is not finite.

        Call it at most once per optimizer between two ``update()`` calls, before ``step``;
        clip gradients after it. float16 gradients are refused (dividing them loses
        precision; keep float32 master parameters and let autocast round the copies).
        """
        if not self._enabled:
            return
        state = self._state(optimizer)
        if state["stage"] == UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update()")
        if state["stage"] == STEPPED:
            raise RuntimeError("unscale_() is being called after step(); call it before step()")
        grads = _gradients(optimizer)
        for g in grads:
            if g.dtype == float16:
                raise ValueError("unscale_: the optimizer holds float16 gradients, which unscaling would "
                                 "round away; train float32 parameters under unet.amp.autocast instead")
        inv_scale = np.float32(1.0 / float(self._scale))  # torch: the reciprocal in double, then float
        flags = {}
        with no_grad():
            for g in grads:
                xp = array_module(g.data)
                flags.setdefault(device_of(g.data), []).append(~xp.isfinite(g.data).all())
                g.data *= xp.asarray(inv_scale, dtype=g.dtype)
                g._bump()
        # one read-back per device (the check stays on the GPU until here)
        found_inf = any(bool(array_module(f[0]).stack(f).any()) for f in flags.values())
        state["found_inf"] = _agreed_across_ranks(found_inf)
        state["stage"] = UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """Unscale (unless ``unscale_`` did) and step ``optimizer`` unless a gradient holds inf/NaN.

        Returns what ``optimizer.step`` returns (None when the step is skipped or fused)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("step: a closure is not supported while the GradScaler is enabled")
        state = self._state(optimizer)
        if state["stage"] == STEPPED:
            raise RuntimeError("step() has already been called since the last update()")
        result = None
        # the fused step decides alone; across ranks the decision must be agreed before stepping
        fused = callable(getattr(optimizer, "step_scaled", None)) and not _distributed()
        if state["stage"] == READY and fused:
            state["found_inf"] = bool(optimizer.step_scaled(float(self._scale)))
        else:
            if state["stage"] == READY:
                self.unscale_(optimizer)
            if not state["found_inf"]:
                result = optimizer.step(*args, **kwargs)
        state["stage"] = STEPPED
        return result

    def update(self, new_scale: float | None = None) -> None:
        """End the iteration: back off after an inf/NaN, grow after ``growth_interval`` clean steps
        (or set ``new_scale``); every optimizer is ready for the next ``unscale_``/``step``."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = _as_scale(new_scale, "new_scale")
        else:
            found = [s["found_inf"] for s in self._optimizers.values() if s["found_inf"] is not None]
            if not found:
                raise RuntimeError("update(): no inf/NaN checks were recorded since the last update(); "
                                   "call scaler.step(optimizer) (or unscale_) first")
            if any(found):
                self._scale = np.float32(self._scale * np.float32(self._backoff_factor))
                self._growth_tracker = 0
            elif self._growth_tracker + 1 == self._growth_interval:
                with np.errstate(over="ignore"):
                    grown = np.float32(self._scale * np.float32(self._growth_factor))
                if math.isfinite(grown):  # at float32's top the scale stays
                    self._scale = grown
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
        self._optimizers = {}

    # ------------------------------------------------------------ settings and state
    def get_scale(self) -> float:
        """The current scale (1.0 when disabled)."""
        return float(self._scale) if self._enabled else 1.0

    def is_enabled(self) -> bool:
        return self._enabled

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        if not (_real(new_factor) and 1.0 < new_factor < math.inf):
            raise ValueError(f"growth_factor: expected a finite number > 1, got {new_factor!r}")
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        if not (_real(new_factor) and 0.0 < new_factor < 1.0):
            raise ValueError(f"backoff_factor: expected a number in (0, 1), got {new_factor!r}")
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        if isinstance(new_interval, bool) or not isinstance(new_interval, numbers.Integral) or new_interval < 1:
            raise ValueError(f"growth_interval: expected a positive int, got {new_interval!r}")
        self._growth_interval = int(new_interval)

    def state_dict(self) -> dict:
        """torch's layout: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker
        ({} when disabled). Save it between iterations (after ``update()``)."""
        if not self._enabled:
            return {}
        return {"scale": float(self._scale), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore ``state_dict()`` (unet's or torch's); nothing happens on a disabled scaler."""
        if not self._enabled:
            return
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict: expected a dict, got {type(state_dict).__name__}")
        if not state_dict:
            raise ValueError("state_dict: empty, possibly saved from a disabled GradScaler")
        missing = [k for k in ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")
                   if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict: missing {', '.join(missing)}")
        tracker = state_dict["_growth_tracker"]
        if isinstance(tracker, bool) or not isinstance(tracker, numbers.Integral) or tracker < 0:
            raise ValueError(f"state_dict: _growth_tracker: expected a non-negative int, got {tracker!r}")
        self._scale = _as_scale(state_dict["scale"], "state_dict: scale")
        self.set_growth_factor(state_dict["growth_factor"])
        self.set_backoff_factor(state_dict["backoff_factor"])
        self.set_growth_interval(state_dict["growth_interval"])
        self._growth_tracker = int(tracker)

    def __repr__(self):
        return (f"GradScaler(scale={self.get_scale()}, growth_factor={self._growth_factor}, "
                f"backoff_factor={self._backoff_factor}, growth_interval={self._growth_interval}, "
                f"enabled={self._enabled})")

    def _state(self, optimizer) -> dict:
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"optimizer: expected an optimizer with param_groups, got {type(optimizer).__name__}")
        return self._optimizers.setdefault(id(optimizer), {"stage": READY, "found_inf": None})


def _distributed() -> bool:
    from .. import distributed
    return distributed.is_initialized() and distributed.get_world_size() > 1


def _agreed_across_ranks(found_inf: bool) -> bool:
    """In a process group: True on every rank when any rank found inf/NaN, so all skip together
    (their gradients may differ: no_sync accumulation, or no DistributedDataParallel at all)."""
    if not _distributed():
        return found_inf
    from ..distributed import all_reduce_found_inf
    return all_reduce_found_inf(found_inf)


def _gradients(optimizer) -> list:
    return [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_scale(value, argname):
    if not (_real(value) and 0.0 < value < float(np.finfo(np.float32).max)):
        raise ValueError(f"{argname}: expected a positive finite float32 number, got {value!r}")
    return np.float32(value)
