"""LayerNorm-LSTM (and with zoneout) on unet's fused rnn_ln kernel against unet's plain LSTM
kernel and against the same cell composed from PyTorch ops, in the same run.

One layer, one direction, time-major float32, training pass: forward, then backward of the
output with a fixed gradient into x and every parameter ("fwd+bwd"). Rows:
  "ln"          unet nn.LSTM(layer_norm=True)
  "ln+zoneout"  unet nn.LSTM(layer_norm=True, zoneout=0.1) in training (masks drawn per call)
Peers: "plain" unet nn.LSTM (no norm: the cost of the option; goal ratio <= 1.3), and
"torch_composed" the same cell written with torch ops, a Python loop over time
(torch.nn.functional.layer_norm on x W_ih^T, h W_hh^T and c; zoneout masks from torch's
generator). Each time is the median of --repeats calls after --warmup calls; "ratio" is
unet's LN time over the peer's.

    python benchmarks/bench_ln_lstm.py [--repeats 5] [--cpu-time] [--json PATH]

On a shared machine use --cpu-time (one thread each, process CPU seconds), or set
OMP_WAIT_POLICY=passive.
"""
import os
import sys

import numpy as np
from harness import (add_cpu_time_option, clock_for, machine_info, make_parser, parse_args, peer_cells,
                     peer_header, require_torch, time_against_peers, write_report)

import unet
from unet import nn

# (hidden, input, batch, steps, note)
SHAPES = [
    (128, 128, 32, 50, "small LM layer"),
    (256, 256, 32, 50, "NLP: batch of 32 sentences"),
    (512, 512, 16, 25, "rnn_train.csv line 14 (DeepBench MT), LSTM 512"),
]


class TorchLayerNormLSTM:
    """The cell of unet.functional.rnn_ln in torch ops, one step at a time."""

    def __init__(self, torch, params, hidden, zoneout):
        self.torch, self.p, self.hidden, self.zoneout = torch, params, hidden, zoneout

    def __call__(self, x):
        torch, p, H = self.torch, self.p, self.hidden
        ln = torch.nn.functional.layer_norm
        steps, batch, _ = x.shape
        h = x.new_zeros(batch, H)
        c = x.new_zeros(batch, H)
        a_ih = x @ p["weight_ih_l0"].t()
        outs = []
        for t in range(steps):
            pre = (ln(a_ih[t], (4 * H,), p["ln_ih_weight_l0"], p["ln_ih_bias_l0"])
                   + ln(h @ p["weight_hh_l0"].t(), (4 * H,), p["ln_hh_weight_l0"], p["ln_hh_bias_l0"])
                   + p["bias_ih_l0"] + p["bias_hh_l0"])
            i, f, g, o = pre.chunk(4, dim=1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(ln(c_new, (H,), p["ln_c_weight_l0"], p["ln_c_bias_l0"]))
            if self.zoneout:
                keep_h = (torch.rand(batch, H) < self.zoneout).to(x.dtype)
                keep_c = (torch.rand(batch, H) < self.zoneout).to(x.dtype)
                h = keep_h * h + (1 - keep_h) * h_new
                c = keep_c * c + (1 - keep_c) * c_new
            else:
                h, c = h_new, c_new
            outs.append(h)
        return torch.stack(outs)


def candidates(hidden, inputs, batch, steps, zoneout, rng):
    import torch

    ours = nn.LSTM(inputs, hidden, layer_norm=True, zoneout=zoneout).train()
    plain = nn.LSTM(inputs, hidden)
    plain.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("ln_")})
    params = {k: torch.from_numpy(v.numpy().copy()).requires_grad_() for k, v in ours.state_dict().items()}
    composed = TorchLayerNormLSTM(torch, params, hidden, zoneout)
    x = rng.standard_normal((steps, batch, inputs)).astype(np.float32)
    g = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
    xu = unet.tensor(x, requires_grad=True)
    gu = unet.tensor(g)
    xt = torch.from_numpy(x).clone().requires_grad_()
    gt = torch.from_numpy(g)

    def unet_train(model):
        def fn():
            model.zero_grad()
            xu.grad = None
            model(xu)[0].backward(gu)
        return fn

    def torch_train():
        for q in params.values():
            q.grad = None
        xt.grad = None
        composed(xt).backward(gt)

    return {"unet": unet_train(ours), "plain": unet_train(plain), "torch_composed": torch_train}


def run(repeats, warmup, clock):
    rng = np.random.default_rng(0)
    results = []
    for hidden, inputs, batch, steps, note in SHAPES:
        for variant, zoneout in (("ln", 0.0), ("ln+zoneout", 0.1)):
            impls = candidates(hidden, inputs, batch, steps, zoneout, rng)
            results.append({"hidden": hidden, "input": inputs, "batch": batch, "steps": steps, "note": note,
                            "variant": variant, "pass": "fwd+bwd", **time_against_peers(impls, repeats, warmup, clock=clock)})
            print_row(results[-1], header=len(results) == 1)
    return results


def print_row(r, header=False):
    peers = [name for name in r["time_s"] if name != "unet"]
    if header:
        print(f"{'variant':>11} {'H':>5} {'I':>5} {'B':>4} {'T':>5} {'unet ms':>10}" + peer_header(peers), flush=True)
    print(f"{r['variant']:>11} {r['hidden']:>5} {r['input']:>5} {r['batch']:>4} {r['steps']:>5} "
          f"{r['time_s']['unet'] * 1e3:10.2f}" + peer_cells(r, peers, 2), flush=True)


def main(argv=None):
    parser = make_parser(__doc__, repeats=5, warmup=2, dtypes=("float32",))
    add_cpu_time_option(parser)
    args = parse_args(parser, argv)
    if args.device != "cpu":
        sys.exit("bench_ln_lstm: the layer-norm/zoneout kernel runs on the CPU only so far")
    require_torch("bench_ln_lstm")
    clock = clock_for(args, "bench_ln_lstm")
    results = run(args.repeats, args.warmup, clock)
    print("ratio = unet LN-LSTM time / peer time (below 1: unet faster)")
    if args.json:
        write_report(args.json, "ln_lstm",
                     {"kernel": "rnn_ln_forward / rnn_ln_backward (one layer, one direction, whole sequence)"},
                     {"device": "cpu", "dtype": "float32", "repeats": args.repeats, "warmup": args.warmup,
                      "clock": "process CPU time, 1 thread" if args.cpu_time else "wall clock"},
                     machine_info("cpu", {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                                          "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                                          "load_average": os.getloadavg()}), results)


if __name__ == "__main__":
    main()
