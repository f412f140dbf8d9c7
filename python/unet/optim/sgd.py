"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (torch.optim.SGD).

    g = -grad if maximize else grad;   g += weight_decay * p
    buf = g (first step) or momentum * buf + (1 - dampening) * g
    g = g + momentum * buf if nesterov else buf      (when momentum != 0)
    p -= lr * g
"""
from __future__ import annotations

from .optimizer import Optimizer, check_range


def sgd_update(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay, nesterov,
               maximize):
    """One SGD step on raw arrays, in place on ``param`` (and ``momentum_buffer``).

    Returns the momentum buffer, created from the first step's gradient (as
    torch does, so the first step is not damped); None when momentum is 0.
    """
    d_p = -grad if maximize else grad
    if weight_decay:
        d_p = d_p + weight_decay * param
    if momentum:
        if momentum_buffer is None:
            momentum_buffer = d_p.copy()
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * d_p
        d_p = d_p + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * d_p
    return momentum_buffer


class SGD(Optimizer):
    """torch.optim.SGD: state ``momentum_buffer`` per parameter once momentum is used."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_options(self, options):
        super()._check_options(options)
        check_range("momentum", options["momentum"])
        check_range("dampening", options["dampening"], high=1.0)
        check_range("weight_decay", options["weight_decay"])
        if options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
            raise ValueError(f"nesterov: needs momentum > 0 and dampening == 0, got "
                             f"momentum={options['momentum']!r}, dampening={options['dampening']!r}")

    def _update(self, param, grad, group, state):
        buf = sgd_update(param.data, grad, state.get("momentum_buffer"), lr=float(group["lr"]),
                         momentum=float(group["momentum"]), dampening=float(group["dampening"]),
                         weight_decay=float(group["weight_decay"]), nesterov=bool(group["nesterov"]),
                         maximize=bool(group["maximize"]))
        if buf is not None:
            state["momentum_buffer"] = buf
