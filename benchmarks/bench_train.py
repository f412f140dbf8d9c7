"""Training throughput of whole models: unet against the same model written in PyTorch, same run.

Models (float32, dropout 0, AdamW, gradient-norm clip 1.0, one optimizer step per batch):

* ``seq2seq``: the default model of ``unet train`` (``unet.models.Seq2Seq``: char embeddings
  32, bidirectional LSTM encoder 128 over the lengths, bridge, LSTM decoder 128, Luong
  "general" attention, tanh combine, output layer) on batches of 64 pairs of the built-in
  dates task. Tokens = source + target tokens (with the <eos> the model predicts).
* ``lm``: ``unet.models.LanguageModel``, a 2-layer LSTM (embedding 64, hidden 256, vocabulary
  100) on batches of 32 random texts of 64 tokens. Tokens = predicted tokens (64 + <eos>).

The PyTorch twins have the same layers, sizes and parameter names; they start from unet's
initial weights (copied), and their logits on the first batch are compared ("max_logit_diff")
to show they compute the same thing. Each time is the median over --repeats runs of --steps
training steps after --warmup steps, unet's and torch's runs alternating (device synchronised
on a GPU); "ratio" is unet's time
over torch's (below 1: unet is faster).

    python benchmarks/bench_train.py [--device cpu|cuda] [--full] [--json PATH]

Timings on a loaded machine are meaningless (OpenMP and torch's thread pools both stall
when their cores are taken): run it alone.
"""
import time

import numpy as np
from harness import machine_info, make_parser, parse_args, write_report

import unet
from unet import optim
from unet.data import DataLoader, PairDataset, TextEncoder, dates_task
from unet.models import LanguageModel, Seq2Seq
from unet.models.base import add_bos_eos

CONFIGS = [
    # (name, kind, sizes, tier)
    ("seq2seq dates (unet train default)", "seq2seq", dict(embedding=32, hidden=128, batch=64), "default"),
    ("lm 2-layer LSTM", "lm", dict(vocab=100, embedding=64, hidden=256, layers=2, batch=32, length=64), "default"),
    ("lm 2-layer LSTM, large", "lm", dict(vocab=100, embedding=256, hidden=512, layers=2, batch=64, length=100),
     "full"),
]


# ---------------------------------------------------------------- data

def seq2seq_batches(batch_size, count):
    pairs = PairDataset.from_pairs(dates_task(batch_size * count, seed=0))
    source, target = TextEncoder("char").fit(pairs.sources), TextEncoder("char").fit(pairs.targets)
    loader = DataLoader(pairs.encode(source, target), batch_size, seed=0)
    return list(loader), len(source), len(target)


def lm_batches(vocab, batch, length, count):
    rng = np.random.default_rng(0)
    return [{"text": rng.integers(4, vocab, (batch, length)).astype(np.int64),
             "text_lengths": np.full(batch, length, np.int64)} for _ in range(count)]


def tokens_of(kind, batch):
    if kind == "seq2seq":
        return int(batch["source_lengths"].sum() + batch["target_lengths"].sum() + len(batch["target_lengths"]))
    return int(batch["text_lengths"].sum() + len(batch["text_lengths"]))


# ---------------------------------------------------------------- the PyTorch twins

