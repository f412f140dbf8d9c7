"""CTC loss: unet.functional.ctc_loss on the CTC kernels against torch.nn.functional.ctc_loss in
the same run.

log_probs (T, N, C) is a leaf holding log_softmax output (float32, ``--dtype``); targets are
padded (N, S) with lengths drawn in [S/2, S] and input lengths in [3T/4, T]. Two passes:
"fwd" (the losses, under no_grad) and "fwd+bwd" (the summed loss, then backward into
log_probs). CPU peer: torch's native CPU kernel; CUDA peer (``--device cuda``): torch on the
GPU (cuDNN's CTC where torch picks it). Each time is the median of --repeats calls after
--warmup calls, the device synchronised after each call on a GPU. "ratio" is unet's time
over torch's (below 1: unet is faster).

    python benchmarks/bench_ctc.py [--device cpu|cuda] [--dtype float32] [--json PATH]

Shapes are speech-sized: T = 150-500 frames, N = 16-64 utterances, C = 29 (characters) or
100 (a small subword vocabulary), S = 20-100 labels. Run it alone: timings on a loaded
machine are meaningless (or set OMP_WAIT_POLICY=passive, or OMP_NUM_THREADS=1 for both).
"""
import os

import numpy as np
from harness import (device_sync, machine_info, make_parser, parse_args, peer_cells, peer_header,
                     require_torch, time_against_peers, write_report)

import unet
import unet.functional as F

# (T, N, C, S)
SHAPES = [(150, 16, 29, 20), (300, 32, 29, 50), (500, 64, 29, 100), (300, 32, 100, 50), (500, 16, 100, 100)]


def case(T, N, C, S, dtype, rng):
    logits = rng.standard_normal((T, N, C))
    log_probs = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(dtype)
    targets = rng.integers(1, C, (N, S))
    target_lengths = rng.integers(S // 2, S + 1, N)
    input_lengths = rng.integers(3 * T // 4, T + 1, N)
    return log_probs, targets, input_lengths, target_lengths


def candidates(log_probs, targets, input_lengths, target_lengths, device):
    import torch

    udev = "cuda" if device == "cuda" else "cpu"
    lp_u = unet.tensor(log_probs, device=udev, requires_grad=True)
    lp_t = torch.tensor(log_probs, device=udev, requires_grad=True)
    tg_t = torch.tensor(targets, device=udev)
    il_t, tl_t = torch.tensor(input_lengths), torch.tensor(target_lengths)

    def unet_fwd():
        with unet.no_grad():
            F.ctc_loss(lp_u, targets, input_lengths, target_lengths, reduction="none")

    def unet_train():
        lp_u.grad = None
        F.ctc_loss(lp_u, targets, input_lengths, target_lengths, reduction="sum").backward()

    def torch_fwd():
        with torch.no_grad():
            torch.nn.functional.ctc_loss(lp_t, tg_t, il_t, tl_t, reduction="none")

    def torch_train():
        lp_t.grad = None
        torch.nn.functional.ctc_loss(lp_t, tg_t, il_t, tl_t, reduction="sum").backward()

    sync = device_sync(device)

    return {"fwd": {"unet": unet_fwd, "torch": torch_fwd},
            "fwd+bwd": {"unet": unet_train, "torch": torch_train}}, sync


def run(device, dtype, repeats, warmup):
    rng = np.random.default_rng(0)
    results = []
    for T, N, C, S in SHAPES:
        fns, sync = candidates(*case(T, N, C, S, dtype, rng), device)
        for pass_name, impls in fns.items():
            results.append({"T": T, "N": N, "C": C, "S": S, "pass": pass_name,
                            **time_against_peers(impls, repeats, warmup, sync)})
            print_row(results[-1], header=len(results) == 1)
    return results


def print_row(r, header=False):
    peers = [name for name in r["time_s"] if name != "unet"]
    if header:
        print(f"{'T':>5} {'N':>4} {'C':>4} {'S':>4} {'pass':>8} {'unet ms':>10}" + peer_header(peers), flush=True)
    print(f"{r['T']:>5} {r['N']:>4} {r['C']:>4} {r['S']:>4} {r['pass']:>8} {r['time_s']['unet'] * 1e3:10.2f}"
          + peer_cells(r, peers, 2), flush=True)


def main(argv=None):
    parser = make_parser(__doc__, repeats=7, warmup=2)
    args = parse_args(parser, argv)
    require_torch("bench_ctc")

    results = run(args.device, args.dtype, args.repeats, args.warmup)
    print("ratio = unet time / torch time (below 1: unet faster)")
    if args.json:
        write_report(args.json, "ctc", {"kernel": "ctc_loss (losses; fwd+bwd: with the gradient)"},
                     {"device": args.device, "dtype": args.dtype, "repeats": args.repeats, "warmup": args.warmup},
                     machine_info(args.device, {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                                                "load_average": os.getloadavg()}),
                     results)


if __name__ == "__main__":
    main()
