"""One converter per supported autograd Function: ``convert(g, call) -> output names`` appends the
ONNX nodes that compute the call's outputs from its inputs' value names (``g.name(...)``).
``WHOLE_LAYERS``: the layers exported as one operator rather than as the ops they run
(see ``tracer.trace``), each with the test of whether a given module qualifies."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..functional.activation import LogSoftmax, Softmax
from ..functional.conv import ConvFunction, ConvTransposeFunction
from ..functional.embedding import EmbeddingFunction
from ..functional.linear import AutocastLinearFunction, LinearFunction
from ..functional.normalization import _BatchNorm
from ..functional.pooling import _AvgPool, _MaxPool
from ..functional.rnn import RecurrentFunction
from ..nn.layers import LayerNorm
from ..nn.pooling import AdaptiveAvgPool1d, AdaptiveAvgPool2d
from .graph import _host

CONVERTERS = {}
WHOLE_LAYERS = {}


def converts(*functions):
    def register(fn):
        for f in functions:
            CONVERTERS[f] = fn
        return fn
    return register


def converts_layer(*layers, when=lambda module: True):
    def register(fn):
        for layer in layers:
            CONVERTERS[layer] = fn
            WHOLE_LAYERS[layer] = when
        return fn
    return register


def exported_whole(module) -> bool:
    """Whether ``module``'s call becomes one operator (``tracer.trace``'s ``whole``)."""
    when = WHOLE_LAYERS.get(type(module))
    return when is not None and when(module)


def _onnx_type(dtype):
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# ---------------------------------------------------------------- elementwise

_BINARY = {ops.Add: "Add", ops.Sub: "Sub", ops.Mul: "Mul", ops.Div: "Div", ops.Pow: "Pow",
           ops.MatMul: "MatMul"}
_UNARY = {ops.Neg: "Neg", ops.Exp: "Exp", ops.Log: "Log", ops.Sqrt: "Sqrt", ops.Abs: "Abs",
          ops.Tanh: "Tanh", ops.Sigmoid: "Sigmoid", ops.Relu: "Relu"}


@converts(*_BINARY)
def _binary(g, call):
    a, b = call.args
    return [g.add(_BINARY[call.function], [g.name(a), g.name(b)])]


@converts(*_UNARY)
def _unary(g, call):
    return [g.add(_UNARY[call.function], [g.name(call.args[0])])]


def gelu(g, x: str, dtype) -> str:
    """Exact GELU: the Gelu op from opset 20, before it x * (1 + erf(x / sqrt 2)) / 2."""
    if g.opset >= 20:
        return g.add("Gelu", [x])
    const = lambda v: g.constant(np.asarray(v, dtype=dtype))  # noqa: E731
    erf = g.add("Erf", [g.add("Mul", [x, const(1 / np.sqrt(2))])])
    return g.add("Mul", [g.add("Mul", [x, const(0.5)]), g.add("Add", [erf, const(1.0)])])


@converts(ops.Gelu)
def _gelu(g, call):
    return [gelu(g, g.name(call.args[0]), call.outputs[0].dtype)]


@converts(ops.Clamp)
def _clamp(g, call):
    a, lo, hi = call.args
    dtype = call.outputs[0].dtype
    bound = lambda v: "" if v is None else g.constant(np.asarray(v, dtype=dtype))  # noqa: E731
    return [g.add("Clip", [g.name(a), bound(lo), bound(hi)])]


@converts(ops.Cast)
def _cast(g, call):
    return [g.add("Cast", [g.name(call.args[0])], to=_onnx_type(call.args[1]))]


def activate(g, x: str, name: str, dtype) -> str:
    """The fused epilogue activations of linear and conv ('none', 'relu', 'gelu', 'tanh', 'sigmoid')."""
    if name == "none":
        return x
    if name == "gelu":
        return gelu(g, x, dtype)
    return g.add({"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}[name], [x])


@converts(Softmax, LogSoftmax)
def _softmax(g, call):
    x, dim = call.args
    op = "Softmax" if call.function is Softmax else "LogSoftmax"
    return [g.add(op, [g.name(x)], axis=int(dim))]


# ---------------------------------------------------------------- shapes and selection

@converts(ops.Reshape)
def _reshape(g, call):
    """Leading dims the reshape keeps are written 0 (copied from the input at run time), so a
    dynamic batch axis passes through flatten(1), unsqueeze(-1) and the like."""
    a, out = call.args[0], call.outputs[0]
    shape = list(out.shape)
    for i, (n_in, n_out) in enumerate(zip(a.shape, out.shape)):
        if n_in != n_out or n_in == 1:
            break
        shape[i] = 0
    return [g.add("Reshape", [g.name(a), g.ints(shape)])]


@converts(ops.Permute)
def _permute(g, call):
    return [g.add("Transpose", [g.name(call.args[0])], perm=[int(d) for d in call.args[1]])]


@converts(ops.Expand)
def _expand(g, call):
    return [g.add("Expand", [g.name(call.args[0]), g.ints(call.outputs[0].shape)])]


@converts(ops.GetItem)
def _getitem(g, call):
    """Basic indexing (ints, slices, None, ...) as Slice, Gather (an int drops its axis) and Unsqueeze."""
    a, index = call.args
    items = list(index) if isinstance(index, tuple) else [index]
    if not ops._is_basic_index(index):
        raise NotImplementedError("indexing with arrays or masks (only ints, slices, None and ... are exported)")
    if any(i is Ellipsis for i in items):
        at = items.index(Ellipsis)
        fill = a.ndim - sum(i is not None for i in items if i is not Ellipsis)
        items[at:at + 1] = [slice(None)] * fill
    x, axis = g.name(a), 0
    for item in items:
        if item is None:
            x = g.add("Unsqueeze", [x, g.ints([axis])])
            axis += 1
        elif isinstance(item, slice):
            if item != slice(None):
                step = 1 if item.step is None else item.step
                big = np.iinfo(np.int64).max
                start = item.start if item.start is not None else (0 if step > 0 else big)
                stop = item.stop if item.stop is not None else (big if step > 0 else -big - 1)
                x = g.add("Slice", [x, g.ints([start]), g.ints([stop]), g.ints([axis]), g.ints([step])])
            axis += 1
        else:
            x = g.add("Gather", [x, g.constant(np.asarray(int(item), dtype=np.int64), "index")], axis=axis)
    return [x]


@converts(ops.Concat)
def _concat(g, call):
    return [g.add("Concat", [g.name(a) for a in call.args], axis=int(call.kwargs["axis"]))]


@converts(ops.Stack)
def _stack(g, call):
    axis = int(call.kwargs["axis"])
    parts = [g.add("Unsqueeze", [g.name(a), g.ints([axis])]) for a in call.args]
    return [g.add("Concat", parts, axis=axis)]


@converts(ops.Split)
def _split(g, call):
    a, sizes, axis = call.args
    names = g.add("Split", [g.name(a), g.ints(list(sizes))], outputs=len(sizes), axis=int(axis))
    return [names] if len(sizes) == 1 else names


@converts(ops.Where)
def _where(g, call):
    cond, a, b = call.args
    return [g.add("Where", [g.name(cond), g.name(a), g.name(b)])]


@converts(ops.MaskedFill)
def _masked_fill(g, call):
    a, mask, value = call.args
    fill = g.constant(np.asarray(value, dtype=call.outputs[0].dtype))
    return [g.add("Where", [g.name(mask), fill, g.name(a)])]


@converts(EmbeddingFunction)
def _embedding(g, call):
    weight, ids, _ = call.args
    return [g.add("Gather", [g.name(weight), g.name(ids)], axis=0)]


# ---------------------------------------------------------------- reductions

@converts(ops.Sum, ops.Mean)
def _sum_mean(g, call):
    a, axis, keepdims = call.args
    op = "ReduceSum" if call.function is ops.Sum else "ReduceMean"
    return [g.reduce(op, g.name(a), axis, keepdims)]


@converts(ops.MaxMin)
def _max_min(g, call):
    a, axis, keepdims, largest = call.args
    return [g.reduce("ReduceMax" if largest else "ReduceMin", g.name(a), axis, keepdims)]


# ---------------------------------------------------------------- layers

@converts(LinearFunction, AutocastLinearFunction)
def _linear(g, call):
    """Gemm for a 2-D input, else MatMul with the transposed weight plus Add."""
    x, weight, bias = (call.args + (None,))[:3]
    dtype = call.outputs[0].dtype
    if x.ndim == 2:
        inputs = [g.name(x), g.name(weight)] + ([] if bias is None else [g.name(bias)])
        y = g.add("Gemm", inputs, transB=1)
    else:
        y = g.add("MatMul", [g.name(x), g.add("Transpose", [g.name(weight)], perm=[1, 0])])
        if bias is not None:
            y = g.add("Add", [y, g.name(bias)])
    return [activate(g, y, call.kwargs["activation"], dtype)]


def _conv_attributes(weight, kw):
    pads = kw["pads"]
    return dict(kernel_shape=list(weight.shape[2:]), strides=list(kw["stride"]),
                dilations=list(kw["dilation"]), group=int(kw["groups"]),
                pads=[p[0] for p in pads] + [p[1] for p in pads])


@converts(ConvFunction)
def _conv(g, call):
    inputs = [g.name(a) for a in call.args]
    y = g.add("Conv", inputs, **_conv_attributes(call.args[1], call.kwargs))
    return [activate(g, y, call.kwargs["activation"], call.outputs[0].dtype)]


@converts(ConvTransposeFunction)
def _conv_transpose(g, call):
    x, weight = call.args[:2]
    kw = call.kwargs
    attributes = _conv_attributes(weight, kw)
    # the output size the plain formula gives; the rest is output_padding
    natural = [(n - 1) * s - lo - hi + d * (k - 1) + 1 for n, s, (lo, hi), d, k in
               zip(x.shape[2:], kw["stride"], kw["pads"], kw["dilation"], weight.shape[2:])]
    attributes["output_padding"] = [int(o - n) for o, n in zip(kw["out_size"], natural)]
    return [g.add("ConvTranspose", [g.name(a) for a in call.args], **attributes)]


@converts(_BatchNorm)
def _batch_norm(g, call):
    kw = call.kwargs
    if kw["training"]:
        raise NotImplementedError("batch_norm with batch statistics (training mode, or a BatchNorm without "
                                  "running statistics): export needs running_mean/running_var")
    x, params = call.args[0], list(call.args[1:])
    channels, dtype = x.shape[1], call.outputs[0].dtype
    scale = g.name(params.pop(0)) if kw["has_weight"] else g.constant(np.ones(channels, dtype))
    bias = g.name(params.pop(0)) if kw["has_bias"] else g.constant(np.zeros(channels, dtype))
    mean, var = (g.constant(_host(a).astype(dtype)) for a in (kw["mean"], kw["var"]))
    return [g.add("BatchNormalization", [g.name(x), scale, bias, mean, var], epsilon=float(kw["eps"]))]


def _pool_attributes(windows):
    return dict(kernel_shape=list(windows.kernel), strides=list(windows.stride),
                pads=list(windows.padding) + list(windows.right))


@converts(_MaxPool)
def _max_pool(g, call):
    x, windows, with_indices = call.args
    if with_indices:
        raise NotImplementedError("max pooling with return_indices=True")
    return [g.add("MaxPool", [g.name(x)], dilations=list(windows.dilation), **_pool_attributes(windows))]


@converts(_AvgPool)
def _avg_pool(g, call):
    """AveragePool counting the padding divides every window by the kernel's size; a constant factor
    turns that into unet's divisor (which may leave the padding or a ceil_mode overhang out)."""
    x, windows, divisor = call.args
    y = g.add("AveragePool", [g.name(x)], count_include_pad=1, **_pool_attributes(windows))
    size, dtype = int(np.prod(windows.kernel)), call.outputs[0].dtype
    divisor = _host(divisor)
    if np.all(divisor == size):
        return [y]
    return [g.add("Mul", [y, g.constant((size / divisor).astype(dtype))])]


