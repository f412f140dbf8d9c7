"""Adam and AdamW (torch.optim.Adam / AdamW); one update serves both.

    g = -grad if maximize else grad
    AdamW: p *= 1 - lr * weight_decay          Adam: g += weight_decay * p
    m = beta1 * m + (1 - beta1) * g            v = beta2 * v + (1 - beta2) * g^2
    amsgrad: v_max = max(v_max, v), used for v below
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""
from __future__ import annotations

import math

from ..backend import array_module
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
    shrinks the weights directly instead (that is AdamW).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 *, maximize=False, decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _check_options(self, options):
        super()._check_options(options)
        if len(options["betas"]) != 2:
            raise ValueError(f"betas: expected two numbers, got {options['betas']!r}")
        for i, beta in enumerate(options["betas"]):
            check_range(f"betas[{i}]", beta, high=1.0, high_open=True)
        check_range("eps", options["eps"])
        check_range("weight_decay", options["weight_decay"])

    def _update(self, param, grad, group, state):
        xp = array_module(param.data)
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param.data)
            state["exp_avg_sq"] = xp.zeros_like(param.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(param.data)
        # int(): a state loaded from torch holds the step as a 0-d array
        state["step"] = int(state["step"]) + 1
        beta1, beta2 = group["betas"]
        adam_update(param.data, grad, state["exp_avg"], state["exp_avg_sq"],
                    state.get("max_exp_avg_sq") if group["amsgrad"] else None,
                    step=state["step"], lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                    eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                    decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
                    maximize=bool(group["maximize"]))


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
