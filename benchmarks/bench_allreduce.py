"""All-reduce bus bandwidth and DDP step time, unet.distributed against the raw backend, same run.

* ``allreduce``: float32 sum all-reduce of 1 KB ... 256 MB through ``unet.distributed.all_reduce``
  (MPI on the CPU, NCCL on a GPU) and through the raw backend call (mpi4py's blocking
  ``Allreduce``; CuPy's NCCL ``allReduce`` + stream sync), alternating. Bus bandwidth as
  nccl-tests reports it: bytes * 2 (n - 1) / n / time. "ratio" is unet's time over the raw one
  (the cost of the Tensor layer, staging and deadline polling).
* ``ddp``: one training step (forward, backward, SGD) of an MLP (4 x Linear 1024, 4.2 M
  parameters, 16.8 MB of gradients: one 25 MB bucket; --bucket-mb 4 makes five) and of a
  2-layer LSTM language model (0.9 M parameters) on each rank's batch, with DistributedDataParallel on every rank against the same step in
  one process alone (rank 0 while the others wait): "ratio" = DDP / alone (1.0: the
  communication is free; weak scaling, the batch per rank is the same), and against the
  same DDP step under ``no_sync()`` (every rank computing, no communication):
  "ratio_to_no_sync" separates the communication's cost from the ranks' contention for
  cores and memory.

    python benchmarks/bench_allreduce.py [--nprocs 2] [--device cpu|cuda] [--max-mb 256] [--json PATH]

It starts itself in --nprocs ranks with `unet launch`'s mpiexec command. On a CPU machine the
ranks share the cores: OMP_NUM_THREADS=1 per rank.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from harness import machine_info, make_parser, parse_args, write_report

import unet
import unet.distributed as dist
from unet import nn, optim
import unet.functional as F


def bus_bandwidth(nbytes, seconds, world):
    """nccl-tests' bus bandwidth (0 for one rank: nothing crosses a link)."""
    return nbytes * 2 * (world - 1) / world / seconds / 1e9


def alternate(fns, repeats, warmup, sync, device):
    """Median seconds of each fn, the fns interleaved so both see the same machine state."""
    for fn in fns:
        for _ in range(warmup):
            fn()
        sync()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            sync()
            t.append(time.perf_counter() - t0)
    # every rank must agree on one time: the slowest rank's
    return [_max_over_ranks(np.median(t), device) for t in times]


def _max_over_ranks(value, device):
    t = unet.tensor(np.array([value])).to(device)
    dist.all_reduce(t, "max")
    return float(t.item())