# LSTM gates: torch's i, f, g, o; ONNX's i, o, f, c. GRU: torch's r, z, n; ONNX's z, r, h.
_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn_tanh": [0], "rnn_relu": [0]}


def _gates(array, mode):
    """Rows of a (G*H, ...) weight or (G*H,) bias, regrouped into ONNX's gate order."""
    blocks = np.split(_host(array), len(_GATE_ORDER[mode]))
    return np.concatenate([blocks[k] for k in _GATE_ORDER[mode]])


@converts(RecurrentFunction)
def _recurrent(g, call):
    """One layer and direction of LSTM/GRU/RNN as one ONNX node with a single direction; stacked and
    bidirectional layers come out of the traced concatenations and stacks around it."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = call.args
    mode, kw = call.kwargs["mode"], call.kwargs
    if w_hr is not None:
        raise NotImplementedError("LSTM with proj_size > 0 (ONNX's LSTM has no projection)")
    if kw["lengths"] is not None:
        raise NotImplementedError("per-sequence lengths of a recurrent layer (they would be fixed in the "
                                  "graph; export on full-length sequences, lengths=None)")
    for name, w in (("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh)):
        if w is not None and g.is_traced(w):
            raise NotImplementedError(f"a recurrent {name} computed in the forward (only parameters export)")
    hidden = w_hh.shape[1]
    W = g.constant(_gates(w_ih.data, mode)[None], "W")
    R = g.constant(_gates(w_hh.data, mode)[None], "R")
    inputs = [g.name(x), W, R]
    if b_ih is not None:
        inputs.append(g.constant(np.concatenate([_gates(b_ih.data, mode), _gates(b_hh.data, mode)])[None], "B"))
    else:
        inputs.append("")
    inputs.append("")  # sequence_lens: every sequence runs the whole length
    for state in (h0, c0) if mode == "lstm" else (h0,):
        inputs.append("" if state is None else g.add("Unsqueeze", [g.name(state), g.ints([0])]))
    while inputs[-1] == "":
        inputs.pop()
    attributes = dict(hidden_size=int(hidden), direction="reverse" if kw["reverse"] else "forward")
    if mode == "gru":
        attributes["linear_before_reset"] = 1  # torch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    if mode.startswith("rnn"):
        attributes["activations"] = ["Tanh" if mode == "rnn_tanh" else "Relu"]
    op = {"lstm": "LSTM", "gru": "GRU"}.get(mode, "RNN")
    outs = g.add(op, inputs, outputs=3 if mode == "lstm" else 2, **attributes)
    y = g.add("Squeeze", [outs[0], g.ints([1])])  # (T, 1, B, H) -> (T, B, H)
    return [y] + [g.add("Squeeze", [state, g.ints([0])]) for state in outs[1:]]


@converts_layer(LayerNorm)
def _layer_norm(g, call):
    module, x = call.args
    dtype = call.outputs[0].dtype
    scale = g.name(module.weight) if module.weight is not None else \
        g.constant(np.ones(module.normalized_shape, dtype))
    inputs = [g.name(x), scale] + ([] if module.bias is None else [g.name(module.bias)])
    return [g.add("LayerNormalization", inputs, axis=-len(module.normalized_shape), epsilon=module.eps)]


def _global(module) -> bool:
    """Adaptive average pooling to size 1 of every spatial dim of a batched input: GlobalAveragePool."""
    size = module.output_size
    return all(s == 1 for s in (size if isinstance(size, (tuple, list)) else (size,)))


@converts_layer(AdaptiveAvgPool1d, AdaptiveAvgPool2d, when=_global)
def _global_avg_pool(g, call):
    module, x = call.args
    spatial = 1 if isinstance(module, AdaptiveAvgPool1d) else 2
    if x.ndim != spatial + 2:  # unbatched (C, *spatial): pool a batch of one
        pooled = g.add("GlobalAveragePool", [g.add("Unsqueeze", [g.name(x), g.ints([0])])])
        return [g.add("Squeeze", [pooled, g.ints([0])])]
    return [g.add("GlobalAveragePool", [g.name(x)])]
