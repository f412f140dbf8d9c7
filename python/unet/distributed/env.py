"""How this process was launched: by an MPI launcher, by environment variables, or alone."""
from __future__ import annotations

import dataclasses
import os

# Variables MPI launchers set in every process they start: MPICH/Intel (hydra), Open MPI,
# PMIx launchers and Slurm's srun (with --mpi=pmi2/pmix).
MPI_LAUNCH_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_FD")
ENV_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclasses.dataclass(frozen=True)
class EnvLaunch:
    """RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, as torchrun sets them."""
    rank: int
    world_size: int
    local_rank: int
    master_addr: str | None
    master_port: int | None


def launched_by_mpi() -> bool:
    return any(name in os.environ for name in MPI_LAUNCH_VARIABLES)


def _int_variable(name: str, default=None):
    text = os.environ.get(name)
    if text is None or text == "":
        if default is None:
            raise ValueError(f"{name}: the environment variable is missing (set RANK, WORLD_SIZE and, for "
                             "more than one process, MASTER_ADDR and MASTER_PORT; or launch with mpirun)")
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}: expected an integer in the environment, got {text!r}") from None


def env_launch() -> EnvLaunch | None:
    """The launch the RANK/WORLD_SIZE variables describe, or None when WORLD_SIZE is not set."""
    if "WORLD_SIZE" not in os.environ:
        return None
    world_size = _int_variable("WORLD_SIZE")
    rank = _int_variable("RANK")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK/WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE, got RANK={rank} "
                         f"WORLD_SIZE={world_size}")
    port = os.environ.get("MASTER_PORT")
    return EnvLaunch(rank=rank, world_size=world_size, local_rank=_int_variable("LOCAL_RANK", rank),
                     master_addr=os.environ.get("MASTER_ADDR"),
                     master_port=_int_variable("MASTER_PORT") if port else None)
