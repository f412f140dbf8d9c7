"""Module and Parameter: the containers that hold a model's weights, torch-style."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..autograd import no_grad
from ..backend import array_module
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a Module registers as a weight; requires grad by default."""

    def __init__(self, data, requires_grad=True):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of every layer and model.

    Assigning a Parameter, a Module or a buffer (``register_buffer``) as an
    attribute registers it, so ``parameters()``, ``state_dict()`` and ``to()``
    find it; names follow torch (``encoder.weight_ih_l0``).
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        if value is None:
            for table in (self._parameters, self._modules, self._buffers):
                if name in table:  # `self.bias = None` keeps the slot, as in torch
                    table[name] = None
                    return
        was_buffer = name in self._buffers
        for table in (self._parameters, self._modules, self._buffers):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif isinstance(value, Tensor) and was_buffer:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        for table in ("_parameters", "_modules", "_buffers"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for table in (self._parameters, self._modules, self._buffers):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None):
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None):
        """A tensor saved with the state dict but not trained (running statistics, masks)."""
        self._buffers[name] = tensor

    def add_module(self, name: str, module: "Module | None"):
        self._modules[name] = module

    # ------------------------------------------------------------ traversal
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{module_name}.{name}" if module_name else name), b

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def apply(self, fn):
        """Call ``fn(module)`` on every submodule, then on self (torch's order)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, flag: bool = True):
        for p in self.parameters():
            p.requires_grad = bool(flag)
        return self

    def zero_grad(self, set_to_none: bool = True):
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.data[...] = 0

    # ------------------------------------------------------------ devices and dtypes
    def to(self, *args, **kwargs):
        """Move/cast every parameter and buffer in place (parameters keep their identity)."""
        with no_grad():
            for t in list(self.parameters()) + list(self.buffers()):
                moved = t.to(*args, **kwargs) if t.dtype.kind == "f" else _move_only(t, *args, **kwargs)
                if moved is not t:
                    t.data = moved.data
                    t.grad = None
                    t._bump()
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def float(self):
        return self.to("float32")

    def double(self):
        return self.to("float64")

    # ------------------------------------------------------------ state
    def state_dict(self) -> "OrderedDict[str, Tensor]":
        state = OrderedDict(self.named_parameters())
        state.update(self.named_buffers())
        return OrderedDict((k, v.detach()) for k, v in state.items())

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values (Tensors, numpy arrays, or anything with ``.numpy()``, e.g. torch tensors) in by name."""
        own = OrderedDict(self.named_parameters())
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict: missing keys {missing}, unexpected keys {unexpected}")
        with no_grad():
            for name, value in state_dict.items():
                if name not in own:
                    continue
                target = own[name]
                array = _as_array(value, name)
                if tuple(array.shape) != target.shape:
                    raise ValueError(f"state_dict[{name!r}]: expected shape {target.shape}, got {tuple(array.shape)}")
                xp = array_module(target.data)
                target.data[...] = xp.asarray(array, dtype=target.dtype)
                target._bump()
        return missing, unexpected

    # ------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ")" if not lines else head + "\n  " + "\n  ".join(lines) + "\n)"


def _move_only(t, *args, dtype=None, device=None):
    """Integer/bool buffers move between devices but keep their dtype."""
    for arg in args:
        if isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda"):
            device = arg
    return t.to(device=device) if device is not None else t


def _as_array(value, name):
    if isinstance(value, Tensor):
        return value.data
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy()
    if hasattr(value, "shape"):
        return value
    try:
        return np.asarray(value)
    except Exception:
        raise TypeError(f"state_dict[{name!r}]: expected an array or Tensor, got {type(value).__name__}") from None
