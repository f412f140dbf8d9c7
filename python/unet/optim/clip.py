"""Gradient clipping (torch.nn.utils.clip_grad_norm_ / clip_grad_value_), in place on ``p.grad``."""
from __future__ import annotations

import numpy as np

from ..backend import array_module, device_of
from ..tensor import Tensor
from .optimizer import check_range


def _grads(parameters):
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    devices = {device_of(g.data) for g in grads}
    if len(devices) > 1:
        raise ValueError(f"parameters: gradients on several devices ({sorted(map(str, devices))}); "
                         "clip each device's parameters separately")
    return grads


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients so that their joint ``norm_type``-norm is at most ``max_norm``.

    Returns the norm before clipping as a 0-d Tensor on the gradients' device.
    As in torch the scale min(1, max_norm / (norm + 1e-6)) is applied even when
    it is 1, so nothing waits for the GPU; only ``error_if_nonfinite`` does.
    """
    max_norm, norm_type = float(max_norm), float(norm_type)
    check_range("max_norm", max_norm)
    if not norm_type > 0:
        raise ValueError(f"norm_type: expected a positive number or inf, got {norm_type!r}")
    grads = _grads(parameters)
    if not grads:
        return Tensor._wrap(np.zeros((), dtype=np.float32))
    xp = array_module(grads[0].data)
    # half-precision gradients are summed in float32: their squares overflow float16
    norms = [xp.linalg.norm(g.data.ravel().astype(np.promote_types(g.dtype, np.float32), copy=False),
                            ord=norm_type) for g in grads]
    total = xp.asarray(xp.linalg.norm(xp.stack(norms), ord=norm_type))  # numpy returns a scalar
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is "
                           "non-finite, so it cannot be clipped. To disable this error and scale the "
                           "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    scale = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g.data *= scale.astype(g.dtype)
        g._bump()
    return Tensor._wrap(total)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element into [-clip_value, clip_value]."""
    clip_value = float(clip_value)
    check_range("clip_value", clip_value)
    for g in _grads(parameters):
        array_module(g.data).clip(g.data, -clip_value, clip_value, out=g.data)
        g._bump()

