"""Data-parallel training over many processes: one per GPU (NCCL) or per CPU share (MPI).

    import unet.distributed as dist
    dist.init()                                    # rank/world size from mpirun, srun or RANK/WORLD_SIZE
    model = dist.DistributedDataParallel(model)    # rank 0's weights everywhere; averaged gradients
    sampler = dist.DistributedSampler(dataset)     # this rank's shard; sampler.set_epoch(epoch)

Launch with ``mpirun -n 4 python train.py`` or ``unet launch -n 4 train.py``.
"""
from .collectives import (ReduceOp, all_gather, all_gather_object, all_reduce, all_reduce_found_inf, barrier,
                          broadcast, reduce_scatter)
from .ddp import DistributedDataParallel
from .group import (destroy, get_backend, get_local_rank, get_rank, get_world_size, init,
                    is_initialized)
from .launch import launch, mpiexec_command
from .sampler import DistributedSampler
from .work import DistributedError, DistributedTimeoutError, Work

# torch's names for the same calls
init_process_group = init
destroy_process_group = destroy

__all__ = [
    "init", "init_process_group", "destroy", "destroy_process_group", "is_initialized", "get_rank",
    "get_world_size", "get_local_rank", "get_backend", "ReduceOp", "all_reduce", "broadcast",
    "all_gather", "all_gather_object", "reduce_scatter", "barrier", "all_reduce_found_inf", "DistributedDataParallel",
    "DistributedSampler", "launch", "mpiexec_command", "DistributedError", "DistributedTimeoutError",
    "Work",
]
