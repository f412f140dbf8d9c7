"""The Tensor: an array (numpy on the CPU, CuPy on a GPU) plus its place in the autograd graph."""
from __future__ import annotations

import collections
import numbers

import numpy as np

from . import backend
from .amp.autocast import cast_for_fp32
from .autograd import is_grad_enabled, retain, run_backward
from .backend import Device, array_module, device_of, resolve_dtype

MinMax = collections.namedtuple("MinMax", ["values", "indices"])


class RemovableHandle:
    """What a ``register_*_hook`` call returns: ``remove()`` takes the hook out again."""

    _next_id = 0

    def __init__(self, hooks: dict, hook):
        RemovableHandle._next_id += 1
        self.id, self._hooks = RemovableHandle._next_id, hooks
        hooks[self.id] = hook

    def remove(self):
        self._hooks.pop(self.id, None)


class Tensor:
    """An n-dimensional array that records the operations applied to it for ``backward()``."""

    __array_priority__ = 1000  # numpy defers `ndarray op Tensor` to the Tensor

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        data = _to_array(data, dtype, device)
        self._setup(data, requires_grad)

    @classmethod
    def _wrap(cls, data, requires_grad=False):
        """Wrap an array without copying (internal)."""
        t = cls.__new__(cls)
        t._setup(data, requires_grad)
        return t

    def _setup(self, data, requires_grad):
        if isinstance(data, np.generic):  # numpy reductions return scalars; a Tensor holds an array
            data = np.asarray(data)
        if requires_grad and not backend.is_floating(data.dtype):
            raise TypeError(f"requires_grad: only floating-point tensors can require gradients, "
                            f"got dtype {data.dtype}")
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None
        self._out_index = 0
        self._post_accumulate_grad_hooks = {}
        # in-place changes counted in a box shared with every view of the same memory
        self._version_box = [0]

    # ------------------------------------------------------------ properties
    shape = property(lambda self: tuple(self.data.shape))
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: device_of(self.data))
    is_leaf = property(lambda self: self._node is None)
    grad_fn = property(lambda self: self._node)
    _version = property(lambda self: self._version_box[0])
    T = property(lambda self: self.permute(*reversed(range(self.ndim))))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = "" if self.device.type == "cpu" else f", device='{self.device}'"
        body = np.array2string(self.numpy() if self.device.type == "cpu" else self.data.get(),
                               separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{dev}{grad})"

    # ------------------------------------------------------------ conversion
    def numpy(self):
        """The data as a numpy array (shares memory on the CPU; a GPU tensor must be moved first)."""
        if self.device.type != "cpu":
            raise TypeError(f"numpy(): the tensor is on {self.device}; call .cpu() first")
        return self.data

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        if dtype is not None and array.dtype != dtype:
            return array.astype(dtype)
        return array.copy() if copy else array  # np.array(t) must not alias t

    def __dlpack__(self, *args, **kwargs):
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item(): only one-element tensors convert to a Python number, "
                             f"this one has {self.numel()}")
        return self.data.reshape(()).item()

    def tolist(self):
        return (self.data if self.device.type == "cpu" else self.data.get()).tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def to(self, *args, dtype=None, device=None):
        """``to(device)``, ``to(dtype)`` or both; differentiable."""
        for arg in args:
            if isinstance(arg, (Device,)) or (isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda")):
                device = arg
            else:
                dtype = arg
        out = self
        if device is not None and Device(device) != self.device:
            out = ops.ToDevice.apply(out, Device(device))
        if dtype is not None and resolve_dtype(dtype) != self.dtype:
            out = ops.Cast.apply(out, resolve_dtype(dtype))
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def float(self):
        return self.to(backend.float32)

    def double(self):
        return self.to(backend.float64)

    def half(self):
        return self.to(backend.float16)

    def bfloat16(self):
        return self.to(backend.bfloat16)

    def long(self):
        return self.to(backend.int64)

    # ------------------------------------------------------------ autograd
    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) * gradient into every leaf tensor's ``.grad``."""
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no graph "
                               "(was it computed under no_grad(), or from tensors without requires_grad?)")
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(f"backward(): gradient can be omitted only for a one-element "
                                   f"tensor, this one has shape {self.shape}")
            gradient = array_module(self.data).ones(self.data.shape, dtype=self.dtype)
        else:
            gradient = gradient.data if isinstance(gradient, Tensor) else gradient
            gradient = array_module(self.data).asarray(gradient, dtype=self.dtype)
            if gradient.shape != self.data.shape:
                raise ValueError(f"gradient: expected shape {self.shape}, got {gradient.shape}")
        run_backward(self, gradient, retain_graph=retain_graph)

    def _accumulate_grad(self, grad):
        grad = grad if grad.dtype == self.dtype else grad.astype(self.dtype)
        if self.grad is None:
            # own the memory: a gradient may alias a buffer the graph still uses
            self.grad = Tensor._wrap(grad.copy())
        else:
            self.grad.data += grad

    def detach(self):
        """The same memory outside the graph; an in-place change through it still counts."""
        out = Tensor._wrap(self.data)
        out._version_box = self._version_box
        return out

    def requires_grad_(self, flag=True):
        if not self.is_leaf:
            raise RuntimeError("requires_grad_(): only leaf tensors can change requires_grad")
        self._setup_grad_flag(flag)
        return self

    def _setup_grad_flag(self, flag):
        if flag and not backend.is_floating(self.dtype):
            raise TypeError(f"requires_grad: only floating-point tensors can require gradients, "
                            f"got dtype {self.dtype}")
        self.requires_grad = bool(flag)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` in each backward pass once this leaf's ``.grad`` holds all of that
        pass's gradient (torch's name and meaning). Returns a handle whose ``remove()`` undoes it."""
        if not self.is_leaf:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors accumulate "
                               "gradients; this tensor was computed by an op")
        if not self.requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook: the tensor does not require grad")
        if not callable(hook):
            raise TypeError(f"hook: expected a callable, got {type(hook).__name__}")
        return RemovableHandle(self._post_accumulate_grad_hooks, hook)

    def _run_post_accumulate_grad_hooks(self):
        for hook in list(self._post_accumulate_grad_hooks.values()):
            hook(self)

    def retain_grad(self):
        if self.requires_grad and not self.is_leaf:
            retain(self)

    # ------------------------------------------------------------ in place (not differentiable)
    def _inplace_check(self, what):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError(f"{what}: in-place change of a tensor that requires grad; "
                               "do it under unet.no_grad() (as optimizers do) or on a detached copy")

    def _bump(self):
        self._version_box[0] += 1
        return self

    def __setitem__(self, index, value):
        self._inplace_check("__setitem__")
        self.data[_raw_index(index)] = value.data if isinstance(value, Tensor) else value
        self._bump()

    def zero_(self):
        return self.fill_(0)

    def fill_(self, value):
        self._inplace_check("fill_")
        self.data[...] = value
        return self._bump()

    def copy_(self, src):
        self._inplace_check("copy_")
        src = src.data if isinstance(src, Tensor) else src
        xp = array_module(self.data)
        if array_module(src) is not xp:
            raise ValueError(f"copy_: source on {device_of(src)}, destination on {self.device}; "
                             "move it with .to() first")
        self.data[...] = xp.broadcast_to(xp.asarray(src, dtype=self.dtype), self.data.shape)
        return self._bump()

    def add_(self, other, alpha=1):
        self._inplace_check("add_")
        other = other.data if isinstance(other, Tensor) else other
        self.data += alpha * other if alpha != 1 else other
        return self._bump()

    def mul_(self, other):
        self._inplace_check("mul_")
        self.data *= other.data if isinstance(other, Tensor) else other
        return self._bump()

    # ------------------------------------------------------------ arithmetic
    def _binary(self, fn, other, reverse=False):
        if isinstance(other, float) and not backend.is_floating(self.dtype):
            self = self.to(backend.DEFAULT_FLOAT)  # int + 0.5 is float32, as in torch (numpy: float64)
        other = _operand(other, self)
        return fn.apply(other, self) if reverse else fn.apply(self, other)

    __add__ = lambda self, o: self._binary(ops.Add, o)
    __radd__ = lambda self, o: self._binary(ops.Add, o, True)
    __sub__ = lambda self, o: self._binary(ops.Sub, o)
    __rsub__ = lambda self, o: self._binary(ops.Sub, o, True)
    __mul__ = lambda self, o: self._binary(ops.Mul, o)
    __rmul__ = lambda self, o: self._binary(ops.Mul, o, True)
    __truediv__ = lambda self, o: self._binary(ops.Div, o)
    __rtruediv__ = lambda self, o: self._binary(ops.Div, o, True)
    __pow__ = lambda self, o: self._binary(ops.Pow, o)
    __rpow__ = lambda self, o: self._binary(ops.Pow, o, True)
    __matmul__ = lambda self, o: self._binary(ops.MatMul, o)
    __rmatmul__ = lambda self, o: self._binary(ops.MatMul, o, True)
    __neg__ = lambda self: ops.Neg.apply(self)
    __pos__ = lambda self: self
    __abs__ = lambda self: ops.Abs.apply(self)

    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(op(self.data, other))

    __lt__ = lambda self, o: self._compare(o, lambda a, b: a < b)
    __le__ = lambda self, o: self._compare(o, lambda a, b: a <= b)
    __gt__ = lambda self, o: self._compare(o, lambda a, b: a > b)
    __ge__ = lambda self, o: self._compare(o, lambda a, b: a >= b)
    __eq__ = lambda self, o: self._compare(o, lambda a, b: a == b)
    __ne__ = lambda self, o: self._compare(o, lambda a, b: a != b)
    __invert__ = lambda self: Tensor._wrap(~self.data)
    __and__ = lambda self, o: self._compare(o, lambda a, b: a & b)
    __or__ = lambda self, o: self._compare(o, lambda a, b: a | b)
    __hash__ = object.__hash__

    def matmul(self, other):
        return self @ other

    def pow(self, exponent):
        return self ** exponent

    # ------------------------------------------------------------ elementwise math
    def exp(self):
        return ops.Exp.apply(self)

    def log(self):
        return ops.Log.apply(self)

    def sqrt(self):
        return ops.Sqrt.apply(self)

    def abs(self):
        return ops.Abs.apply(self)

    def tanh(self):
        return ops.Tanh.apply(self)

    def sigmoid(self):
        return ops.Sigmoid.apply(self)

    def relu(self):
        return ops.Relu.apply(self)

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        return ops.Clamp.apply(self, min, max)

    # ------------------------------------------------------------ reductions
    # sums of 16-bit values lose digits fast: under autocast they run in float32
    def sum(self, dim=None, keepdim=False):
        return ops.Sum.apply(cast_for_fp32(self), dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return ops.Mean.apply(cast_for_fp32(self), dim, keepdim)

    def var(self, dim=None, correction=1, keepdim=False, unbiased=None):
        if unbiased is not None:
            correction = 1 if unbiased else 0
        return ops.Var.apply(cast_for_fp32(self), dim, correction, keepdim)

    def std(self, dim=None, correction=1, keepdim=False, unbiased=None):
        return self.var(dim, correction, keepdim, unbiased).sqrt()

    def _extreme(self, dim, keepdim, largest):
        if dim is None:
            return ops.MaxMin.apply(self, None, keepdim, largest)
        dim = _dim(dim, self.ndim)
        values = ops.MaxMin.apply(self, dim, keepdim, largest)
        return MinMax(values, self.argmax(dim, keepdim) if largest else self.argmin(dim, keepdim))

    def max(self, dim=None, keepdim=False):
        """The largest element, or ``(values, indices)`` along ``dim``."""
        return self._extreme(dim, keepdim, True)

    def min(self, dim=None, keepdim=False):
        return self._extreme(dim, keepdim, False)

    def argmax(self, dim=None, keepdim=False):
        return self._arg(dim, keepdim, True)

    def argmin(self, dim=None, keepdim=False):
        return self._arg(dim, keepdim, False)

    def _arg(self, dim, keepdim, largest):
        data = self.data
        if dim is not None:
            _dim(dim, self.ndim)
            if self.ndim == 0:  # torch: the one element of a 0-d tensor is at index 0
                data, dim = data.reshape(1), 0
        out = data.argmax(axis=dim, keepdims=keepdim) if largest else data.argmin(axis=dim, keepdims=keepdim)
        return Tensor._wrap(out.reshape(()) if self.ndim == 0 else out)

    # ------------------------------------------------------------ shapes
    def reshape(self, *shape):
        shape = _shape_arg(shape)
        return self if shape == self.shape else ops.Reshape.apply(self, shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start, end = _dim(start_dim, self.ndim), _dim(end_dim, self.ndim)
        if start > end:
            raise ValueError(f"dim: start_dim {start_dim} comes after end_dim {end_dim}")
        merged = int(np.prod(self.shape[start:end + 1]))
        return self.reshape(self.shape[:start] + (merged,) + self.shape[end + 1:])

    def permute(self, *dims):
        dims = tuple(_dim(d, self.ndim) for d in _shape_arg(dims))
        if sorted(dims) != list(range(self.ndim)):
            raise ValueError(f"dims: expected a permutation of {tuple(range(self.ndim))}, got {dims}")
        return ops.Permute.apply(self, dims)

    def transpose(self, dim0, dim1):
        dims = list(range(self.ndim))
        dim0, dim1 = _dim(dim0, self.ndim), _dim(dim1, self.ndim)
        if dim0 == dim1:
            return self
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(*dims)

    def t(self):
        return self.transpose(0, 1) if self.ndim == 2 else self

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        dim = _dim(dim, self.ndim)
        if self.ndim == 0 or self.shape[dim] != 1:
            return self
        return self.reshape(self.shape[:dim] + self.shape[dim + 1:])

    def unsqueeze(self, dim):
        dim = _dim(dim, self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def expand(self, *sizes):
        sizes = _shape_arg(sizes)
        lead = len(sizes) - self.ndim
        shape = tuple(s if n == -1 else n for n, s in zip(sizes, (1,) * lead + self.shape))
        return ops.Expand.apply(self, shape)

    def contiguous(self):
        return self

    def split(self, split_size, dim=0):
        """Pieces of ``split_size`` (an int, or a list of sizes) along ``dim``."""
        dim = _dim(dim, self.ndim)
        length = self.shape[dim]
        if isinstance(split_size, numbers.Integral):
            if split_size <= 0:
                raise ValueError(f"split_size: expected a positive int, got {split_size}")
            sizes = [split_size] * (length // split_size) + ([length % split_size] if length % split_size else [])
        else:
            sizes = list(split_size)
            if any(n < 0 for n in sizes) or sum(sizes) != length:
                raise ValueError(f"split_size: sizes {sizes} do not add up to dim {dim}'s length {length}")
        return ops.Split.apply(self, sizes, dim)

    def chunk(self, chunks, dim=0):
        if not isinstance(chunks, numbers.Integral) or chunks <= 0:
            raise ValueError(f"chunks: expected a positive int, got {chunks!r}")
        dim = _dim(dim, self.ndim)
        return self.split(max(-(-self.shape[dim] // chunks), 1), dim)

    def __getitem__(self, index):
        return ops.GetItem.apply(self, _raw_index(index))

    def gather(self, dim, index):
        """``out[i][j] = self[i][index[i][j]]`` (dim 1); like torch, ``index`` may be smaller than
        ``self`` in the other dims, and it sets the output's shape."""
        dim = _dim(dim, self.ndim)
        index = index.data if isinstance(index, Tensor) else array_module(self.data).asarray(index)
        if index.dtype.kind not in "iu":
            raise TypeError(f"index: expected an integer tensor, got dtype {index.dtype}")
        if index.ndim != self.ndim or any(i > n for d, (i, n) in enumerate(zip(index.shape, self.shape))
                                          if d != dim):
            raise ValueError(f"index: expected {self.ndim} dims no larger than {self.shape} outside "
                             f"dim {dim}, got shape {index.shape}")
        return ops.Gather.apply(self, dim, index)

    def masked_fill(self, mask, value):
        mask = mask.data if isinstance(mask, Tensor) else mask
        return ops.MaskedFill.apply(self, mask, value)


# ---------------------------------------------------------------- helpers

def _to_array(data, dtype=None, device=None):
    if isinstance(data, Tensor):
        data = data.data
    target = Device(device) if device is not None else (device_of(data) if backend.is_cupy_array(data) else Device("cpu"))
    dtype = resolve_dtype(dtype) if dtype is not None else None
    if backend.is_cupy_array(data):
        array = data
    else:
        array = np.asarray(data)
        if dtype is None and array.dtype == np.float64 and not isinstance(data, (np.ndarray, np.generic)):
            dtype = backend.DEFAULT_FLOAT  # Python floats become float32, numpy data keeps its dtype
        if dtype is None and array.dtype not in backend.SUPPORTED_DTYPES:
            if array.dtype.kind in "iu":
                dtype = backend.int64
            else:
                raise TypeError(f"data: unsupported dtype {array.dtype}")
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    array = backend.to_device(array, target)
    if array is data:
        array = array.copy()  # unet.tensor() always copies, like torch.tensor()
    return array


def _operand(value, like: Tensor) -> Tensor:
    """Wrap a scalar or array as a constant tensor of a type that combines with ``like``."""
    if isinstance(value, Tensor):
        if value.device != like.device:
            raise ValueError(f"other: tensors on different devices ({like.device} and {value.device}); "
                             "move one with .to()")
        return value
    xp = array_module(like.data)
    if isinstance(value, (bool, numbers.Number)) and not isinstance(value, np.ndarray):
        if isinstance(value, float) and not backend.is_floating(like.dtype):
            return Tensor._wrap(xp.asarray(value, dtype=backend.DEFAULT_FLOAT))
        if like.dtype == backend.bool_ and not isinstance(value, (bool, np.bool_)):
            return Tensor._wrap(xp.asarray(value, dtype=backend.int64))  # bool + 5 is 6, not True
        return Tensor._wrap(xp.asarray(value, dtype=like.dtype))
    if backend.is_cupy_array(value) != backend.is_cupy_array(like.data):
        raise ValueError(f"other: array on {device_of(value)}, tensor on {like.device}; move one first")
    return Tensor._wrap(xp.asarray(value))


def _raw_index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def _dim(dim, ndim, argname="dim"):
    """``dim`` in [-ndim, ndim) as a non-negative axis (a 0-d tensor takes 0 and -1, like torch)."""
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
        raise TypeError(f"{argname}: expected an int, got {dim!r}")
    bound = max(ndim, 1)
    if not -bound <= dim < bound:
        raise IndexError(f"{argname}: {dim} is out of range for a tensor of {ndim} dimensions "
                         f"(expected [{-bound}, {bound - 1}])")
    return int(dim) % bound


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


from . import ops  # noqa: E402  (ops builds on Tensor; imported last to close the cycle)
