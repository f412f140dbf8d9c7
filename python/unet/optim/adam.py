"""Adam and AdamW (torch.optim.Adam / AdamW); one update serves both.

    g = -grad if maximize else grad
    AdamW: p *= 1 - lr * weight_decay          Adam: g += weight_decay * p
    m = beta1 * m + (1 - beta1) * g            v = beta2 * v + (1 - beta2) * g^2
    amsgrad: v_max = max(v_max, v), used for v below
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""
from __future__ import annotations

import math

from .. import _C
from ..backend import array_module, current_stream_ptr
from .fused import contiguous, group_option, per_tensor
from .optimizer import Optimizer, check_range


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps,
                weight_decay, decoupled_weight_decay, maximize):
    """One Adam(W) step on raw arrays, in place on ``param`` and the moment arrays.

    ``step`` counts from 1; ``max_exp_avg_sq`` is None unless amsgrad. The
    bias corrections are Python floats (double), as in torch; array math stays
    in the parameter's dtype.
    """
    xp = array_module(param)
    if maximize:
        grad = -grad
    if weight_decay:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            grad = grad + weight_decay * param
    exp_avg += (1 - beta1) * (grad - exp_avg)  # torch's lerp toward grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    second_moment = exp_avg_sq
    if max_exp_avg_sq is not None:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second_moment = max_exp_avg_sq
    step_size = lr / (1 - beta1 ** step)
    denom = xp.sqrt(second_moment)
    denom /= math.sqrt(1 - beta2 ** step)
    denom += eps
    param -= step_size * (exp_avg / denom)


class Adam(Optimizer):
    """torch.optim.Adam: state ``step``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``) per parameter.

    ``weight_decay`` adds an L2 term to the gradient; ``decoupled_weight_decay``
    shrinks the weights directly instead (that is AdamW). ``fused``: None (default)
    updates every float32 / float64 parameter of a device in one ``unet._C.adam_step``
    call, True requires that, False updates parameter by parameter with
    ``adam_update``; the results are bitwise the same.
    """

    _has_fused_kernel = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 *, maximize=False, decoupled_weight_decay=False, fused=None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, fused)

    def _check_options(self, options):
        super()._check_options(options)
        if len(options["betas"]) != 2:
            raise ValueError(f"betas: expected two numbers, got {options['betas']!r}")
        for i, beta in enumerate(options["betas"]):
            check_range(f"betas[{i}]", beta, high=1.0, high_open=True)
        check_range("eps", options["eps"])
        check_range("weight_decay", options["weight_decay"])

    @staticmethod
    def _initial_state(param, group) -> dict:
        xp = array_module(param.data)
        state = {"step": 0, "exp_avg": xp.zeros_like(param.data), "exp_avg_sq": xp.zeros_like(param.data)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = xp.zeros_like(param.data)
        return state

    def _update(self, param, grad, group, state):
        if not state:
            state.update(self._initial_state(param, group))
        # int(): a state loaded from torch holds the step as a 0-d array
        state["step"] = int(state["step"]) + 1
        beta1, beta2 = group["betas"]
        adam_update(param.data, grad, state["exp_avg"], state["exp_avg_sq"],
                    state.get("max_exp_avg_sq") if group["amsgrad"] else None,
                    step=state["step"], lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                    eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                    decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
                    maximize=bool(group["maximize"]))

    def _fused_update(self, items, inv_scale, check):
        states = []  # (state to update, its arrays: the live ones, or new ones kept only on success)
        for group, p in items:
            state = self.state[p]
            states.append((state, state if state else self._initial_state(p, group)))
        arrays = [s for _, s in states]
        params = [p.data for _, p in items]
        hyper = group_option(items)
        found_inf = array_module(params[0]).zeros(1, "float32") if check else None
        _C.adam_step(params, [contiguous(p.grad.data) for _, p in items],
                     [s["exp_avg"] for s in arrays], [s["exp_avg_sq"] for s in arrays],
                     [s.get("max_exp_avg_sq") if group["amsgrad"] else None
                      for (group, _), s in zip(items, arrays)],
                     per_tensor([int(s["step"]) + 1 for s in arrays]),
                     lr=hyper(lambda g: float(g["lr"])), beta1=hyper(lambda g: float(g["betas"][0])),
                     beta2=hyper(lambda g: float(g["betas"][1])), eps=hyper(lambda g: float(g["eps"])),
                     weight_decay=hyper(lambda g: float(g["weight_decay"])),
                     decoupled_weight_decay=hyper(lambda g: bool(g["decoupled_weight_decay"])),
                     maximize=hyper(lambda g: bool(g["maximize"])), inv_scale=inv_scale,
                     found_inf=found_inf, stream=current_stream_ptr(params[0]))
        if check and bool(found_inf[0]):
            return True
        for state, new in states:
            if state is not new:
                state.update(new)
            state["step"] = int(state["step"]) + 1
        return False


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, fused=fused)
