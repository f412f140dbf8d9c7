"""Collectives on Tensors (torch.distributed's names and in-place semantics).

Each call checks its tensors, stages them when the backend cannot take them as they are
(non-contiguous memory; float16/bfloat16 on MPI, sent as float32), and returns a ``Work``
when ``async_op=True``, else waits (against the group's timeout) and returns None.
"""
from __future__ import annotations

import pickle

import numpy as np

from ..backend import array_module, is_floating
from ..tensor import Tensor
from . import group as _group_module


class ReduceOp:
    SUM, AVG, MAX, MIN = "sum", "avg", "max", "min"


_OPS = (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN)


def _check_tensor(tensor, name, group):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: expected a unet.Tensor, got {type(tensor).__name__}")
    if tensor.device.type != group.device_type:
        raise ValueError(f"{name}: backend {group.name!r} works on {group.device_type} tensors, got one on "
                         f"{tensor.device}")
    if tensor.dtype == np.bool_ or not (is_floating(tensor.dtype) or tensor.dtype.kind in "iu"):
        raise TypeError(f"{name}: expected a floating-point or integer tensor, got dtype {tensor.dtype}")
    return tensor.data


def _check_op(op, dtype):
    if op not in _OPS:
        raise ValueError(f"op: expected one of {list(_OPS)}, got {op!r}")
    if op == ReduceOp.AVG and not is_floating(dtype):
        raise TypeError(f"op: 'avg' needs a floating-point tensor, got dtype {dtype}")


def _stage(array, group):
    """(buffer the backend can use, function that copies a result in it back into ``array``)."""
    xp = array_module(array)
    dtype = array.dtype if array.dtype in group.native_dtypes else np.dtype(np.float32)
    if dtype == array.dtype and array.flags.c_contiguous:
        return array, lambda: None
    buf = xp.ascontiguousarray(array, dtype=dtype)

    def copy_back():
        array[...] = buf.astype(array.dtype, copy=False)
    return buf, copy_back


def _finish(work, async_op):
    if async_op:
        return work
    work.wait()
    return None


def _reduce(group, buf, op):
    """Start a reduction; an average is a sum divided by the world size where the backend lacks one."""
    if op == ReduceOp.AVG and not group.native_avg:
        return ReduceOp.SUM, (lambda: buf.__itruediv__(group.world_size))
    return op, (lambda: None)


def all_reduce(tensor, op=ReduceOp.SUM, async_op=False):
    """Reduce ``tensor`` over every rank, in place: every rank ends with the result."""
    group = _group_module.current()
    array = _check_tensor(tensor, "tensor", group)
    _check_op(op, array.dtype)
    buf, copy_back = _stage(array, group)
    backend_op, scale = _reduce(group, buf, op)
    work = group.all_reduce(buf, backend_op).then(scale).then(copy_back).then(tensor._bump)
    return _finish(work, async_op)


def broadcast(tensor, src=0, async_op=False):
    """Copy rank ``src``'s ``tensor`` into every rank's ``tensor``."""
    group = _group_module.current()
    array = _check_tensor(tensor, "tensor", group)
    if not isinstance(src, (int, np.integer)) or not 0 <= src < group.world_size:
        raise ValueError(f"src: expected a rank in [0, {group.world_size}), got {src!r}")
    buf, copy_back = _stage(array, group)
    return _finish(group.broadcast(buf, int(src)).then(copy_back).then(tensor._bump), async_op)


def _check_list(tensors, like, name, group):
    if not isinstance(tensors, (list, tuple)) or len(tensors) != group.world_size:
        raise ValueError(f"{name}: expected a list of {group.world_size} tensors (one per rank), got "
                         f"{type(tensors).__name__} of length {len(tensors) if hasattr(tensors, '__len__') else '?'}")
    for i, t in enumerate(tensors):
        _check_tensor(t, f"{name}[{i}]", group)
        if t.shape != like.shape or t.dtype != like.dtype:
            raise ValueError(f"{name}[{i}]: expected shape {like.shape} dtype {like.dtype}, got shape "
                             f"{t.shape} dtype {t.dtype}")


