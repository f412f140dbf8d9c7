"""DistributedDataParallel: one model replica per process, gradients averaged in buckets during backward."""
from __future__ import annotations

import contextlib
import zlib

import numpy as np

from ..autograd import no_grad, queue_callback
from ..backend import array_module
from ..nn.module import Module
from ..tensor import Tensor
from . import group as _group_module
from .collectives import all_gather, all_reduce, broadcast


class _Bucket:
    """Parameters whose gradients travel in one flat buffer (one dtype, one device)."""

    def __init__(self, params, xp):
        self.params = params
        self.offsets = np.cumsum([0] + [p.numel() for p in params])
        self.flat = xp.zeros(int(self.offsets[-1]), params[0].dtype)
        self.ready = 0
        self.work = None

    def slot(self, i):
        return self.flat[self.offsets[i]:self.offsets[i + 1]]


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training (torch's name and arguments).

    At wrap time rank 0's parameters and buffers are copied to every rank. During backward
    each parameter's gradient, once complete, is copied into its bucket (about
    ``bucket_cap_mb`` MB; parameters in reverse order, the order backward finishes them); a
    full bucket is all-reduced at once, non-blocking, while backward goes on. At the end of
    backward every reduction is waited for and each ``.grad`` holds the average over ranks.
    ``no_sync()`` skips that for gradient accumulation. ``find_unused_parameters``: allow
    parameters that get no gradient in a step (they count as zero; one extra small reduction
    tells which ones no rank used, and those keep ``.grad`` None).
    """

    def __init__(self, module, bucket_cap_mb: float = 25.0, broadcast_buffers: bool = True,
                 find_unused_parameters: bool = False):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"module: expected a unet.nn.Module, got {type(module).__name__}")
        if not isinstance(bucket_cap_mb, (int, float)) or isinstance(bucket_cap_mb, bool) or not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb: expected a positive number, got {bucket_cap_mb!r}")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.require_backward_grad_sync = True
        group = _group_module.current()
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("module: has no parameter that requires grad; nothing to synchronise")
        for name, p in named:
            if p.device.type != group.device_type:
                raise ValueError(f"module: parameter {name!r} is on {p.device}, but backend "
                                 f"{group.name!r} works on {group.device_type} tensors")
        self._names = {id(p): n for n, p in named}
        self._check_same_model(group, [p for _, p in named])
        self._broadcast_state(group)
        self._buckets = _make_buckets([p for _, p in named], bucket_cap_mb * 2**20)
        # parameter -> (bucket, position); hooks fire as each gradient completes
        self._where = {}
        for bucket in self._buckets:
            for i, p in enumerate(bucket.params):
                self._where[id(p)] = (bucket, i)
                p.register_post_accumulate_grad_hook(self._grad_ready)
        self._in_backward = False
        self._next_bucket = 0   # buckets below it are in flight
        self._used = set()      # parameters whose gradient arrived in this backward pass

    # ------------------------------------------------------------ wrap time
    @staticmethod
    def _check_same_model(group, params):
        """Every rank must wrap the same parameter list, or buckets would pair unrelated tensors:
        the ranks swap (count, elements, a checksum of the shapes and dtypes) and compare."""
        layout = repr([(tuple(p.shape), str(p.dtype)) for p in params]).encode()
        mine = np.array([len(params), sum(p.numel() for p in params), zlib.crc32(layout)], np.int64)
        rows = [Tensor(np.zeros_like(mine), device=params[0].device) for _ in range(group.world_size)]
        all_gather(rows, Tensor(mine, device=params[0].device))
        rows = [row.cpu().numpy() for row in rows]
        other = next((r for r in range(group.world_size) if not np.array_equal(rows[r], rows[0])), None)
        if other is not None:
            def describe(r):
                return f"rank {r}: {rows[r][0]} parameters, {rows[r][1]} elements, layout checksum {rows[r][2]}"
            raise ValueError(f"module: the ranks wrap different models ({describe(0)}; {describe(other)}); "
                             f"this rank ({group.rank}) has shapes {[tuple(p.shape) for p in params][:20]}")

    def _broadcast_state(self, group, buffers_only=False):
        tensors = [] if buffers_only else [p for p in self.module.parameters()]
        tensors += [b for b in self.module.buffers() if b is not None]
        with no_grad():
            for t in tensors:
                broadcast(t, 0)

    # ------------------------------------------------------------ training
    def forward(self, *args, **kwargs):
        self._in_backward = False  # a backward that raised left no state behind
        if self.broadcast_buffers and self.module.training and any(True for _ in self.module.buffers()):
            self._broadcast_state(_group_module.current(), buffers_only=True)
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside only accumulate local gradients; the first one outside averages
        the sum (torch's gradient accumulation)."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def _grad_ready(self, param):
        if not self.require_backward_grad_sync:
            return
        if not self._in_backward:
            self._start_backward()
        bucket, i = self._where[id(param)]
        self._used.add(id(param))
        bucket.slot(i)[...] = param.grad.data.reshape(-1)
        bucket.ready += 1
        self._launch_ready_buckets()
        # MPI moves a non-blocking collective forward only inside MPI calls: test the ones in
        # flight so they progress while backward computes (NCCL needs no help)
        for launched in self._buckets[:self._next_bucket]:
            launched.work.is_completed()

    def _start_backward(self):
        self._in_backward = True
        self._next_bucket = 0
        self._used = set()
        for bucket in self._buckets:
            bucket.ready, bucket.work = 0, None
        queue_callback(self._finish_backward)

    def _launch_ready_buckets(self):
        # buckets go out in index order on every rank, so the collectives pair up across ranks
        group = _group_module.current()
        while self._next_bucket < len(self._buckets):
            bucket = self._buckets[self._next_bucket]
            if bucket.ready < len(bucket.params):
                return
            bucket.flat /= group.world_size
            bucket.work = group.all_reduce(bucket.flat, "sum")
            self._next_bucket += 1

    def _finish_backward(self):
        self._in_backward = False
        missing = [p for b in self._buckets for p in b.params if id(p) not in self._used]
        if missing and not self.find_unused_parameters:
            names = ", ".join(self._names[id(p)] for p in missing[:10])
            raise RuntimeError(f"DistributedDataParallel: {len(missing)} parameter(s) got no gradient in "
                               f"this backward pass ({names}); pass find_unused_parameters=True if the "
                               "model leaves parameters out of some steps")
        used_anywhere = self._complete_unused(missing) if self.find_unused_parameters else None
        for bucket in self._buckets:
            bucket.work.wait()
            for i, p in enumerate(bucket.params):
                if used_anywhere is not None and not used_anywhere[id(p)]:
                    continue
                averaged = bucket.slot(i).reshape(p.shape)
                if p.grad is None:
                    p.grad = Tensor._wrap(averaged.copy())
                else:
                    p.grad.data[...] = averaged

    def _complete_unused(self, missing):
        """Zero the slots of parameters without a gradient, send the remaining buckets and learn
        which parameters no rank used."""
        for p in missing:
            bucket, i = self._where[id(p)]
            bucket.slot(i)[...] = 0
            bucket.ready += 1
        self._launch_ready_buckets()
        params = [p for b in self._buckets for p in b.params]
        xp = array_module(params[0].data)
        used = Tensor._wrap(xp.asarray([float(id(p) in self._used) for p in params], np.float32))
        all_reduce(used, "max")
        flags = used.cpu().numpy()
        return {id(p): bool(f) for p, f in zip(params, flags)}


def _make_buckets(params, cap_bytes):
    """Buckets in reverse parameter order (backward produces the last layers' gradients first),
    each of one dtype and at most ``cap_bytes`` (a larger parameter gets a bucket of its own)."""
    buckets, current = [], []
    for p in reversed(params):
        size = sum(q.numel() * q.dtype.itemsize for q in current)
        if current and (p.dtype != current[0].dtype or size + p.numel() * p.dtype.itemsize > cap_bytes):
            buckets.append(current)
            current = []
        current.append(p)
    buckets.append(current)
    return [_Bucket(b, array_module(b[0].data)) for b in buckets]
