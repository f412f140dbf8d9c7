"""Convolutions: unet.nn.Conv2d / Conv1d on unet's kernels against torch.nn in the same run.

Shapes: the DeepBench training convolutions (benchmarks/deepbench/conv_train.csv, NCHW,
symmetric padding, groups 1) and text-CNN layers (Kim 2014: embeddings of 300, 100 filters
of widths 3, 4 and 5 over sentences of 50-200 words, batches of 32-64; Conv1d with the
embedding as channels). Two passes: "fwd" (inference, under no_grad) and "fwd+bwd"
(training: forward, then backward of a fixed output gradient into the input, weight and
bias). CPU peer: torch.nn.Conv2d/Conv1d (oneDNN/ATen); CUDA peer (``--device cuda``): the
same on cuDNN. Each time is the median of --repeats calls after --warmup calls, with the
device synchronised after each call on a GPU. "ratio" is unet's time over torch's (below
1: unet is faster).

    python benchmarks/bench_conv.py [--device cpu|cuda] [--dtype float32] [--amp bf16|fp16] [--full] [--cpu-time]
                                    [--json PATH]

The default CPU shapes (a DeepBench subset and the text-CNN ones) finish in a few minutes on
two cores; ``--full`` (or a GPU) runs every DeepBench row. Wall-clock timings on a loaded
machine are noise: run alone, or use ``--cpu-time``, which runs both libraries on one thread
and times the process's CPU seconds (what each spends computing, not waiting for a core).
"""
import csv
import os
import time

import numpy as np
from harness import (add_amp_option, add_cpu_time_option, autocasts, clock_for, device_sync, machine_info, make_parser,
                     parse_args, peer_cells, peer_header, require_torch, time_against_peers,
                     write_report)

import unet
from unet import nn

DEEPBENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deepbench", "conv_train.csv")
# conv_train.csv lines (1 = header) of the default CPU subset: each application once or
# twice, a few GFLOP or less per pass.
DEFAULT_LINES = (2, 11, 14, 17, 38, 42, 64, 67, 45)


def deepbench_shapes(full):
    """(N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, source) of conv_train.csv."""
    shapes = []
    with open(DEEPBENCH) as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if not full and line not in DEFAULT_LINES:
                continue
            n, c, h, w, k, r, s, ph, pw, sh, sw = (int(row[key]) for key in list(row)[:11])
            source = f"conv_train.csv line {line}: {row['application']}"
            shapes.append(dict(kind="conv2d", batch=n, in_channels=c, size=(h, w), out_channels=k,
                               kernel=(r, s), padding=(ph, pw), stride=(sh, sw), source=source))
    return shapes


def text_cnn_shapes(full):
    """Kim's text CNN: 300-d embeddings, 100 filters per width."""
    rows = [(32, 50), (64, 100), (64, 200)] + ([(32, 200), (64, 50)] if full else [])
    return [dict(kind="conv1d", batch=b, in_channels=300, size=(length,), out_channels=100, kernel=(width,),
                 padding=(0,), stride=(1,), source=f"text-CNN: width {width}, {length} words, batch {b}")
            for b, length in rows for width in (3, 4, 5)]


def flops(shape):
    """Multiply-adds of one forward pass, times 2."""
    out = [(n + 2 * p - k) // s + 1 for n, p, k, s in zip(shape["size"], shape["padding"], shape["kernel"],
                                                         shape["stride"])]
    return 2.0 * shape["batch"] * shape["out_channels"] * shape["in_channels"] * np.prod(shape["kernel"]) * \
        np.prod(out)


