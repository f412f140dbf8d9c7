"""The process group: ``init``/``destroy``, rank and world size, and the abort-on-failure excepthook."""
from __future__ import annotations

import os
import sys
import time

from .. import backend as _backend
from . import env
from .launch import collective_log, record_rank
from .work import DistributedError

DEFAULT_TIMEOUT_S = 180.0
# before aborting the job a failed rank waits for its traceback to pass through the launcher, and
# longer after a failed collective, so the other ranks (told of it, or failing the same way) can
# report their own view first
OUTPUT_GRACE_S, REPORT_GRACE_S = 0.5, 1.0
_group = None


def init(backend: str | None = None, timeout: float | None = None):
    """Join the process group of this launch (torch's ``init_process_group``).

    Rank and world size come from the MPI launcher (``mpirun``, ``srun``, ``unet launch``), else
    from RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT, else this process is alone (world
    size 1). ``backend``: "nccl" (GPU tensors; the default when CuPy sees a GPU) or "mpi" (CPU
    tensors). ``timeout`` (seconds; default $UNET_DIST_TIMEOUT or 180): a collective that has
    not completed by then raises DistributedTimeoutError naming the ranks that do not answer.
    Once joined, an uncaught exception on any rank aborts every rank (no hang).
    """
    global _group
    if _group is not None:
        raise RuntimeError("init: this process already joined a process group; call destroy() first")
    backend = _resolve_backend(backend)
    timeout = _resolve_timeout(timeout)
    mpi_launch, env_launch = env.launched_by_mpi(), env.env_launch()
    if backend == "mpi":
        if env_launch is not None and env_launch.world_size > 1 and not mpi_launch:
            raise RuntimeError("backend 'mpi': this process was not started by an MPI launcher (WORLD_SIZE "
                               "alone cannot connect MPI processes); use mpirun -n N or unet launch -n N")
        from .mpi import MPIBackend
        _group = MPIBackend(timeout)
    else:
        _group = _nccl_backend(mpi_launch, env_launch, timeout)
    if _group.world_size > 1:
        _install_excepthook()
        record_rank(_group.rank)
        _group.collective_log = collective_log(_group.rank)
    return _group


def _resolve_backend(backend):
    if backend is None:
        return "nccl" if _backend.cuda_available() else "mpi"
    if backend not in ("nccl", "mpi"):
        raise ValueError(f"backend: expected 'nccl' or 'mpi', got {backend!r}")
    return backend


def _resolve_timeout(timeout):
    if timeout is None:
        text = os.environ.get("UNET_DIST_TIMEOUT", "")
        try:
            timeout = float(text) if text else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ValueError(f"UNET_DIST_TIMEOUT: expected seconds, got {text!r}") from None
    if hasattr(timeout, "total_seconds"):  # a datetime.timedelta, as torch takes
        timeout = timeout.total_seconds()
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < float("inf"):
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _nccl_backend(mpi_launch, env_launch, timeout):
    from .nccl import NCCLBackend
    if mpi_launch:  # MPI bootstraps NCCL and names dead ranks after a timeout
        from .mpi import MPIBackend
        mpi = MPIBackend(timeout)
        return NCCLBackend(mpi.rank, mpi.world_size, mpi.local_rank,
                           lambda unique_id: mpi.comm.bcast(unique_id, root=0), timeout, mpi=mpi)
    launch = env_launch or env.EnvLaunch(0, 1, 0, None, None)
    if launch.world_size == 1:
        return NCCLBackend(0, 1, launch.local_rank, lambda unique_id: unique_id, timeout)
    if launch.master_addr is None or launch.master_port is None:
        raise ValueError("MASTER_ADDR/MASTER_PORT: both must be set when WORLD_SIZE > 1 without MPI")
    from .rendezvous import share_from_rank0
    return NCCLBackend(launch.rank, launch.world_size, launch.local_rank,
                       lambda unique_id: share_from_rank0(unique_id, launch.rank, launch.world_size,
                                                          launch.master_addr, launch.master_port, timeout),
                       timeout)


def _install_excepthook():
    previous = sys.excepthook
    if getattr(previous, "aborts_unet_ranks", False):  # joined a group before: installed already
        return

    def abort_all_ranks(kind, value, traceback):
        previous(kind, value, traceback)
        group = _group
        if group is not None:
            sys.stderr.write(f"unet.distributed: rank {group.rank} of {group.world_size} failed with "
                             f"{kind.__name__}; aborting every rank\n")
            sys.stderr.flush()
            # the launcher drops output still on its way at the abort: give it time to pass
            time.sleep(REPORT_GRACE_S if issubclass(kind, DistributedError) else OUTPUT_GRACE_S)
            group.abort()

    abort_all_ranks.aborts_unet_ranks = True
    sys.excepthook = abort_all_ranks


def current():
    if _group is None:
        raise RuntimeError("unet.distributed: no process group; call unet.distributed.init() first")
    return _group


def is_initialized() -> bool:
    return _group is not None


def get_rank() -> int:
    return current().rank


def get_world_size() -> int:
    return current().world_size


def get_local_rank() -> int:
    return current().local_rank


def get_backend() -> str:
    return current().name


def destroy():
    """Leave the process group (torch's ``destroy_process_group``)."""
    global _group
    if _group is not None:
        _group.destroy()
        _group = None