def bench_allreduce(args, group, xp, sync, device):
    results = []
    size = 1024
    while size <= args.max_mb * 2**20:
        n = size // 4
        ours = unet.ones(n).to(device)
        raw = xp.ones(n, np.float32)
        if group.name == "mpi":
            from mpi4py import MPI

            def raw_call():
                group.comm.Allreduce(MPI.IN_PLACE, raw, MPI.SUM)
        else:
            import cupy

            def raw_call():
                group.comm.allReduce(raw.data.ptr, raw.data.ptr, n, 7, 0, cupy.cuda.get_current_stream().ptr)
        repeats = max(3, min(args.repeats, int(2e8 // max(size, 1))))
        t_ours, t_raw = alternate([lambda: dist.all_reduce(ours), raw_call], repeats, args.warmup, sync,
                                  device)
        results.append({"bytes": size, "time_s": {"unet": t_ours, "raw": t_raw},
                        "busbw_GBps": {"unet": bus_bandwidth(size, t_ours, group.world_size),
                                       "raw": bus_bandwidth(size, t_raw, group.world_size)},
                        "algbw_GBps": {"unet": size / t_ours / 1e9, "raw": size / t_raw / 1e9},
                        "ratio": t_ours / t_raw})
        size *= 4
    return results


def mlp():
    return nn.Sequential(*[nn.Linear(1024, 1024, activation="relu") for _ in range(3)], nn.Linear(1024, 1024))


class LSTMLanguageModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding, self.lstm = nn.Embedding(100, 64), nn.LSTM(64, 256, num_layers=2, batch_first=True)
        self.head = nn.Linear(256, 100)

    def forward(self, ids):
        out, _ = self.lstm(self.embedding(ids))
        return self.head(out)


MODELS = {
    "mlp 4x1024, batch 32": (mlp, lambda rng: (rng.standard_normal((32, 1024)).astype(np.float32),
                                               rng.standard_normal((32, 1024)).astype(np.float32))),
    "lstm lm 2x256, batch 16x32": (LSTMLanguageModel, lambda rng: (rng.integers(0, 100, (16, 32)),
                                                                   rng.integers(0, 100, (16, 32)))),
}


def step_fn(model, device, rng, make_batch):
    opt = optim.SGD(model.parameters(), lr=1e-3)
    x, y = (unet.tensor(a).to(device) for a in make_batch(rng))

    def step():
        out = model(x)
        loss = F.mse_loss(out, y) if out.shape == y.shape else F.cross_entropy(out.reshape(-1, 100), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def bench_ddp(args, group, device, sync):
    results = []
    for name, (build, make_batch) in MODELS.items():
        rng = np.random.default_rng(group.rank)
        unet.manual_seed(0)
        alone = step_fn(build().to(device), device, rng, make_batch)
        single = None
        if group.rank == 0:  # the others wait: rank 0 has the machine to itself
            for _ in range(args.warmup):
                alone()
            sync()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                alone()
                sync()
                times.append(time.perf_counter() - t0)
            single = float(np.median(times))
        dist.barrier()
        unet.manual_seed(0)
        ddp = dist.DistributedDataParallel(build().to(device), bucket_cap_mb=args.bucket_mb)
        step = step_fn(ddp, device, rng, make_batch)

        def compute_only():
            with ddp.no_sync():
                step()
        t_ddp, t_compute = alternate([step, compute_only], args.repeats, args.warmup, sync, device)
        if group.rank == 0:
            results.append({"model": name, "parameters": sum(p.numel() for p in ddp.parameters()),
                            "buckets": len(ddp._buckets),
                            "time_s": {"ddp": t_ddp, "ddp_no_sync": t_compute, "alone": single},
                            "ratio": t_ddp / single, "ratio_to_no_sync": t_ddp / t_compute})
    return results


def worker(args):
    group = dist.init(backend="nccl" if args.device == "cuda" else "mpi")
    if args.device == "cuda":
        import cupy
        xp, sync = cupy, lambda: cupy.cuda.get_current_stream().synchronize()
    else:
        xp, sync = np, lambda: None
    device = f"cuda:{group.local_rank}" if args.device == "cuda" else "cpu"
    report = {"world_size": group.world_size, "backend": group.name,
              "allreduce": bench_allreduce(args, group, xp, sync, device),
              "ddp": bench_ddp(args, group, device, sync)}
    if group.rank == 0:
        with open(args.worker_out, "w") as f:
            json.dump(report, f)


def main():
    parser = make_parser(__doc__, repeats=10, warmup=2, dtypes=("float32",))
    parser.add_argument("--nprocs", type=int, help="ranks (default: 2 on the CPU, one per GPU on cuda)")
    parser.add_argument("--max-mb", type=int, default=256)
    parser.add_argument("--bucket-mb", type=float, default=25.0)
    parser.add_argument("--worker-out", help=argparse_hidden())
    args = parse_args(parser)
    if args.worker_out:
        return worker(args)
    if args.nprocs is None:
        args.nprocs = unet.backend.require_cupy().cuda.runtime.getDeviceCount() if args.device == "cuda" else 2
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ranks.json")
        argv = [os.path.abspath(__file__), *sys.argv[1:], "--nprocs", str(args.nprocs), "--worker-out", out]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        status = subprocess.call(dist.mpiexec_command(args.nprocs, argv), env=env)
        if status:
            sys.exit(f"bench_allreduce: the ranks failed (exit status {status})")
        with open(out) as f:
            report = json.load(f)
    print(f"all-reduce float32 sum, {report['world_size']} ranks, backend {report['backend']}")
    print(f"{'bytes':>12} {'unet ms':>10} {'raw ms':>10} {'ratio':>6} {'unet GB/s':>10} {'raw GB/s':>10}")
    for r in report["allreduce"]:
        print(f"{r['bytes']:12d} {r['time_s']['unet'] * 1e3:10.3f} {r['time_s']['raw'] * 1e3:10.3f} "
              f"{r['ratio']:6.2f} {r['busbw_GBps']['unet']:10.3f} {r['busbw_GBps']['raw']:10.3f}")
    print(f"\nDDP step, {report['world_size']} ranks vs one process alone (same batch per rank)")
    for r in report["ddp"]:
        t = {k: v * 1e3 for k, v in r["time_s"].items()}
        print(f"{r['model']:>28}: DDP {t['ddp']:7.2f} ms, alone {t['alone']:7.2f} ms (ratio {r['ratio']:.2f}), "
              f"all ranks without communication {t['ddp_no_sync']:7.2f} ms (ratio {r['ratio_to_no_sync']:.2f}); "
              f"{r['parameters']:,} parameters, {r['buckets']} buckets")
    if args.json:
        write_report(args.json, "allreduce", {"about": __doc__.split("\n\n")[0]},
                     {"settings": {k: v for k, v in vars(args).items() if k not in ("json", "worker_out")}},
                     machine_info(args.device, {"omp_num_threads": env["OMP_NUM_THREADS"]}), report)


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
