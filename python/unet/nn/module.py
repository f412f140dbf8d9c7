"""Module and Parameter: the containers that hold a model's weights, torch-style."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..autograd import no_grad
from ..backend import Device, array_module, is_floating
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

    Assigning a Parameter or a Module as an attribute registers it (buffers go
    through ``register_buffer``), so ``parameters()``, ``state_dict()`` and
    ``to()`` find it; names follow torch (``encoder.weight_ih_l0``).
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
        if isinstance(value, Parameter):
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            self.add_module(name, value)
        elif name in self._parameters:
            # torch refuses too: a plain tensor in a parameter's place would silently stop training
            if value is not None:
                raise TypeError(f"{name}: cannot assign a {type(value).__name__} to parameter {name!r} "
                                "(expected a Parameter or None)")
            self._parameters[name] = None  # `self.bias = None` keeps the slot, as in torch
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"{name}: cannot assign a {type(value).__name__} to submodule {name!r} "
                                "(expected a Module or None)")
            self._modules[name] = None
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"{name}: cannot assign a {type(value).__name__} to buffer {name!r} "
                                "(expected a Tensor or None)")
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

    def _register(self, table, name, value, kind):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before registering {name!r}")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"name: expected a non-empty str without '.', got {name!r}")
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{name}: expected a {kind.__name__} or None, got {type(value).__name__}")
        # one name, one place: a plain attribute left behind would shadow the registered value
        self.__dict__.pop(name, None)
        for other in (self._parameters, self._modules, self._buffers):
            if other is not table:
                other.pop(name, None)
        table[name] = value

    def register_parameter(self, name: str, param: Parameter | None):
        self._register(self._parameters, name, param, Parameter)

    def register_buffer(self, name: str, tensor: Tensor | None):
        """A tensor saved with the state dict but not trained (running statistics, masks)."""
        self._register(self._buffers, name, tensor, Tensor)

    def add_module(self, name: str, module: "Module | None"):
        self._register(self._modules, name, module, Module)

    # ------------------------------------------------------------ traversal
    def named_modules(self, prefix="", memo=None):
        """Every module once (a shared one under its first name), self first."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def _named_entries(self, table, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, t in getattr(module, table).items():
                if t is not None and id(t) not in seen:  # a tied weight is listed once
                    seen.add(id(t))
                    yield (f"{module_name}.{name}" if module_name else name), t

    def named_parameters(self, prefix="", recurse=True):
        return self._named_entries("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True):
        return self._named_entries("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        return (b for _, b in self.named_buffers(recurse=recurse))

    def apply(self, fn):
        """Call ``fn(module)`` on every submodule, then on self (torch's order)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise ValueError(f"mode: expected a bool, got {mode!r}")
        object.__setattr__(self, "training", mode)
        for child in self.children():  # through train(), so a child's override runs
            child.train(mode)
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
        """Move/cast every parameter, buffer and gradient in place (parameters keep their identity).

        A dtype applies to floating-point tensors only; integer buffers keep theirs.
        """
        with no_grad():
            for t in list(self.parameters()) + list(self.buffers()):
                for held in (t, t.grad):
                    if held is None:
                        continue
                    moved = held.to(*args, **kwargs) if is_floating(held.dtype) else \
                        _move_only(held, *args, **kwargs)
                    if moved is not held:
                        held.data = moved.data
                        held._bump()
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
        """Copy values in by name: unet Tensors, numpy arrays or torch tensors (anything with ``.numpy()``).

        Every key and shape is checked before anything is written, so a bad
        state dict leaves the module as it was. Returns (missing, unexpected).
        """
        own = OrderedDict(self.named_parameters())
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict: missing keys {missing}, unexpected keys {unexpected}")
        arrays = {}
        for name, target in own.items():
            if name in state_dict:
                array = _as_array(state_dict[name], name)
                if tuple(array.shape) != target.shape:
                    raise ValueError(f"state_dict[{name!r}]: expected shape {target.shape}, "
                                     f"got {tuple(array.shape)}")
                arrays[name] = array
        for name, array in arrays.items():
            target = own[name]
            target.data[...] = array_module(target.data).asarray(array, dtype=target.dtype)
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
        """torch's layout: one line for a leaf, else extra_repr lines then ``(name): child`` lines."""
        extra = self.extra_repr()
        extra = extra.split("\n") if extra else []
        children = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        if len(extra) == 1 and not children:
            return f"{type(self).__name__}({extra[0]})"
        body = "".join(f"\n  {line}" for line in extra + children)
        return f"{type(self).__name__}({body}\n)" if body else f"{type(self).__name__}()"


def _move_only(t, *args, dtype=None, device=None):
    """Integer/bool buffers move between devices but keep their dtype."""
    for arg in args:
        if isinstance(arg, Device) or (isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda")):
            device = arg
    return t.to(device=device) if device is not None else t


def _as_array(value, name):
    if isinstance(value, Tensor):
        return value.data
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu()
        # numpy has no bfloat16 of its own: widen it (torch's float16/32/64 convert as they are)
        return value.float().numpy() if str(value.dtype) == "torch.bfloat16" else value.numpy()
    if hasattr(value, "shape"):
        return value
    try:
        return np.asarray(value)
    except Exception:
        raise TypeError(f"state_dict[{name!r}]: expected an array or Tensor, got {type(value).__name__}") from None