def candidates(shape, dtype, device, rng, amp_dtype=None):
    """unet and torch forward and forward+backward closures; under ``amp_dtype`` ("bf16" or
    "fp16") each library's autocast wraps its forward."""
    import torch

    tdev = "cuda" if device == "cuda" else "cpu"
    conv1d = shape["kind"] == "conv1d"
    theirs = (torch.nn.Conv1d if conv1d else torch.nn.Conv2d)(
        shape["in_channels"], shape["out_channels"], shape["kernel"], shape["stride"], shape["padding"])
    theirs = theirs.to(device=tdev, dtype=getattr(torch, dtype))
    ours = (nn.Conv1d if conv1d else nn.Conv2d)(
        shape["in_channels"], shape["out_channels"], shape["kernel"], shape["stride"], shape["padding"], dtype=dtype)
    ours.load_state_dict({k: v.detach().cpu().numpy() for k, v in theirs.state_dict().items()})
    if device == "cuda":
        ours.to("cuda")
    x = rng.standard_normal((shape["batch"], shape["in_channels"]) + shape["size"]).astype(dtype)
    with torch.no_grad():
        out_shape = theirs(torch.from_numpy(x[:1]).to(tdev)).shape[1:]
    g = rng.standard_normal((shape["batch"],) + tuple(out_shape)).astype(dtype)
    xu, gu = unet.tensor(x, device=tdev), unet.tensor(g, device=tdev)
    xu_grad = unet.tensor(x, device=tdev, requires_grad=True)
    xt, gt = torch.from_numpy(x).to(tdev), torch.from_numpy(g).to(tdev)
    xt_grad = xt.clone().requires_grad_()

    def unet_fwd():
        with unet.no_grad(), ours_amp():
            ours(xu)

    def unet_train():
        ours.zero_grad()
        xu_grad.grad = None
        with ours_amp():
            y = ours(xu_grad)
        y.backward(gu)

    def torch_fwd():
        with torch.no_grad(), theirs_amp():
            theirs(xt)

    def torch_train():
        theirs.zero_grad()
        xt_grad.grad = None
        with theirs_amp():
            y = theirs(xt_grad)
        y.backward(gt.to(y.dtype))

    sync = device_sync(device)
    ours_amp, theirs_amp = autocasts(amp_dtype, device)

    return {"fwd": {"unet": unet_fwd, "torch": torch_fwd},
            "fwd+bwd": {"unet": unet_train, "torch": torch_train}}, sync


def run(device, dtype, repeats, warmup, shapes, clock=time.perf_counter, amp_dtype=None):
    rng = np.random.default_rng(0)
    results = []
    for shape in shapes:
        fns, sync = candidates(shape, dtype, device, rng, amp_dtype)
        for pass_name, impls in fns.items():
            # training: forward, backward-data and backward-weight, each as many flops
            work = flops(shape) * (1 if pass_name == "fwd" else 3)
            results.append({
                **{k: list(v) if isinstance(v, tuple) else v for k, v in shape.items()}, "pass": pass_name,
                **time_against_peers(impls, repeats, warmup, sync, clock, work),
            })
            print_row(results[-1], header=len(results) == 1)
    return results


def print_row(r, header=False):
    peers = [name for name in r["time_s"] if name != "unet"]
    if header:
        print(f"{'N':>3} {'C':>5} {'size':>9} {'K':>5} {'kernel':>6} {'s':>3} {'p':>3} {'pass':>8} "
              f"{'unet ms':>9} {'GFLOP/s':>8}" + peer_header(peers), flush=True)
    size = "x".join(map(str, r["size"]))
    kernel = "x".join(map(str, r["kernel"]))
    print(f"{r['batch']:>3} {r['in_channels']:>5} {size:>9} {r['out_channels']:>5} {kernel:>6} "
          f"{r['stride'][0]:>3} {r['padding'][0]:>3} {r['pass']:>8} {r['time_s']['unet'] * 1e3:9.2f} "
          f"{r['gflops']['unet']:8.1f}" + peer_cells(r, peers, 2), flush=True)


def summary(results):
    """Geometric mean of the ratios per pass and shape family."""
    out = {}
    for kind in ("conv2d", "conv1d"):
        for pass_name in ("fwd", "fwd+bwd"):
            ratios = [r["ratio"]["torch"] for r in results if r["kind"] == kind and r["pass"] == pass_name]
            if ratios:
                out[f"{kind} {pass_name}"] = float(np.exp(np.mean(np.log(ratios))))
    return out


def main(argv=None):
    parser = make_parser(__doc__, repeats=5, warmup=2)
    parser.add_argument("--full", action="store_true", default=bool(os.environ.get("UNET_BENCH_FULL")),
                        help="every DeepBench row and more text-CNN shapes (or set UNET_BENCH_FULL=1)")
    add_amp_option(parser)
    add_cpu_time_option(parser)
    args = parse_args(parser, argv)
    clock = clock_for(args, "bench_conv")
    require_torch("bench_conv")
    full = args.full or args.device == "cuda"
    results = run(args.device, args.dtype, args.repeats, args.warmup,
                  deepbench_shapes(full) + text_cnn_shapes(full), clock, args.amp)
    means = summary(results)
    print("ratio = unet time / torch time (below 1: unet faster); geometric means:",
          ", ".join(f"{k} {v:.2f}" for k, v in means.items()))
    if args.json:
        write_report(args.json, "conv", {"kernel": "conv_forward / conv_backward (nn.Conv2d, nn.Conv1d)"},
                     {"device": args.device, "dtype": args.dtype, "amp": args.amp, "repeats": args.repeats,
                      "warmup": args.warmup,
                      "full": full, "clock": "process CPU time, 1 thread" if args.cpu_time else "wall clock",
                      "geomean_ratio": means},
                     machine_info(args.device, {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                                                "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}),
                     results)


if __name__ == "__main__":
    main()