def torch_models():
    import torch
    from torch import nn

    class TorchSeq2Seq(nn.Module):
        def __init__(self, source_vocab, target_vocab, E, H):
            super().__init__()
            self.H = H
            self.source_embedding = nn.Embedding(source_vocab, E, padding_idx=0)
            self.target_embedding = nn.Embedding(target_vocab, E, padding_idx=0)
            self.encoder = nn.LSTM(E, H, batch_first=True, bidirectional=True)
            self.bridge_h, self.bridge_c = nn.Linear(2 * H, H), nn.Linear(2 * H, H)
            self.memory_projection = nn.Linear(2 * H, H)
            self.decoder = nn.LSTM(E, H, batch_first=True)
            self.attention = nn.Module()
            self.attention.weight = nn.Linear(H, H, bias=False)
            self.combine = nn.Linear(2 * H, H)
            self.output = nn.Linear(H, target_vocab)

        def bridge(self, s, layer):
            B = s.shape[1]
            return torch.tanh(layer(s.reshape(1, 2, B, self.H).permute(0, 2, 1, 3).reshape(1, B, 2 * self.H)))

        def forward(self, source, lengths, inputs):
            x = self.source_embedding(source)
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            outputs, (h, c) = self.encoder(packed)
            outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=source.shape[1])
            state = (self.bridge(h, self.bridge_h), self.bridge(c, self.bridge_c))
            memory = self.memory_projection(outputs)
            keys = self.attention.weight(memory)
            s, _ = self.decoder(self.target_embedding(inputs), state)
            valid = torch.arange(source.shape[1], device=source.device)[None, :] < lengths[:, None]
            scores = (s @ keys.transpose(1, 2)).masked_fill(~valid[:, None, :], float("-inf"))
            context = torch.softmax(scores, dim=-1) @ memory
            return self.output(torch.tanh(self.combine(torch.cat([context, s], dim=-1))))

    class TorchLM(nn.Module):
        def __init__(self, vocab, E, H, layers):
            super().__init__()
            self.embedding = nn.Embedding(vocab, E, padding_idx=0)
            self.rnn = nn.LSTM(E, H, layers, batch_first=True)
            self.output = nn.Linear(H, vocab)

        def forward(self, inputs):
            return self.output(self.rnn(self.embedding(inputs))[0])

    return TorchSeq2Seq, TorchLM


# ---------------------------------------------------------------- one config

def build(kind, sizes, device):
    """(unet step fn, torch step fn, batches, first-batch losses) for one config."""
    import torch
    import torch.nn.functional as TF

    TorchSeq2Seq, TorchLM = torch_models()
    unet.manual_seed(0)
    if kind == "seq2seq":
        batches, sv, tv = seq2seq_batches(sizes["batch"], 8)
        model = Seq2Seq(sv, tv, embedding_dim=sizes["embedding"], hidden_size=sizes["hidden"], dropout=0.0,
                        device=device)
        twin = TorchSeq2Seq(sv, tv, sizes["embedding"], sizes["hidden"])
    else:
        batches = lm_batches(sizes["vocab"], sizes["batch"], sizes["length"], 8)
        model = LanguageModel(sizes["vocab"], embedding_dim=sizes["embedding"], hidden_size=sizes["hidden"],
                              num_layers=sizes["layers"], dropout=0.0, device=device)
        twin = TorchLM(sizes["vocab"], sizes["embedding"], sizes["hidden"], sizes["layers"])
    unet_state = {k: v.numpy() for k, v in model.state_dict().items()}
    twin.load_state_dict({k: torch.from_numpy(unet_state[k].copy()) for k in twin.state_dict()}, strict=True)
    tdev = torch.device("cuda" if device == "cuda" else "cpu")
    twin.to(tdev)

    def torch_inputs(batch):
        if kind == "seq2seq":
            inputs, targets, _ = add_bos_eos(batch["target"], batch["target_lengths"])
            return (torch.from_numpy(batch["source"]).to(tdev), torch.from_numpy(batch["source_lengths"]).to(tdev),
                    torch.from_numpy(inputs).to(tdev)), torch.from_numpy(targets).to(tdev)
        inputs, targets, _ = add_bos_eos(batch["text"], batch["text_lengths"])
        return (torch.from_numpy(inputs).to(tdev),), torch.from_numpy(targets).to(tdev)

    def torch_loss(batch):
        args, targets = torch_inputs(batch)
        logits = twin(*args)
        return TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=0)

    first = batches[0]
    with unet.no_grad():
        if kind == "seq2seq":
            unet_logits = model(first["source"], first["source_lengths"], first["target"], first["target_lengths"])[0]
        else:
            inputs, _, lengths = add_bos_eos(first["text"], first["text_lengths"])
            unet_logits = model(inputs, lengths)[0]
        unet_logits = unet_logits.numpy() if device == "cpu" else unet_logits.data.get()
    with torch.no_grad():
        args, _ = torch_inputs(first)
        torch_logits = twin(*args).cpu().numpy()
        torch_first = float(torch_loss(first))
    with unet.no_grad():
        unet_first = float(model.loss(first).item())
    check = {"first_loss": {"unet": unet_first, "torch": torch_first},
             "max_logit_diff": float(np.abs(unet_logits - torch_logits).max())}

    unet_opt = optim.AdamW(model.parameters(), lr=1e-3)
    unet_params = list(model.parameters())
    torch_opt = torch.optim.AdamW(twin.parameters(), lr=1e-3)

    def unet_step(batch):
        unet_opt.zero_grad()
        model.loss(batch).backward()
        optim.clip_grad_norm_(unet_params, 1.0)
        unet_opt.step()

    def torch_step(batch):
        torch_opt.zero_grad()
        torch_loss(batch).backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0)
        torch_opt.step()

    return unet_step, torch_step, batches, check


