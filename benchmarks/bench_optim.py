"""Optimizer steps: unet's fused kernels (one ``_C.sgd_step`` / ``_C.adam_step`` call for all
parameters) against unet's per-parameter path and torch.optim in the same run.

The parameter lists are those of real models, built with unet.nn: "lstm-lm", a 2-layer LSTM
language model (vocabulary 10000, embedding and hidden 400: 10.6M parameters in 11 tensors),
and "small-layers", 100 blocks of Linear(64, 64) + LayerNorm(64) (0.42M parameters in 400
tensors: per-tensor overheads dominate). Each row times ``step()`` with fixed gradients for
SGD (momentum 0.9, weight decay) and AdamW. Peers: "per-param" (unet, fused=False: numpy /
CuPy array ops per parameter), "torch-for" (foreach=False), "torch-foreach" and
"torch-fused" (torch's fused CPU/CUDA kernels). "ratio" is the fused time over the peer's
(below 1: the fused kernels are faster). Each time is the median of --repeats steps after
--warmup steps, with the device synchronised after each on a GPU (``--device cuda``: CuPy
and a CUDA build of torch).

    python benchmarks/bench_optim.py [--device cpu|cuda] [--dtype float32|float64] [--json PATH]

As every CPU benchmark, run it on an otherwise idle machine (or with OMP_WAIT_POLICY=passive
on a shared one); unet and torch use the same number of threads (OMP_NUM_THREADS).
"""
import os
import sys

import numpy as np
from harness import (device_sync, machine_info, make_parser, parse_args, peer_cells, peer_header,
                     require_torch, time_against_peers, write_report)

import unet
from unet import nn, optim


def lstm_lm():
    """Embedding(10000, 400), LSTM(400, 400, num_layers=2), Linear(400, 10000)."""
    return nn.ModuleList([nn.Embedding(10000, 400), nn.LSTM(400, 400, num_layers=2), nn.Linear(400, 10000)])


def small_layers():
    """100 x (Linear(64, 64), LayerNorm(64))."""
    return nn.ModuleList([m for _ in range(100) for m in (nn.Linear(64, 64), nn.LayerNorm(64))])


MODELS = {"lstm-lm": lstm_lm, "small-layers": small_layers}
OPTIMIZERS = {
    "sgd": (optim.SGD, "SGD", dict(lr=1e-3, momentum=0.9, weight_decay=1e-4)),
    "adamw": (optim.AdamW, "AdamW", dict(lr=1e-3, weight_decay=1e-2)),
}


def candidates(model_name, opt_name, dtype, device, rng):
    """{name: step function} for unet (fused), its per-parameter path and torch.optim's three."""
    import torch

    ours_cls, torch_name, options = OPTIMIZERS[opt_name]
    model = MODELS[model_name]().to(dtype)
    tdevice = "cuda" if device == "cuda" else "cpu"
    fns = {}
    values = [p.numpy() for p in model.parameters()]
    grads = [rng.standard_normal(v.shape).astype(dtype) for v in values]
    for name, fused in [("unet", True), ("per-param", False)]:
        params = [nn.Parameter(unet.tensor(v, device=tdevice).data) for v in values]
        for p, g in zip(params, grads):
            p.grad = unet.tensor(g, device=tdevice)
        fns[name] = ours_cls(params, **options, fused=fused).step
    for name, flags in [("torch-for", dict(foreach=False)), ("torch-foreach", dict(foreach=True)),
                        ("torch-fused", dict(fused=True))]:
        params = [torch.tensor(v, device=tdevice, requires_grad=True) for v in values]
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, device=tdevice)
        try:
            fns[name] = getattr(torch.optim, torch_name)(params, **options, **flags).step
        except (RuntimeError, ValueError) as e:  # e.g. no fused kernel for this dtype/device
            print(f"# {name} unavailable: {e}", file=sys.stderr)
    sync = device_sync(device)

    return fns, sync, sum(v.size for v in values), len(values)


def run(device, dtype, repeats, warmup):
    rng = np.random.default_rng(0)
    results = []
    for model_name in MODELS:
        for opt_name in OPTIMIZERS:
            fns, sync, numel, tensors = candidates(model_name, opt_name, dtype, device, rng)
            results.append({
                "model": model_name, "optimizer": opt_name, "parameters": int(numel), "tensors": tensors,
                **time_against_peers(fns, repeats, warmup, sync),
            })
            print_row(results[-1], header=len(results) == 1)
    return results


def print_row(r, header=False):
    peers = [name for name in r["time_s"] if name != "unet"]
    if header:
        print(f"{'model':>13} {'optim':>6} {'params':>9} {'tensors':>7} {'unet ms':>9}" + peer_header(peers),
              flush=True)
    print(f"{r['model']:>13} {r['optimizer']:>6} {r['parameters']:>9} {r['tensors']:>7} "
          f"{r['time_s']['unet'] * 1e3:9.3f}" + peer_cells(r, peers, 3), flush=True)


def main(argv=None):
    parser = make_parser(__doc__, repeats=21, warmup=3)
    args = parse_args(parser, argv)
    require_torch("bench_optim")
    results = run(args.device, args.dtype, args.repeats, args.warmup)
    print("ratio = unet fused time / peer time (below 1: the fused step is faster)")
    if args.json:
        info = machine_info(args.device, {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                                          "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                                          "load_average": os.getloadavg()})
        write_report(args.json, "optim", {"kernel": "sgd_step / adam_step (fused optimizer step)"},
                     {"device": args.device, "dtype": args.dtype, "repeats": args.repeats,
                      "warmup": args.warmup}, info, results)


if __name__ == "__main__":
    main()
