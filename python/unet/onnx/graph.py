"""The ONNX graph under construction: nodes, initializers and the value name of each traced array."""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor


def _host(array):
    return np.asarray(backend.to_device(array, backend.Device("cpu")) if backend.is_cupy_array(array) else array)


class GraphBuilder:
    """Names values by the identity of the Tensors (and raw arrays, e.g. embedding ids) that carry
    them; anything met that no traced op produced and that is no graph input is a constant."""

    def __init__(self, opset: int):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.opset = opset
        self.nodes, self.initializers = [], []
        self._names = {}     # id(Tensor or array) -> value name
        self._keep = []      # what the ids refer to, kept alive
        self._constants = {}  # id(Parameter or array) -> initializer name, each stored once
        self.parameters = set()   # ids of the model's parameters: expected constants
        self.made_outside = []    # shapes of the other untraced arrays the ops read (masks, lengths, ...)
        self._count = 0

    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def bind(self, value, name: str):
        """``value`` (a Tensor) is carried by ``name``; its array too, for ops that take raw arrays."""
        self._keep.append(value)
        self._names[id(value)] = name
        if isinstance(value, Tensor):
            self._names.setdefault(id(value.data), name)

    def is_traced(self, value) -> bool:
        return id(value) in self._names

    def name(self, value) -> str:
        """The value name of a Tensor, raw array or Python number; a constant initializer if untraced."""
        if id(value) in self._names:
            return self._names[id(value)]
        if id(value) not in self._constants:
            array = value.data if isinstance(value, Tensor) else value
            self._keep.append(value)
            if id(value) not in self.parameters:
                self.made_outside.append(tuple(array.shape))
            self._constants[id(value)] = self.constant(_host(array), "const")
        return self._constants[id(value)]

    def constant(self, array, base: str = "const") -> str:
        name = self.fresh(base)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, values) -> str:
        return self.constant(np.asarray(values, dtype=np.int64), "shape")

    def add(self, op_type: str, inputs, outputs: int = 1, **attributes):
        """Append a node; returns its output name (or a list of names when ``outputs`` > 1)."""
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, name=self.fresh("node_" + op_type),
                                                **attributes))
        return names[0] if outputs == 1 else names

    def reduce(self, op_type: str, x: str, axes, keepdims: bool) -> str:
        """ReduceX over ``axes`` (None: all); axes became an input in opset 18 (13 for ReduceSum)."""
        as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes is None:
            return self.add(op_type, [x], keepdims=int(keepdims))
        axes = [int(a) for a in ((axes,) if np.isscalar(axes) else axes)]
        if as_input:
            return self.add(op_type, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.add(op_type, [x], axes=axes, keepdims=int(keepdims))
