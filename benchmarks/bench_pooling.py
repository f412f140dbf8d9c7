"""Pooling, interpolation and batch normalisation: unet.functional against torch.nn.functional
in the same run.

These ops are array-module code (numpy on the CPU, CuPy on a GPU), not hand-written kernels;
the benchmark shows what that costs next to torch's native kernels. Shapes: an image CNN's
feature maps (ResNet-like 56x56 and 28x28 levels) and a text CNN's (100 maps over 200 words,
pooled over time). Two passes: "fwd" (under no_grad) and "fwd+bwd" (forward, then backward of
a fixed output gradient into the input). Each time is the median of --repeats calls after
--warmup calls, synchronised after each call on a GPU. "ratio" is unet's time over torch's
(below 1: unet is faster).

    python benchmarks/bench_pooling.py [--device cpu|cuda] [--dtype float32] [--cpu-time] [--json PATH]

Wall-clock timings on a loaded machine are noise: run alone, or use ``--cpu-time`` (one
thread each, process CPU seconds).
"""
import os
import time

import numpy as np
from harness import (add_cpu_time_option, clock_for, device_sync, machine_info, make_parser,
                     parse_args, peer_cells, peer_header, require_torch, time_against_peers,
                     write_report)

import unet
import unet.functional as F

# (name, input shape, call): call(functional module, x) runs the op through unet.functional or torch's
CASES = [
    ("max_pool2d 2", (16, 64, 56, 56), lambda f, x: f.max_pool2d(x, 2)),
    ("max_pool2d 3/2 pad 1", (16, 64, 56, 56), lambda f, x: f.max_pool2d(x, 3, 2, 1)),
    ("avg_pool2d 3/2 pad 1", (16, 64, 56, 56), lambda f, x: f.avg_pool2d(x, 3, 2, 1)),
    ("adaptive_avg_pool2d 1", (16, 256, 28, 28), lambda f, x: f.adaptive_avg_pool2d(x, 1)),
    ("adaptive_max_pool1d 1", (64, 100, 200), lambda f, x: f.adaptive_max_pool1d(x, 1)),
    ("max_pool1d 2 ceil", (64, 100, 201), lambda f, x: f.max_pool1d(x, 2, ceil_mode=True)),
    ("interpolate bilinear x2", (16, 64, 28, 28),
     lambda f, x: f.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)),
    ("interpolate nearest x2", (16, 64, 28, 28), lambda f, x: f.interpolate(x, scale_factor=2)),
    ("interpolate linear x2", (64, 100, 100),
     lambda f, x: f.interpolate(x, scale_factor=2, mode="linear", align_corners=False)),
    ("batch_norm train", (16, 64, 56, 56), lambda f, x: f.batch_norm(x, None, None, training=True)),
]


def candidates(shape, call, dtype, device, rng):
    import torch
    import torch.nn.functional as TF

    tdev = "cuda" if device == "cuda" else "cpu"
    x = rng.standard_normal(shape).astype(dtype)
    with torch.no_grad():
        out_shape = tuple(call(TF, torch.from_numpy(x).to(tdev)).shape)
    g = rng.standard_normal(out_shape).astype(dtype)
    xu, gu = unet.tensor(x, device=tdev), unet.tensor(g, device=tdev)
    xu_grad = unet.tensor(x, device=tdev, requires_grad=True)
    xt, gt = torch.from_numpy(x).to(tdev), torch.from_numpy(g).to(tdev)
    xt_grad = xt.clone().requires_grad_()

    def unet_fwd():
        with unet.no_grad():
            call(F, xu)

    def unet_train():
        xu_grad.grad = None
        call(F, xu_grad).backward(gu)

    def torch_fwd():
        with torch.no_grad():
            call(TF, xt)

    def torch_train():
        xt_grad.grad = None
        call(TF, xt_grad).backward(gt)

    sync = device_sync(device)

    return {"fwd": {"unet": unet_fwd, "torch": torch_fwd},
            "fwd+bwd": {"unet": unet_train, "torch": torch_train}}, sync


def run(device, dtype, repeats, warmup, clock=time.perf_counter):
    rng = np.random.default_rng(0)
    results = []
    for name, shape, call in CASES:
        fns, sync = candidates(shape, call, dtype, device, rng)
        for pass_name, impls in fns.items():
            results.append({"op": name, "shape": list(shape), "pass": pass_name,
                            **time_against_peers(impls, repeats, warmup, sync, clock)})
            r = results[-1]
            times = r["time_s"]
            if len(results) == 1:
                print(f"{'op':<26} {'input':>18} {'pass':>8} {'unet ms':>9}" + peer_header(["torch"]), flush=True)
            print(f"{name:<26} {'x'.join(map(str, shape)):>18} {pass_name:>8} {times['unet'] * 1e3:9.2f}"
                  + peer_cells(r, ["torch"], 2), flush=True)
    return results


def main(argv=None):
    parser = make_parser(__doc__, repeats=5, warmup=2)
    add_cpu_time_option(parser)
    args = parse_args(parser, argv)
    clock = clock_for(args, "bench_pooling")
    require_torch("bench_pooling")
    results = run(args.device, args.dtype, args.repeats, args.warmup, clock)
    geomean = {p: float(np.exp(np.mean([np.log(r["ratio"]["torch"]) for r in results if r["pass"] == p])))
               for p in ("fwd", "fwd+bwd")}
    print("ratio = unet time / torch time (below 1: unet faster); geometric means:",
          ", ".join(f"{k} {v:.2f}" for k, v in geomean.items()))
    if args.json:
        write_report(args.json, "pooling", {"kernel": "array-module pooling, interpolate, batch_norm (no _C kernel)"},
                     {"device": args.device, "dtype": args.dtype, "repeats": args.repeats, "warmup": args.warmup,
                      "clock": "process CPU time, 1 thread" if args.cpu_time else "wall clock",
                      "geomean_ratio": geomean},
                     machine_info(args.device, {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}),
                     results)


if __name__ == "__main__":
    main()
