"""``unet.onnx.export``: trace a model's forward on example inputs and write the ONNX graph."""
from __future__ import annotations

import numbers
import os
import warnings

from ..autograd import no_grad
from ..nn.module import Module
from ..tensor import Tensor
from .converters import CONVERTERS, _onnx_type, exported_whole
from .graph import GraphBuilder
from .tracer import trace

MIN_OPSET = 17  # LayerNormalization's first opset; ReduceMean/Max/Min take axes as an input from 18


def _flatten(value, argname):
    """The Tensors of a nested tuple/list output, in order."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _flatten(item, argname)]
    raise TypeError(f"{argname}: expected Tensors (or tuples/lists of them), got {type(value).__name__}")


def _names(names, count, default, argname):
    if names is None:
        return [default] if count == 1 else [f"{default}_{i}" for i in range(count)]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"{argname}: expected a list of non-empty strings, got {names!r}")
    if len(names) != count or len(set(names)) != count:
        raise ValueError(f"{argname}: expected {count} distinct names, got {list(names)}")
    return list(names)


def _dynamic_axes(dynamic_axes, shapes):
    """{value name: {axis: dim name}} from torch's forms: {name: {axis: dim name}} or {name: [axes]}."""
    if dynamic_axes is None:
        return {}
    if not isinstance(dynamic_axes, dict):
        raise TypeError(f"dynamic_axes: expected a dict {{name: {{axis: dim name}} or [axes]}}, got "
                        f"{type(dynamic_axes).__name__}")
    resolved = {}
    for name, axes in dynamic_axes.items():
        if name not in shapes:
            raise ValueError(f"dynamic_axes: {name!r} is no input or output name (those are {sorted(shapes)})")
        if isinstance(axes, (list, tuple)):
            axes = {a: f"{name}_dim{a}" for a in axes}
        if not isinstance(axes, dict):
            raise TypeError(f"dynamic_axes[{name!r}]: expected a dict or a list of axes, got {axes!r}")
        ndim = len(shapes[name])
        for axis in axes:
            if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
                raise ValueError(f"dynamic_axes[{name!r}]: axis {axis!r} out of range for {ndim} dims")
        resolved[name] = {int(a) % ndim: str(d) for a, d in axes.items()}
    return resolved


def _warn_fixed_constants(constant_shapes, dynamic, shapes):
    """A constant made outside the traced ops with a dim of a dynamic axis's example size (a numpy
    mask, per-sequence lengths) was computed for the example: other sizes would break or mislead."""
    sizes = {shapes[name][axis]: dim for name, axes in dynamic.items() for axis, dim in axes.items()
             if shapes[name][axis] > 1}
    for shape in constant_shapes:
        hits = sorted({sizes[n] for n in shape if n in sizes})
        if hits:
            warnings.warn(f"dynamic_axes: a constant of shape {shape} made outside unet's ops (a numpy mask or "
                          f"lengths?) has the example's size of dynamic dim(s) {hits}; it is fixed in the graph, "
                          "so other sizes of those dims may fail or give wrong results", stacklevel=3)


def _value_info(helper, name, tensor, dynamic):
    shape = [dynamic.get(i, n) for i, n in enumerate(tensor.shape)]
    return helper.make_tensor_value_info(name, _onnx_type(tensor.dtype), shape)


def _supported():
    return ", ".join(sorted({f.__name__ for f in CONVERTERS}))


def export(model, example_inputs, path, *, input_names=None, output_names=None, dynamic_axes=None,
           opset: int = MIN_OPSET):
    """Write ``model`` as an ONNX file at ``path`` and return the ``onnx.ModelProto``.

    The model runs once (in eval mode, without gradients) on ``example_inputs`` (a Tensor or a
    tuple of Tensors, passed positionally); every unet op it performs is recorded and converted.
    So the forward must be a plain chain of ops: Python control flow follows the example, and
    arrays built outside the traced ops (numpy masks, lengths) become constants of the graph.
    ``dynamic_axes`` (``{name: {axis: "dim name"}}`` or ``{name: [axes]}``) leaves those
    dims open; reshapes keep them open when they keep the leading dims (flatten(1) and the like).
    An op without an ONNX form raises NotImplementedError naming it.
    """
    try:
        import onnx
        from onnx import helper
    except ImportError:
        raise ImportError("unet.onnx.export needs the onnx package: pip install 'unet[onnx]'") from None
    if not isinstance(model, Module):
        raise TypeError(f"model: expected a unet.nn.Module, got {type(model).__name__}")
    inputs = (example_inputs,) if isinstance(example_inputs, Tensor) else example_inputs
    if not isinstance(inputs, (tuple, list)) or not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise TypeError(f"example_inputs: expected a Tensor or a non-empty tuple of Tensors, got "
                        f"{type(example_inputs).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or \
            not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset: expected an int in [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}], got {opset!r}")
    input_names = _names(input_names, len(inputs), "input", "input_names")

    was_training = model.training
    model.eval()
    try:
        with no_grad(), trace(exported_whole) as calls:
            outputs = _flatten(model(*inputs), "model output")
    finally:
        model.train(was_training)
    output_names = _names(output_names, len(outputs), "output", "output_names")

    g = GraphBuilder(int(opset))
    g.parameters = {id(p) for p in model.parameters()}
    for name, tensor in zip(input_names, inputs):
        g.bind(tensor, name)
    for call in calls:
        convert = CONVERTERS.get(call.function)
        if convert is None:
            raise NotImplementedError(f"unet.onnx.export: op {call.function.__name__} "
                                      f"({call.function.__module__}) has no ONNX form; supported ops: {_supported()}")
        try:
            names = convert(g, call)
        except NotImplementedError as e:
            raise NotImplementedError(f"unet.onnx.export: op {call.function.__name__}: {e} is not supported") from None
        for tensor, name in zip(call.outputs, names):
            g.bind(tensor, name)

    for tensor, name in zip(outputs, output_names):  # name each output (Identity: it may be an input)
        g.nodes.append(helper.make_node("Identity", [g.name(tensor)], [name], name=g.fresh("node_output")))
    used = {i for node in g.nodes for i in node.input}
    unused = [name for name in input_names if name not in used]
    if unused:
        raise ValueError(f"example_inputs: {unused} never reach a traced op (converted outside unet's ops, "
                         "e.g. through numpy?): the graph would not depend on them")

    shapes = {**{n: t.shape for n, t in zip(input_names, inputs)},
              **{n: t.shape for n, t in zip(output_names, outputs)}}
    dynamic = _dynamic_axes(dynamic_axes, shapes)
    _warn_fixed_constants(g.made_outside, dynamic, shapes)
    graph = helper.make_graph(
        g.nodes, type(model).__name__,
        [_value_info(helper, n, t, dynamic.get(n, {})) for n, t in zip(input_names, inputs)],
        [_value_info(helper, n, t, dynamic.get(n, {})) for n, t in zip(output_names, outputs)],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int(opset))],
                              producer_name="unet")
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, os.fspath(path))
    return proto
