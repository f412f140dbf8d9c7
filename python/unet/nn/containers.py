"""Sequential and ModuleList."""
from __future__ import annotations

from collections import OrderedDict

from .module import Module


class Sequential(Module):
    """Calls its modules in order; ``Sequential(a, b)`` or ``Sequential(OrderedDict(name=module))``."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                _check_module(module, f"modules[{index}]")
                self.add_module(str(index), module)

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x

    def append(self, module):
        _check_module(module, "module")
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[index]

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)


class ModuleList(Module):
    """A list of modules whose parameters are registered as ``0.weight``, ``1.weight``, ..."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, module):
        _check_module(module, "module")
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return list(self._modules.values())[index]

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)


def _check_module(module, argname):
    if not isinstance(module, Module):
        raise TypeError(f"{argname}: expected a Module, got {type(module).__name__}")
