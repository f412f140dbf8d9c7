"""Shared harness of the benchmarks/bench_*.py scripts.

Timing (warm-up calls, then the median of timed calls), the report's context (machine,
commit, date), the JSON report, the common command-line options and the peer columns of
the printed tables. The scripts import it as a sibling module (``from harness import ...``);
run as ``python benchmarks/bench_X.py`` their folder is on sys.path.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from unet import _C


# ---------------------------------------------------------------- timing

def median_time(fn, repeats, warmup, sync=None, clock=time.perf_counter):
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    ``sync``, when given, is called after the warm-up and after each timed call (to wait
    for a device) and counts in the time. ``clock=time.process_time`` times the process's
    CPU seconds instead: on a machine shared with other jobs, with one thread each, that
    leaves out the time spent waiting for a core.
    """
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        if sync:
            sync()
        times.append(clock() - t0)
    return float(np.median(times))


def time_against_peers(impls, repeats, warmup, sync=None, clock=time.perf_counter, flops=None):
    """The timing part of a result row: each implementation's median time (``impls``: name ->
    callable, "unet" among them), with ``flops`` each one's GFLOP/s, and unet's time over each
    peer's (below 1: unet faster)."""
    times = {name: median_time(fn, repeats, warmup, sync, clock) for name, fn in impls.items()}
    row = {"time_s": times}
    if flops is not None:
        row["gflops"] = {name: flops / t / 1e9 for name, t in times.items()}
    row["ratio"] = {name: times["unet"] / t for name, t in times.items() if name != "unet"}
    return row


def require_torch(benchmark):
    """torch is the peer of every benchmark: a test dependency, never a library one."""
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(f"{benchmark}: needs torch (pip install 'unet[test]') for the peer timings")


def add_cpu_time_option(parser):
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread each, timed in process CPU seconds (for shared machines; CPU only)")


def add_amp_option(parser):
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None,
                        help="run both libraries under their autocast (16-bit products, float32 sums)")


def autocasts(amp_dtype, device):
    """(unet's, torch's) autocast context factories for --amp (no-ops without it)."""
    import contextlib

    if not amp_dtype:
        return contextlib.nullcontext, contextlib.nullcontext
    import torch

    from unet import amp

    half = torch.bfloat16 if amp_dtype == "bf16" else torch.float16
    device_type = "cuda" if device == "cuda" else "cpu"
    return (lambda: amp.autocast(amp_dtype)), (lambda: torch.autocast(device_type=device_type, dtype=half))


def clock_for(args, benchmark):
    """time.perf_counter; with --cpu-time, both libraries on one thread timed in process CPU
    seconds (re-executes the script with OMP_NUM_THREADS=1, which OpenMP reads at start-up)."""
    if not args.cpu_time:
        return time.perf_counter
    if args.device != "cpu":
        sys.exit(f"{benchmark}: --cpu-time times the CPU only")
    if os.environ.get("OMP_NUM_THREADS") != "1":
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, OMP_NUM_THREADS="1"))
    import torch

    torch.set_num_threads(1)
    return time.process_time


def device_sync(device):
    """For median_time's ``sync`` on a GPU: waits for CuPy's current stream and torch's work."""
    if device != "cuda":
        return None
    import cupy as cp
    import torch

    def sync():
        cp.cuda.get_current_stream().synchronize()
        torch.cuda.synchronize()

    return sync


def cuda_median_time(cp, fn, repeats, warmup):
    """Median over CUDA events around each call on the current stream."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


# ---------------------------------------------------------------- report context

def git_commit():
    """{"commit": HEAD of this checkout, "dirty": uncommitted changes}, None for both without git."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
        return {"commit": head, "dirty": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def machine_info(device, extra=None):
    """Platform, Python, numpy, unet._C and (when importable) torch; then ``extra``; then,
    for ``device == "cuda"``, CuPy's version and the GPU's name."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "unet_C": _C.info(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    info.update(extra or {})
    if device == "cuda":
        import cupy as cp

        info["cupy"] = cp.__version__
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return info


def write_report(path, benchmark, about, settings, machine, results):
    """Writes the JSON report to ``path`` (making its folder): benchmark name, ``about``
    (what is measured), UTC date, commit, ``settings`` (the run's options), machine, results."""
    report = {
        "benchmark": benchmark,
        **about,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **git_commit(),
        **settings,
        "machine": machine,
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


# ---------------------------------------------------------------- command line

def make_parser(doc, repeats, warmup, dtypes=("float32", "float64"), dtype_help=None, warmup_help=None):
    """A parser with the common --device, --dtype, --repeats and --warmup options."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=list(dtypes), default="float32", help=dtype_help)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--warmup", type=int, default=warmup, help=warmup_help)
    return parser


def parse_args(parser, argv=None):
    """Adds the common --json option (after the script's own) and parses ``argv``."""
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- tables

def peer_header(peers):
    """Header columns for each peer: its time in ms and unet's time over its."""
    return "".join(f" {p + ' ms':>10} {'ratio':>6}" for p in peers)


def peer_cells(result, peers, digits):
    """Row cells under peer_header: ``result["time_s"][p]`` in ms, ``result["ratio"][p]``."""
    return "".join(f" {result['time_s'][p] * 1e3:10.{digits}f} {result['ratio'][p]:6.2f}" for p in peers)
