"""Recurrent layers (LSTM, GRU, RNN): unet.nn on the fused whole-sequence kernels against
torch.nn in the same run.

One layer, one direction, time-major float32 (``--dtype``), whole sequences. Two passes:
"fwd" (inference, under no_grad) and "fwd+bwd" (training: forward, then backward of the
output with a fixed gradient into x, h0 and every parameter). CPU peer: torch.nn.LSTM/GRU/RNN
(oneDNN/ATen); CUDA peer (``--device cuda``, needs CuPy and a CUDA build of torch): the same
modules on cuDNN. Each time is the median of --repeats calls after --warmup calls, on the
wall clock, with the device synchronised after each call on a GPU. "ratio" is unet's time
over torch's (below 1: unet is faster).

    python benchmarks/bench_rnn.py [--device cpu|cuda] [--dtype float32] [--amp bf16|fp16] [--full] [--json PATH]

The default shapes finish in a few minutes on two cores; ``--full`` adds larger CPU ones;
the GPU-only ones run with ``--device cuda`` (all tiers). Timings on a loaded machine are
meaningless (spinning OpenMP threads, unet's and torch's, stall when their cores are
taken): run it alone, or on a shared machine set OMP_WAIT_POLICY=passive, or compare one
core each with OMP_NUM_THREADS=1 (both libraries obey both).
"""
import os

import numpy as np
from harness import (add_amp_option, autocasts, device_sync, machine_info, make_parser, parse_args, peer_cells, peer_header,
                     require_torch, time_against_peers, write_report)

import unet
from unet import nn

# (cell, hidden, input, batch, steps, source, tier); tier "default" always runs, "full" with
# --full or on a GPU, "gpu" on a GPU only. DeepBench rows are from /work/shared/deepbench/
# rnn_train.csv (Baidu DeepBench, Apache-2.0; columns cell,hidden,input,batch,timesteps,
# application; "vanilla" is a tanh RNN), copied here because that folder is not shipped.
SHAPES = [
    ("lstm", 512, 512, 16, 25, "rnn_train.csv line 14: lstm,512,512,16,25,Machine Translation", "default"),
    ("lstm", 1024, 1024, 16, 25, "rnn_train.csv line 18: lstm,1024,1024,16,25,Machine Translation", "default"),
    ("lstm", 256, 256, 32, 150, "rnn_train.csv line 34: lstm,256,256,32,150,Character Language Modelling",
     "default"),
    ("gru", 512, 512, 32, 1, "rnn_train.csv line 52: gru,512,512,32,1,DeepSpeech", "default"),
    ("rnn_tanh", 1760, 1760, 16, 50, "rnn_train.csv line 2: vanilla,1760,1760,16,50,DeepSpeech", "full"),
    ("lstm", 2048, 2048, 16, 25, "rnn_train.csv line 22: lstm,2048,2048,16,25,Machine Translation", "full"),
    ("lstm", 1536, 1536, 16, 50, "rnn_train.csv line 31: lstm,1536,1536,16,50,Language Modelling", "gpu"),
    ("lstm", 4096, 4096, 64, 25, "rnn_train.csv line 28: lstm,4096,4096,64,25,Language Modelling", "gpu"),
    ("gru", 1536, 1536, 32, 187, "rnn_train.csv line 47: gru,1536,1536,32,187,DeepSpeech", "gpu"),
    ("gru", 1024, 1024, 32, 1500, "rnn_train.csv line 53: gru,1024,1024,32,1500,Speaker ID", "gpu"),
    ("gru", 2816, 2816, 32, 375, "rnn_train.csv line 38: gru,2816,2816,32,375,DeepSpeech", "gpu"),
]
# NLP-typical shapes (not from DeepBench), each for LSTM and GRU: a single sequence
# (latency), small and medium batches of sentences, and large GPU-sized layers.
for _cell in ("lstm", "gru"):
    SHAPES += [
        (_cell, 256, 256, 1, 100, "NLP: one sequence, 100 tokens", "default"),
        (_cell, 256, 128, 32, 50, "NLP: batch of 32 sentences", "default"),
        (_cell, 512, 256, 64, 100, "NLP: batch of 64, 100 tokens", "full"),
        (_cell, 1024, 512, 128, 200, "NLP: batch of 128, 200 tokens", "gpu"),
        (_cell, 2048, 1024, 64, 100, "NLP: large layer", "gpu"),
    ]

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def selected_shapes(device, full):
    tiers = {"default", "full", "gpu"} if device == "cuda" else ({"default", "full"} if full else {"default"})
    return [s for s in SHAPES if s[6] in tiers]


