"""The "mpi" backend: collectives on numpy (CPU) arrays through mpi4py's non-blocking calls.

Before each collective the ranks swap a 5-number header (sequence number, operation, dtype,
element count, root or reduction) on a communicator of their own, so ranks that call
different collectives, or the same one on different sizes, get an error naming both ranks
and both calls instead of a hang or a garbled result. It costs one 40-byte all-gather.
"""
from __future__ import annotations

import time

import numpy as np

from .work import DistributedError, Work

# point-to-point tags of the liveness probe that names the ranks a timed-out collective waits for,
# and of the notice a rank that found dead ranks sends the live ones (so they stop at once too)
_PROBE_ASK, _PROBE_REPLY, _DEAD_NOTICE = 7001, 7002, 7003
_PROBE_WINDOW_S = 5.0
_OPERATIONS = ("all_reduce", "broadcast", "all_gather", "reduce_scatter", "barrier")
_REDUCTIONS = ("sum", "max", "min")
_DTYPE_NAMES = {np.dtype(t).num: t for t in ("float32", "float64", "int32", "int64")}


def import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise RuntimeError("backend 'mpi' needs mpi4py and an MPI library: pip install 'unet[mpi]' "
                           f"(mpi4py with the MPICH wheel) ({error})") from None
    return MPI


class MPIBackend:
    name = "mpi"
    device_type = "cpu"
    # MPI has no 16-bit floats: the collectives layer sends float16/bfloat16 as float32
    native_dtypes = frozenset(np.dtype(t) for t in _DTYPE_NAMES.values())
    native_avg = False

    def __init__(self, timeout: float):
        self.MPI = MPI = import_mpi()
        self.comm = MPI.COMM_WORLD.Dup()      # our collectives never mix with the user's own
        self.probe_comm = MPI.COMM_WORLD.Dup()
        self.header_comm = MPI.COMM_WORLD.Dup()
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        self.timeout = timeout
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self._sequence = 0
        self._replies = []  # probe messages still being sent

    def next_sequence_number(self) -> int:
        self._sequence += 1
        return self._sequence

    def _start(self, name, buf, detail, start):
        """Check that every rank calls the same collective on the same data, then ``start()`` it."""
        seq = self.next_sequence_number()
        if self.world_size > 1:
            self._agree(name, seq, buf, detail)
        request = start()
        return Work(self, name, lambda: request.Test(), seq=seq)

    def _agree(self, name, seq, buf, detail):
        mine = np.array([seq, _OPERATIONS.index(name), -1 if buf is None else buf.dtype.num,
                         0 if buf is None else buf.size, detail], np.int64)
        headers = np.empty((self.world_size, mine.size), np.int64)
        request = self.header_comm.Iallgather(mine, headers)
        Work(self, name, lambda: request.Test(), seq=seq).wait()
        differ = [r for r in range(self.world_size) if not np.array_equal(headers[r], headers[0])]
        if differ:
            other = differ[0]
            raise DistributedError(f"rank {self.rank}: the ranks called different collectives: rank 0 "
                                   f"{_describe(headers[0])} while rank {other} {_describe(headers[other])}")

    # ---- collectives (in place where torch's are)
    def all_reduce(self, buf, op):
        return self._start("all_reduce", buf, _REDUCTIONS.index(op),
                           lambda: self.comm.Iallreduce(self.MPI.IN_PLACE, buf, self._ops[op]))

    def broadcast(self, buf, src):
        return self._start("broadcast", buf, src, lambda: self.comm.Ibcast(buf, root=src))

    def all_gather(self, out, buf):
        return self._start("all_gather", buf, 0, lambda: self.comm.Iallgather(buf, out))

    def reduce_scatter(self, out, buf, op):
        return self._start("reduce_scatter", buf, _REDUCTIONS.index(op),
                           lambda: self.comm.Ireduce_scatter_block(buf, out, self._ops[op]))

    def barrier(self):
        return self._start("barrier", None, 0, self.comm.Ibarrier)

    # ---- fault handling
    def serve_while_waiting(self, work):
        """Answer the probes of ranks whose collective timed out: "alive, at collective #n"; stop
        at once when one of them found dead ranks."""
        status = self.MPI.Status()
        while self.probe_comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_PROBE_ASK, status=status):
            self.probe_comm.recv(source=status.Get_source(), tag=_PROBE_ASK)
            self._replies.append(self.probe_comm.isend(self._sequence, dest=status.Get_source(),
                                                       tag=_PROBE_REPLY))
        self._replies = [r for r in self._replies if not r.Test()]
        if self.probe_comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_DEAD_NOTICE, status=status):
            dead = self.probe_comm.recv(source=status.Get_source(), tag=_DEAD_NOTICE)
            raise DistributedError(f"rank {self.rank}: {work.name} (collective #{work.seq}) cannot complete: "
                                   f"rank(s) {dead} did not answer rank {status.Get_source()}: dead, or "
                                   "stuck outside unet.distributed collectives")

    def diagnose(self, work, limit) -> str:
        """Ask every other rank whether it is alive; those that stay silent are the ones named."""
        others = [r for r in range(self.world_size) if r != self.rank]
        for r in others:
            self._replies.append(self.probe_comm.isend(work.seq, dest=r, tag=_PROBE_ASK))
        pending = {r: self.probe_comm.irecv(source=r, tag=_PROBE_REPLY) for r in others}
        answers, deadline = {}, time.monotonic() + min(_PROBE_WINDOW_S, limit)
        while pending and time.monotonic() < deadline:
            self.serve_while_waiting(work)
            for r in list(pending):
                done, value = pending[r].test()
                if done:
                    answers[r] = value
                    del pending[r]
            time.sleep(1e-3)
        head = (f"rank {self.rank}: {work.name} (collective #{work.seq}) did not complete within "
                f"{limit:g} s")
        if pending:
            for r in answers:  # the live ranks wait for the dead ones too: tell them now
                self._replies.append(self.probe_comm.isend(sorted(pending), dest=r, tag=_DEAD_NOTICE))
            return (f"{head}; rank(s) {sorted(pending)} did not answer: dead, or stuck outside "
                    "unet.distributed collectives")
        return (f"{head}; every rank is alive, at collectives {answers} (rank: number): the ranks "
                "called different collectives")

    def abort(self):
        self.MPI.COMM_WORLD.Abort(1)

    def destroy(self):
        for comm in (self.comm, self.probe_comm, self.header_comm):
            comm.Free()


def _describe(header) -> str:
    """"all_reduce(sum) of 10 float32 as collective #3" from an exchanged header."""
    seq, operation, dtype, count, detail = (int(v) for v in header)
    name = _OPERATIONS[operation]
    if name in ("all_reduce", "reduce_scatter"):
        name += f"({_REDUCTIONS[detail]})"
    elif name == "broadcast":
        name += f"(src={detail})"
    data = "" if dtype < 0 else f" of {count} {_DTYPE_NAMES.get(dtype, dtype)}"
    return f"{name}{data} as collective #{seq}"