def all_gather(tensor_list, tensor, async_op=False):
    """``tensor_list[r]`` = rank r's ``tensor``, on every rank."""
    group = _group_module.current()
    array = _check_tensor(tensor, "tensor", group)
    _check_list(tensor_list, tensor, "tensor_list", group)
    buf, _ = _stage(array, group)
    out = array_module(array).empty((group.world_size,) + array.shape, buf.dtype)

    def scatter_out():
        for r, t in enumerate(tensor_list):
            t.data[...] = out[r].astype(t.dtype, copy=False)
            t._bump()
    return _finish(group.all_gather(out, buf).then(scatter_out), async_op)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, async_op=False):
    """``output`` = the reduction over ranks of their ``input_list[this rank]``."""
    group = _group_module.current()
    array = _check_tensor(output, "output", group)
    _check_list(input_list, output, "input_list", group)
    _check_op(op, array.dtype)
    xp = array_module(array)
    dtype = array.dtype if array.dtype in group.native_dtypes else np.dtype(np.float32)
    stacked = xp.stack([t.data.astype(dtype, copy=False) for t in input_list])
    buf, copy_back = _stage(array, group)
    backend_op, scale = _reduce(group, buf, op)
    work = group.reduce_scatter(buf, stacked, backend_op).then(scale).then(copy_back).then(output._bump)
    return _finish(work, async_op)


def all_gather_object(object_list, obj):
    """``object_list[r]`` = rank r's ``obj`` (any picklable object), on every rank (torch's name).

    Two all-gathers: the pickles' lengths, then the pickles padded to the longest. Pickle runs
    code when loaded: use it only between the ranks of one job.
    """
    group = _group_module.current()
    if not isinstance(object_list, list) or len(object_list) != group.world_size:
        raise ValueError(f"object_list: expected a list of {group.world_size} items (one per rank), got "
                         f"{type(object_list).__name__} of length "
                         f"{len(object_list) if hasattr(object_list, '__len__') else '?'}")
    payload = np.frombuffer(pickle.dumps(obj), np.uint8).astype(np.int32)
    sizes = [Tensor(np.zeros(1, np.int64), device=group.device_type) for _ in range(group.world_size)]
    all_gather(sizes, Tensor(np.array([payload.size], np.int64), device=group.device_type))
    sizes = [int(s.item()) for s in sizes]
    padded = np.zeros(max(sizes), np.int32)
    padded[:payload.size] = payload
    gathered = [Tensor(np.zeros_like(padded), device=group.device_type) for _ in range(group.world_size)]
    all_gather(gathered, Tensor(padded, device=group.device_type))
    for r, (size, t) in enumerate(zip(sizes, gathered)):
        object_list[r] = pickle.loads(t.cpu().numpy()[:size].astype(np.uint8).tobytes())


def barrier(async_op=False):
    """Wait until every rank has reached this call."""
    return _finish(_group_module.current().barrier(), async_op)


def all_reduce_found_inf(found_inf):
    """Make a GradScaler's "found inf/nan" agree across ranks: the max over ranks, in place.

    ``found_inf``: a float Tensor (as GradScaler keeps it; returned after the reduction) or a
    Python bool/number (a bool is returned). Without a process group (or alone) it is returned
    as it is. Under DistributedDataParallel the averaged gradients already agree (an inf or nan
    on one rank spreads through the sum), so this matters where gradients are not synchronised.
    """
    if isinstance(found_inf, Tensor):
        if _group_module.is_initialized() and _group_module.get_world_size() > 1:
            all_reduce(found_inf, ReduceOp.MAX)
        return found_inf
    if not isinstance(found_inf, (bool, int, float, np.bool_, np.number)):
        raise TypeError(f"found_inf: expected a Tensor, bool or number, got {type(found_inf).__name__}")
    if not (_group_module.is_initialized() and _group_module.get_world_size() > 1):
        return bool(found_inf)
    group = _group_module.current()
    flag = Tensor(np.array([float(bool(found_inf))], np.float32), device=group.device_type)
    all_reduce(flag, ReduceOp.MAX)
    return bool(flag.item())
