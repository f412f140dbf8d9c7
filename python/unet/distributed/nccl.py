"""The "nccl" backend: collectives on CuPy (GPU) arrays through CuPy's NCCL bindings.

Every collective runs on a side stream that first waits for the caller's stream, so DDP's
all-reduces overlap the rest of backward; ``Work`` polls an event recorded after it.
"""
from __future__ import annotations

import numpy as np

from .. import backend as _backend
from .work import Work

# ncclDataType_t and ncclRedOp_t values (nccl.h; stable ABI)
_NCCL_DTYPES = {np.dtype("int32"): 2, np.dtype("int64"): 4, np.dtype("float16"): 6,
                np.dtype("float32"): 7, np.dtype("float64"): 8, np.dtype(_backend.bfloat16): 9}
_NCCL_OPS = {"sum": 0, "max": 2, "min": 3, "avg": 4}


class NCCLBackend:
    name = "nccl"
    device_type = "cuda"
    native_dtypes = frozenset(_NCCL_DTYPES)
    native_avg = True

    def __init__(self, rank: int, world_size: int, local_rank: int, share_id, timeout: float,
                 mpi=None):
        """``share_id(bytes or None) -> bytes`` hands rank 0's unique id to every rank; ``mpi``
        (an MPIBackend, when launched by MPI) names dead ranks after a timeout."""
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as error:
            raise RuntimeError(f"backend 'nccl' needs CuPy built with NCCL: pip install 'unet[cuda]' "
                               f"({error})") from None
        self.cupy = cupy
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.timeout, self.mpi = timeout, mpi
        cupy.cuda.Device(local_rank).use()  # one GPU per process: the one LOCAL_RANK names
        unique_id = bytes(bytearray(x % 256 for x in nccl.get_unique_id())) if rank == 0 else None
        unique_id = share_id(unique_id)
        self.comm = nccl.NcclCommunicator(world_size, tuple(b - 256 if b > 127 else b for b in unique_id),
                                          rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._sequence = 0

    def next_sequence_number(self) -> int:
        self._sequence += 1
        return self._sequence

    def _launch(self, name, call):
        cupy = self.cupy
        ready = cupy.cuda.Event(disable_timing=True)
        ready.record(cupy.cuda.get_current_stream())
        self.stream.wait_event(ready)
        call(self.stream.ptr)
        done = cupy.cuda.Event(disable_timing=True)
        done.record(self.stream)
        return Work(self, name, lambda: done.done)

    def all_reduce(self, buf, op):
        return self._launch("all_reduce", lambda s: self.comm.allReduce(
            buf.data.ptr, buf.data.ptr, buf.size, _NCCL_DTYPES[buf.dtype], _NCCL_OPS[op], s))

    def broadcast(self, buf, src):
        return self._launch("broadcast", lambda s: self.comm.bcast(
            buf.data.ptr, buf.size, _NCCL_DTYPES[buf.dtype], src, s))

    def all_gather(self, out, buf):
        return self._launch("all_gather", lambda s: self.comm.allGather(
            buf.data.ptr, out.data.ptr, buf.size, _NCCL_DTYPES[buf.dtype], s))

    def reduce_scatter(self, out, buf, op):
        return self._launch("reduce_scatter", lambda s: self.comm.reduceScatter(
            buf.data.ptr, out.data.ptr, out.size, _NCCL_DTYPES[buf.dtype], _NCCL_OPS[op], s))

    def barrier(self):
        return self.all_reduce(self.cupy.zeros(1, np.float32), "sum")

    def serve_while_waiting(self, work):
        self.comm.check_async_error()
        if self.mpi is not None:
            self.mpi.serve_while_waiting(work)

    def diagnose(self, work, limit) -> str:
        self.comm.abort()  # NCCL kernels stuck on a dead peer never return otherwise
        if self.mpi is not None:
            return self.mpi.diagnose(work, limit)
        return (f"rank {self.rank}: {work.name} (collective #{work.seq}) did not complete within "
                f"{limit:g} s: another rank died or is stuck")

    def abort(self):
        self.comm.abort()
        if self.mpi is not None:
            self.mpi.abort()

    def destroy(self):
        self.comm.destroy()
        if self.mpi is not None:
            self.mpi.destroy()
