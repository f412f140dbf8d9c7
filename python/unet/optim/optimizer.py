"""The Optimizer base class: parameter groups, per-parameter state, checkpoints (torch.optim's layout).

A subclass names its options (``defaults``), checks them (``_check_options``)
and updates one parameter (``_update``); the math itself lives in a small
module-level function over raw arrays (``sgd_update``, ``adam_update``). A
subclass with a fused kernel (``_fused_update``: every parameter of one device
and dtype in one ``unet._C`` call) gets it used where the kernel takes the
parameters (``fused=None``), always (``fused=True``) or never (``fused=False``);
both paths give bitwise the same parameters.
"""
from __future__ import annotations

import math
import numbers
from collections import defaultdict

from ..autograd import enable_grad, no_grad
from ..backend import array_module, to_device
from ..tensor import Tensor
from . import fused as fused_kernels


class Optimizer:
    """Holds ``param_groups`` (dicts of ``params`` plus options) and ``state`` (per parameter)."""

    _has_fused_kernel = False  # subclasses that implement _fused_update say True

    def __init__(self, params, defaults: dict, fused: bool | None = None):
        self._check_options(defaults)
        if fused is not None and not isinstance(fused, bool):
            raise TypeError(f"fused: expected None, True or False, got {fused!r}")
        if fused and not self._has_fused_kernel:
            raise ValueError(f"fused: {type(self).__name__} has no fused kernel, got fused=True")
        self.fused = fused
        self.defaults = defaults
        self.state = defaultdict(dict)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params: expected an iterable of Tensors or of dicts, got a single Tensor "
                            "(wrap it in a list)")
        groups = _ordered(params)
        if not groups:
            raise ValueError("params: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict):
        """Add a group; options it leaves out come from ``defaults``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        params = param_group.get("params")
        if params is None:
            raise ValueError("param_group: has no 'params' entry")
        params = [params] if isinstance(params, Tensor) else _ordered(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"params[{i}]: expected a Tensor, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"params[{i}]: can't optimize a non-leaf Tensor (it has a grad_fn)")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        for p in params:
            if id(p) in seen:
                raise ValueError("params: a parameter appears more than once "
                                 "(in this group or in another one)")
            seen.add(id(p))
        if self.fused:
            for i, p in enumerate(params):
                why = fused_kernels.why_not(p.data)
                if why:
                    raise ValueError(f"fused: True needs parameters the fused kernels take; params[{i}]: {why}")
        group = {**self.defaults, **param_group, "params": params}
        self._check_options(group)
        self.param_groups.append(group)

    def _check_options(self, options: dict):
        """Raise ValueError naming the first bad option (subclasses extend this)."""
        check_range("lr", options["lr"])

    # ------------------------------------------------------------ training
    def zero_grad(self, set_to_none: bool = True):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data[...] = 0
                    p.grad._bump()

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns ``closure()``'s loss if one is given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            self._step(None)
        return loss

    def step_scaled(self, scale: float) -> bool:
        """The step of mixed-precision training, for gradients of a loss multiplied by ``scale``.

        If any gradient is inf or NaN, changes nothing (parameters, state, step
        counts) and returns True. Otherwise updates as ``step()`` would with each
        gradient multiplied by ``1 / scale`` (exactly ``grad / scale`` for the
        power-of-two scales a GradScaler uses), leaves the ``.grad`` arrays as they
        are, and returns False.
        """
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (
                math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale: expected a finite number > 0, got {scale!r}")
        with no_grad():
            return self._step(1.0 / float(scale))

    def _step(self, inv_scale: float | None) -> bool:
        """Update from the gradients times ``inv_scale`` (None: as they are); True: found inf/NaN."""
        items = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.shape != p.shape:
                    raise ValueError(f"grad: expected shape {p.shape} (the parameter's), "
                                     f"got {p.grad.shape}")
                items.append((group, p))
        buckets, rest = self._fused_buckets(items)
        # One fused call checks its gradients before it changes anything; with more than
        # one pass, every gradient is checked first, so an inf anywhere changes nothing.
        check_in_kernel = inv_scale is not None and len(buckets) == 1 and not rest
        rest_grads = [p.grad.data for _, p in rest]
        if inv_scale is not None and not check_in_kernel:
            rest_grads = [g * inv_scale for g in rest_grads]
            if (any(fused_kernels.any_nonfinite([p.grad.data for _, p in bucket], inv_scale)
                    for bucket in buckets)
                    or not all(bool(array_module(g).isfinite(g).all()) for g in rest_grads)):
                return True
        for bucket in buckets:
            if self._fused_update(bucket, 1.0 if inv_scale is None else inv_scale, check_in_kernel):
                return True  # only when check_in_kernel: this was the one pass, nothing changed
            for _, p in bucket:
                p._bump()  # graphs that saved the old value must notice it changed
        for (group, p), grad in zip(rest, rest_grads):
            self._update(p, grad, group, self.state[p])
            p._bump()
        return False

    def _fused_buckets(self, items):
        """(lists of (group, param) that one fused call updates, one per device and dtype; the rest)."""
        if not self._has_fused_kernel or self.fused is False:
            return [], items
        buckets, rest = {}, []
        for group, p in items:
            why = fused_kernels.why_not(p.data, p.grad.data)
            if why is None:
                buckets.setdefault((fused_kernels.device_key(p.data), p.dtype), []).append((group, p))
            elif self.fused:
                raise ValueError(f"fused: True, but the fused kernels cannot update a parameter: {why}")
            else:
                rest.append((group, p))
        return list(buckets.values()), rest

    def _fused_update(self, items: list, inv_scale: float, check: bool) -> bool:
        """Update ``items`` ((group, param) pairs of one device and dtype) in one kernel call
        from grad * inv_scale. With ``check``, the kernel first looks for inf/NaN; if it
        finds one, return True with nothing changed (new state not kept either)."""
        raise NotImplementedError

    def _update(self, param: Tensor, grad, group: dict, state: dict):
        """Update ``param.data`` in place from ``grad`` (an array) and its ``state``."""
        raise NotImplementedError

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """``{"state": {index: {name: array or number}}, "param_groups": [{..., "params": [index]}]}``.

        Indices count parameters across groups in order, as torch does, so the
        dict carries no object identities; arrays are the live state (not copies).
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index and s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict):
        """Restore options and state saved by ``state_dict()`` (unet's or torch's), copying the arrays.

        Index keys may be strings (as JSON writes them); arrays may be numpy,
        CuPy, Tensors or torch tensors and land on each parameter's device and dtype.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"state_dict: has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        by_index = {}
        groups = []
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"state_dict: param_groups[{i}] has {len(saved['params'])} parameters, "
                                 f"this optimizer's has {len(group['params'])}")
            by_index.update(zip(saved["params"], group["params"]))
            loaded = {**saved, "params": group["params"]}
            self._check_options(loaded)
            groups.append(loaded)
        state = defaultdict(dict)
        for key, values in state_dict["state"].items():
            if int(key) not in by_index:
                raise ValueError(f"state_dict: state for parameter {key}, which no group lists")
            p = by_index[int(key)]
            state[p] = {name: _as_state_value(value, p) for name, value in values.items()}
        self.param_groups, self.state = groups, state


def _ordered(params) -> list:
    # a set's order changes between runs, and state_dict indices follow the order
    if isinstance(params, (set, frozenset)):
        raise TypeError("params: expected an ordered iterable (a list), got a set")
    return list(params)


def _as_state_value(value, param: Tensor):
    """A fresh array on the parameter's device and dtype; plain numbers stay numbers."""
    if isinstance(value, numbers.Number):
        return value
    if isinstance(value, Tensor):
        value = value.data
    elif hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu().numpy()
    # C order: the fused kernels take contiguous state only
    return to_device(value, param.device).astype(param.dtype, order="C")


def check_range(name: str, value, low: float = 0.0, high: float | None = None, high_open: bool = False):
    """Raise ValueError naming ``name`` unless ``value`` is a finite real in [low, high] (or [low, high))."""
    fine = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and value >= low and (high is None or (value < high if high_open else value <= high)))
    if not fine:
        bounds = f">= {low}" if high is None else f"in [{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name}: expected a finite number {bounds}, got {value!r}")
