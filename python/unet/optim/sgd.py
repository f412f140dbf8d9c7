"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (torch.optim.SGD).

    g = -grad if maximize else grad;   g += weight_decay * p
    buf = g (first step) or momentum * buf + (1 - dampening) * g
    g = g + momentum * buf if nesterov else buf      (when momentum != 0)
    p -= lr * g
"""
from __future__ import annotations

from .. import _C
from ..backend import array_module, current_stream_ptr
from .fused import contiguous, group_option, per_tensor
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
    """torch.optim.SGD: state ``momentum_buffer`` per parameter once momentum is used.

    ``fused``: None (default) updates every float32 / float64 parameter of a device in
    one ``unet._C.sgd_step`` call, True requires that, False updates parameter by
    parameter with ``sgd_update``; the results are bitwise the same.
    """

    _has_fused_kernel = True

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 maximize=False, *, fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, fused)

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

    def _fused_update(self, items, inv_scale, check):
        params, grads, buffers, first, new_buffers = [], [], [], [], []
        for group, p in items:
            buf = self.state[p].get("momentum_buffer") if group["momentum"] else None
            is_new = bool(group["momentum"]) and buf is None
            if is_new:  # the kernel sets it to the first gradient
                buf = array_module(p.data).empty_like(p.data)
                new_buffers.append((self.state[p], buf))
            params.append(p.data)
            grads.append(contiguous(p.grad.data))
            buffers.append(buf)
            first.append(is_new)
        option = group_option(items)
        hyper = lambda key: option(lambda group: float(group[key]))
        flag = lambda key: option(lambda group: bool(group[key]))
        found_inf = array_module(params[0]).zeros(1, "float32") if check else None
        _C.sgd_step(params, grads, buffers, lr=hyper("lr"), momentum=hyper("momentum"),
                    dampening=hyper("dampening"), weight_decay=hyper("weight_decay"),
                    nesterov=flag("nesterov"), maximize=flag("maximize"),
                    is_first_step=per_tensor(first), inv_scale=inv_scale, found_inf=found_inf,
                    stream=current_stream_ptr(params[0]))
        if check and bool(found_inf[0]):
            return True
        for state, buf in new_buffers:
            state["momentum_buffer"] = buf
        return False