def synchronize(device):
    if device == "cuda":
        import cupy
        import torch

        cupy.cuda.get_current_stream().synchronize()
        torch.cuda.synchronize()


def median_times(candidates, batches, steps, repeats, warmup, device):
    """{name: median seconds for ``steps`` training steps} (cycling through ``batches``).

    The candidates' runs alternate, so a burst of load from elsewhere hits both alike.
    """
    for step in candidates.values():
        for i in range(warmup):
            step(batches[i % len(batches)])
    synchronize(device)
    times = {name: [] for name in candidates}
    for r in range(repeats):
        for name, step in candidates.items():
            t0 = time.perf_counter()
            for i in range(steps):
                step(batches[(r * steps + i) % len(batches)])
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def run(device, repeats, warmup, steps, full):
    results = []
    for name, kind, sizes, tier in CONFIGS:
        if tier == "full" and not (full or device == "cuda"):
            continue
        unet_step, torch_step, batches, check = build(kind, sizes, device)
        tokens = np.mean([tokens_of(kind, b) for b in batches]) * steps  # per timed run (batches cycle evenly)
        times = median_times({"unet": unet_step, "torch": torch_step}, batches, steps, repeats, warmup, device)
        results.append({
            "model": name, "kind": kind, "sizes": sizes, "steps": steps,
            "tokens_per_step": tokens / steps,
            "step_ms": {k: t / steps * 1e3 for k, t in times.items()},
            "tokens_per_s": {k: tokens / t for k, t in times.items()},
            "ratio": {"torch": times["unet"] / times["torch"]},
            **check,
        })
    return results


def print_table(results):
    print(f"{'model':<36} {'tok/step':>8} {'unet tok/s':>11} {'unet ms':>8} {'torch tok/s':>12} {'torch ms':>9} "
          f"{'ratio':>6} {'logit diff':>10}")
    for r in results:
        print(f"{r['model']:<36} {r['tokens_per_step']:8.0f} {r['tokens_per_s']['unet']:11.0f} "
              f"{r['step_ms']['unet']:8.1f} {r['tokens_per_s']['torch']:12.0f} {r['step_ms']['torch']:9.1f} "
              f"{r['ratio']['torch']:6.2f} {r['max_logit_diff']:10.1e}")
    print("ratio = unet time / torch time (below 1: unet faster); logit diff: largest |unet - torch| "
          "logit on the first batch, same weights")


# ---------------------------------------------------------------- main

def main(argv=None):
    parser = make_parser(__doc__, repeats=5, warmup=3, dtypes=("float32",), dtype_help="the models train in float32",
                         warmup_help="training steps before timing")
    parser.add_argument("--steps", type=int, default=8, help="training steps per timed run")
    parser.add_argument("--full", action="store_true", help="also a larger language model")
    args = parse_args(parser, argv)
    if args.device == "cuda" and not unet.cuda_available():
        parser.error("--device cuda: no CuPy with a CUDA device here")

    results = run(args.device, args.repeats, args.warmup, args.steps, args.full)
    print_table(results)
    if args.json:
        write_report(args.json, "train",
                     {"what": "training steps (forward, loss, backward, clip, AdamW) of whole models, tokens/s"},
                     {"device": args.device, "dtype": args.dtype, "repeats": args.repeats, "warmup": args.warmup,
                      "steps": args.steps},
                     machine_info(args.device), results)


if __name__ == "__main__":
    main()
