"""The "mpi" backend: collectives on numpy (CPU) arrays through mpi4py's non-blocking calls."""
from __future__ import annotations

import time

import numpy as np

from .work import Work

# point-to-point tags of the liveness probe that names the ranks a timed-out collective waits for
_PROBE_ASK, _PROBE_REPLY = 7001, 7002
_PROBE_WINDOW_S = 5.0


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
    native_dtypes = frozenset(np.dtype(t) for t in ("float32", "float64", "int32", "int64"))
    native_avg = False

    def __init__(self, timeout: float):
        self.MPI = MPI = import_mpi()
        self.comm = MPI.COMM_WORLD.Dup()      # our collectives never mix with the user's own
        self.probe_comm = MPI.COMM_WORLD.Dup()
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        self.timeout = timeout
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self._sequence = 0
        self._replies = []  # probe messages still being sent

    def next_sequence_number(self) -> int:
        self._sequence += 1
        return self._sequence

    def _work(self, name, request):
        return Work(self, name, lambda: request.Test())

    # ---- collectives (in place where torch's are)
    def all_reduce(self, buf, op):
        return self._work("all_reduce", self.comm.Iallreduce(self.MPI.IN_PLACE, buf, self._ops[op]))

    def broadcast(self, buf, src):
        return self._work("broadcast", self.comm.Ibcast(buf, root=src))

    def all_gather(self, out, buf):
        return self._work("all_gather", self.comm.Iallgather(buf, out))

    def reduce_scatter(self, out, buf, op):
        return self._work("reduce_scatter", self.comm.Ireduce_scatter_block(buf, out, self._ops[op]))

    def barrier(self):
        return self._work("barrier", self.comm.Ibarrier())

    # ---- fault handling
    def serve_while_waiting(self):
        """Answer the probes of ranks whose collective timed out: "alive, at collective #n"."""
        status = self.MPI.Status()
        while self.probe_comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_PROBE_ASK, status=status):
            self.probe_comm.recv(source=status.Get_source(), tag=_PROBE_ASK)
            self._replies.append(self.probe_comm.isend(self._sequence, dest=status.Get_source(),
                                                       tag=_PROBE_REPLY))
        self._replies = [r for r in self._replies if not r.Test()]

    def diagnose(self, work, limit) -> str:
        """Ask every other rank whether it is alive; those that stay silent are the ones named."""
        others = [r for r in range(self.world_size) if r != self.rank]
        for r in others:
            self._replies.append(self.probe_comm.isend(work.seq, dest=r, tag=_PROBE_ASK))
        pending = {r: self.probe_comm.irecv(source=r, tag=_PROBE_REPLY) for r in others}
        answers, deadline = {}, time.monotonic() + min(_PROBE_WINDOW_S, limit)
        while pending and time.monotonic() < deadline:
            self.serve_while_waiting()
            for r in list(pending):
                done, value = pending[r].test()
                if done:
                    answers[r] = value
                    del pending[r]
            time.sleep(1e-3)
        head = (f"rank {self.rank}: {work.name} (collective #{work.seq}) did not complete within "
                f"{limit:g} s")
        if pending:
            return (f"{head}; rank(s) {sorted(pending)} did not answer: dead, or stuck outside "
                    "unet.distributed collectives")
        return (f"{head}; every rank is alive, at collectives {answers} (rank: number): the ranks "
                "called different collectives")

    def abort(self):
        self.MPI.COMM_WORLD.Abort(1)

    def destroy(self):
        for comm in (self.comm, self.probe_comm):
            comm.Free()
