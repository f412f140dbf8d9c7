"""Finite-difference check of the gradients that ``backward()`` computes.

    from gradcheck import gradcheck
    x = unet.tensor(np.random.randn(3, 4), dtype="float64", requires_grad=True)
    gradcheck(lambda x: x.tanh().sum(dim=1), [x])

The output (a Tensor, or a tuple/list of them) is projected on fixed random
weights v, L = sum(v * out), so every output element takes part. Its analytic
gradient comes from ``out.backward(v)``; the reference is the central
difference (L(x + eps) - L(x - eps)) / 2 eps, one input element at a time,
computed in float64 numpy so that no unet op checks itself.
"""
from __future__ import annotations

import numpy as np

import unet


def _outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _projection(outputs, weights):
    return sum(float(np.sum(o.numpy().astype(np.float64) * w)) for o, w in zip(outputs, weights))


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Assert that ``backward()`` through ``fn(*inputs)`` matches central differences.

    ``inputs``: Tensors (and other arguments passed through as they are); every
    float64 leaf Tensor with ``requires_grad`` is checked, element by element.
    Raises AssertionError naming the input and element that differ most; returns
    True otherwise. Keep the inputs small: each element costs two calls of ``fn``.
    """
    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, unet.Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("inputs: no tensor requires grad, nothing to check")
    for i in checked:
        x = inputs[i]
        if x.dtype != unet.float64 or not x.is_leaf:
            raise ValueError(f"inputs[{i}]: expected a float64 leaf tensor, got dtype {x.dtype}, "
                             f"leaf={x.is_leaf} (finite differences need double precision)")

    # analytic: out.backward(v) for each output, accumulated into the leaves' .grad
    outputs = _outputs(fn(*inputs))
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(o.shape) for o in outputs]
    for i in checked:
        inputs[i].grad = None
    used = [(o, w) for o, w in zip(outputs, weights) if o.requires_grad]
    if not used:
        raise AssertionError("fn's output does not require grad: the graph was not recorded")
    for k, (o, w) in enumerate(used):
        o.backward(unet.tensor(w, dtype=o.dtype), retain_graph=k < len(used) - 1)
    analytic = {i: (np.zeros(inputs[i].shape) if inputs[i].grad is None
                    else inputs[i].grad.numpy().copy()) for i in checked}

    # numeric: perturb one element in place (the raw array, so no version is bumped)
    with unet.no_grad():
        for i in checked:
            data = inputs[i].data
            numeric = np.zeros(data.shape)
            for idx in np.ndindex(data.shape):
                original = data[idx]
                data[idx] = original + eps
                plus = _projection(_outputs(fn(*inputs)), weights)
                data[idx] = original - eps
                minus = _projection(_outputs(fn(*inputs)), weights)
                data[idx] = original
                numeric[idx] = (plus - minus) / (2 * eps)
            error = np.abs(analytic[i] - numeric) - (atol + rtol * np.abs(numeric))
            if error.size and error.max() > 0:
                worst = np.unravel_index(np.argmax(error), error.shape)
                raise AssertionError(
                    f"gradcheck: input {i} (shape {data.shape}) element {tuple(int(j) for j in worst)}: "
                    f"backward gives {analytic[i][worst]!r}, finite differences {numeric[worst]!r} "
                    f"(atol={atol}, rtol={rtol}); {int((error > 0).sum())} of {error.size} elements differ")
    return True