def build(cell, hidden, inputs, batch, steps, dtype, device, rng):
    """unet and torch layers with the same weights, and the inputs and output gradient."""
    import torch

    tdtype = getattr(torch, dtype)
    tdevice = "cuda" if device == "cuda" else "cpu"
    if cell == "lstm":
        theirs = torch.nn.LSTM(inputs, hidden)
    elif cell == "gru":
        theirs = torch.nn.GRU(inputs, hidden)
    else:
        theirs = torch.nn.RNN(inputs, hidden, nonlinearity=cell.split("_")[1])
    theirs = theirs.to(device=tdevice, dtype=tdtype)
    ours = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
    ours = ours(inputs, hidden, dtype=dtype) if ours else \
        nn.RNN(inputs, hidden, nonlinearity=cell.split("_")[1], dtype=dtype)
    ours.load_state_dict({k: v.detach().cpu() for k, v in theirs.state_dict().items()})
    if device == "cuda":
        ours.to("cuda")
    x = rng.standard_normal((steps, batch, inputs)).astype(dtype)
    g = rng.standard_normal((steps, batch, hidden)).astype(dtype)
    return ours, theirs, x, g


def candidates(cell, hidden, inputs, batch, steps, dtype, device, rng, amp_dtype=None):
    import torch

    ours, theirs, x, g = build(cell, hidden, inputs, batch, steps, dtype, device, rng)
    udev = "cuda" if device == "cuda" else "cpu"
    xu = unet.tensor(x, device=udev)
    xu_grad = unet.tensor(x, device=udev, requires_grad=True)
    gu = unet.tensor(g, device=udev)
    xt = torch.from_numpy(x).to("cuda" if device == "cuda" else "cpu")
    xt_grad = xt.clone().requires_grad_()
    gt = torch.from_numpy(g).to(xt.device)

    ours_amp, theirs_amp = autocasts(amp_dtype, device)

    def unet_fwd():
        with unet.no_grad(), ours_amp():
            ours(xu)

    def unet_train():
        ours.zero_grad()
        xu_grad.grad = None
        with ours_amp():
            y = ours(xu_grad)[0]
        y.backward(gu)

    def torch_fwd():
        with torch.no_grad(), theirs_amp():
            theirs(xt)

    def torch_train():
        theirs.zero_grad()
        xt_grad.grad = None
        with theirs_amp():
            y = theirs(xt_grad)[0]
        y.backward(gt.to(y.dtype))

    sync = device_sync(device)

    return {"fwd": {"unet": unet_fwd, "torch": torch_fwd},
            "fwd+bwd": {"unet": unet_train, "torch": torch_train}}, sync


def rnn_machine_info(device):
    import torch

    info = machine_info(device, {
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    })
    if device == "cuda":
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def run(device, dtype, repeats, warmup, shapes, amp_dtype=None):
    rng = np.random.default_rng(0)
    results = []
    for cell, hidden, inputs, batch, steps, source, tier in shapes:
        fns, sync = candidates(cell, hidden, inputs, batch, steps, dtype, device, rng, amp_dtype)
        # forward: the input GEMM and the recurrent GEMMs, 2 flops per multiply-add;
        # training counts 3x forward (backward: gradients of the inputs and of the weights)
        fwd_flops = 2.0 * steps * batch * GATES[cell] * hidden * (inputs + hidden)
        for pass_name, impls in fns.items():
            flops = fwd_flops * (1 if pass_name == "fwd" else 3)
            results.append({
                "cell": cell, "hidden": hidden, "input": inputs, "batch": batch, "steps": steps,
                "source": source, "tier": tier, "pass": pass_name,
                **time_against_peers(impls, repeats, warmup, sync, flops=flops),
            })
            print_row(results[-1], header=len(results) == 1)
    return results


def print_row(r, header=False):
    peers = [name for name in r["time_s"] if name != "unet"]
    if header:
        head = f"{'cell':>8} {'H':>5} {'I':>5} {'B':>4} {'T':>5} {'pass':>8} {'unet ms':>10} {'GFLOP/s':>8}"
        head += peer_header(peers)
        print(head, flush=True)
    line = (f"{r['cell']:>8} {r['hidden']:>5} {r['input']:>5} {r['batch']:>4} {r['steps']:>5} {r['pass']:>8} "
            f"{r['time_s']['unet'] * 1e3:10.2f} {r['gflops']['unet']:8.1f}")
    line += peer_cells(r, peers, 2)
    print(line, flush=True)


def main(argv=None):
    parser = make_parser(__doc__, repeats=7, warmup=2)
    parser.add_argument("--full", action="store_true", default=bool(os.environ.get("UNET_BENCH_FULL")),
                        help="add the larger CPU shapes (or set UNET_BENCH_FULL=1, e.g. under run_all.py)")
    add_amp_option(parser)
    args = parse_args(parser, argv)
    require_torch("bench_rnn")

    results = run(args.device, args.dtype, args.repeats, args.warmup, selected_shapes(args.device, args.full),
                  args.amp)
    print("ratio = unet time / torch time (below 1: unet faster)")
    if args.json:
        write_report(args.json, "rnn",
                     {"kernel": "rnn_forward / rnn_backward (one layer, one direction, whole sequence)"},
                     {"device": args.device, "dtype": args.dtype, "amp": args.amp, "repeats": args.repeats,
                      "warmup": args.warmup, "full": args.full},
                     rnn_machine_info(args.device), results)


if __name__ == "__main__":
    main()
