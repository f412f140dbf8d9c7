"""The ``unet`` command (also ``python -m unet``): one function per subcommand.

    unet info                      what was built, what this machine has
    unet train [options]           train a task model (default: Seq2Seq on the built-in dates task)
    unet predict --checkpoint DIR  read lines on stdin, write one prediction per line

To add a subcommand, write ``add_<name>_parser(subparsers)`` that registers its
arguments and sets ``func=<name>``, a ``<name>(args) -> exit code`` function,
and list the first in ``SUBCOMMANDS``.

Exit codes: 0 done, 1 a failure while running (training diverged, a file could
not be written), 2 a usage or data mistake (bad option, missing or malformed
file), 130 interrupted by Ctrl-C (after saving the last consistent state).
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time

import numpy as np

from .info import info as build_report

DEFAULT_OUT = os.path.join("runs", "unet-{name}")
CHECKPOINT_NAME = "checkpoint.unet"
EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(Exception):
    """A command line or input the user must change; printed as a message, exit 2."""


def info(args) -> int:
    build_report(verbose=True)
    return 0


def add_info_parser(subparsers):
    parser = subparsers.add_parser("info", help="show the build (CUDA architectures, CPU features, "
                                                "OpenMP) and the GPUs and optional packages found")
    parser.set_defaults(func=info)


def sine_delay_task(examples: int, steps: int, delay: int, noise: float, rng: np.random.Generator):
    """Noisy sine waves in, the clean wave ``delay`` steps later out: (examples, steps, 1) each.

    Data for the feature-sequence ``UNet`` demos and tests. Every example has its
    own frequency and phase, so the model must denoise, track the wave and
    remember it for ``delay`` steps; the first ``delay`` target steps precede the
    input window, so only the context of the whole sequence gives them.
    """
    t = np.arange(steps + delay)
    freq = rng.uniform(0.15, 0.45, (examples, 1))
    phase = rng.uniform(0, 2 * np.pi, (examples, 1))
    clean = np.sin(freq * t + phase)
    x = clean[:, delay:] + noise * rng.standard_normal((examples, steps))
    y = clean[:, :steps].copy()
    return x[..., None].astype(np.float32), y[..., None].astype(np.float32)


# ================================================================= train

# The defaults of `unet train` (argparse's are all None, so an option given on the command
# line can be told from a default: --resume rejects changed settings). Tuned so that the
# no-argument run (Seq2Seq, char level, built-in dates task) passes 95% held-out exact
# match within 3 minutes on 2 CPU cores; see benchmarks/bench_train.py for the speed.
TRAIN_DEFAULTS = {
    "task": "translate", "data": None, "valid": None, "synthetic": "dates", "examples": None,
    "tokenizer": None, "vocab_size": None, "lowercase": False, "max_length": 256,
    "epochs": 6, "batch_size": 64, "lr": 5e-3, "warmup": 0.05, "clip": 1.0, "weight_decay": 0.0,
    "model": "rnn", "embedding": 32, "hidden": 128, "layers": 1, "cell": "lstm", "attention": "general",
    "dropout": 0.0,
    "amp": None, "gpus": None, "seed": 0, "out": None, "resume": False, "overwrite": False,
    "stop_after": None, "no_progress": False, "quiet": False,
}
SYNTHETIC_EXAMPLES = 8000  # pairs generated for the built-in task (10% held out)
# what --resume may change; every other setting is the checkpoint's
RESUME_MAY_CHANGE = {"epochs", "stop_after", "no_progress", "quiet", "resume", "out", "gpus", "overwrite"}

TRAIN_EPILOG = """\
data formats (UTF-8 text, one example a line, blank lines skipped):
  translate  source<TAB>target            e.g.  3 March 1998<TAB>1998-03-03
  classify   text<TAB>label               e.g.  what a great film<TAB>positive
  lm         one text a line              e.g.  Once upon a time there was a king.
  tag        tokens<TAB>tags, both space-separated, one tag per token
                                          e.g.  John lives in Paris<TAB>B-PER O O B-LOC

Without --data, --task translate trains on a built-in synthetic task (--synthetic dates:
written dates -> ISO 8601; numbers: English number words -> digits), generated here,
no download. Without --valid, a seeded 10% of the training data is held out.

Output: OUT/checkpoint.unet (weights, config, vocabularies, optimizer, schedule, RNG state
and data position), rewritten atomically after every epoch and on Ctrl-C. --resume
continues it exactly where it stopped (bitwise equal to an uninterrupted run).

examples:
  unet train                                   # Seq2Seq on dates: ~99% exact match, ~20 s on 2 idle cores
  unet train --task classify --data reviews.tsv --valid dev.tsv --tokenizer word
  unet train --task classify --model textcnn --data reviews.tsv --embedding 128 --dropout 0.5
  unet train --task lm --data lines.txt --layers 2 --hidden 256 --out runs/lm
  unet train --resume --out runs/lm --epochs 20 # go on, planning 20 epochs in all
  echo "3 march 1998" | unet predict --checkpoint runs/unet-dates
"""


def add_train_parser(subparsers):
    d = TRAIN_DEFAULTS
    parser = subparsers.add_parser(
        "train", help="train a task model (default: char-level Seq2Seq with attention on the built-in "
                      "dates task)", epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a translate / classify / lm / tag model on your files or a built-in task; "
                    "print the loss and held-out metrics per epoch and save a checkpoint every epoch.")
    group = parser.add_argument_group("data")
    group.add_argument("--task", choices=("translate", "classify", "lm", "tag"),
                       help=f"what to learn (default: {d['task']})")
    group.add_argument("--data", metavar="PATH", help="training file (formats below); without it, "
                       "--task translate uses the built-in --synthetic task")
    group.add_argument("--valid", metavar="PATH", help="held-out file in the same format (default: a seeded "
                       "10%% of --data)")
    group.add_argument("--synthetic", choices=("dates", "numbers"),
                       help=f"the built-in translation task used without --data (default: {d['synthetic']})")
    group.add_argument("--examples", type=_positive(int), metavar="N",
                       help=f"built-in task: pairs generated (default: {SYNTHETIC_EXAMPLES}); with --data: "
                            "use only the first N examples of each file")
    group.add_argument("--tokenizer", choices=("char", "word", "bpe"),
                       help="default: char for translate and lm, word for classify; tag files come "
                            "split into tokens already (word only)")
    group.add_argument("--vocab-size", type=_positive(int), metavar="N",
                       help="cap the vocabulary (char/word: most frequent kept; bpe: its size, >= 256; "
                            "default: bpe 1000, others uncapped)")
    group.add_argument("--lowercase", action="store_true", default=None, help="lowercase all text first")
    group.add_argument("--max-length", type=_positive(int), metavar="N",
                       help=f"cut longer sequences to N tokens (default: {d['max_length']})")
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=_positive(int), help=f"epochs in all (default: {d['epochs']}); with "
                       "--resume, a new total re-plans the learning-rate schedule")
    group.add_argument("--batch-size", type=_positive(int), metavar="N", help=f"default: {d['batch_size']}")
    group.add_argument("--lr", type=_positive(float), help=f"peak learning rate of AdamW (default: {d['lr']})")
    group.add_argument("--warmup", type=_fraction, metavar="F", help="fraction of the steps spent warming the "
                       f"learning rate up, before its cosine decay to 0 (default: {d['warmup']})")
    group.add_argument("--clip", type=_non_negative(float), help="bound on the global gradient norm, "
                       f"0 for none (default: {d['clip']})")
    group.add_argument("--weight-decay", type=_non_negative(float), help=f"AdamW's (default: {d['weight_decay']})")
    group.add_argument("--seed", type=_non_negative(int), help="seeds the data split, the built-in data, the "
                       f"weights, the batch order and dropout (default: {d['seed']})")
    group = parser.add_argument_group("model")
    group.add_argument("--model", choices=("rnn", "textcnn"),
                       help="classify only: rnn, the recurrent TextClassifier, or textcnn, Kim (2014)'s "
                            f"convolutions of widths 3/4/5 with max-over-time pooling (default: {d['model']})")
    group.add_argument("--embedding", type=_positive(int), metavar="N", help=f"default: {d['embedding']}")
    group.add_argument("--hidden", type=_positive(int), metavar="N",
                       help=f"recurrent layer size (default: {d['hidden']})")
    group.add_argument("--layers", type=_positive(int), metavar="N", help=f"default: {d['layers']}")
    group.add_argument("--cell", choices=("lstm", "gru"), help=f"default: {d['cell']}")
    group.add_argument("--attention", choices=("general", "dot", "additive", "none"),
                       help=f"translate only (default: {d['attention']})")
    group.add_argument("--dropout", type=_probability, help=f"default: {d['dropout']}")
    group = parser.add_argument_group("devices")
    group.add_argument("--gpus", type=_non_negative(int), metavar="N",
                       help="0: CPU; 1: one GPU (needs CuPy); N > 1: N processes, one GPU each, "
                            "data parallel (started through mpiexec); default: a GPU when one is found")
    group.add_argument("--amp", choices=("bf16", "fp16"),
                       help="mixed-precision training: matrix products in bfloat16 or float16 (float16 "
                            "with loss scaling), float32 parameters; on the CPU the 16-bit rounding is "
                            "emulated, so it is for testing, not speed (default: float32)")
    group = parser.add_argument_group("output")
    group.add_argument("--out", metavar="DIR", help="where the checkpoint goes (default: runs/unet-dates for "
                       "the built-in task, runs/unet-TASK otherwise)")
    group.add_argument("--resume", action="store_true", default=None,
                       help="continue the run saved in --out, with its settings and data")
    group.add_argument("--overwrite", action="store_true", default=None,
                       help="start afresh even if --out holds a checkpoint")
    group.add_argument("--stop-after", type=_positive(int), metavar="N",
                       help="stop (saved) after N epochs of this invocation; --resume goes on")
    group.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    group.add_argument("--quiet", action="store_true", default=None,
                       help="no progress bar or per-epoch lines; the summary only")
    parser.set_defaults(func=train)


def train(args) -> int:
    from . import backend
    from .models.trainer import TrainingError, TrainingInterrupted, read_checkpoint
    from .tasks import DataError

    wall0, cpu0 = time.perf_counter(), time.process_time()
    given = {k: v for k, v in vars(args).items() if k in TRAIN_DEFAULTS and v is not None}
    opts = argparse.Namespace(**{**TRAIN_DEFAULTS, **given})
    out = opts.out or DEFAULT_OUT.format(name=_run_name(opts))
    path = os.path.join(out, CHECKPOINT_NAME)
    state = None
    if opts.resume:
        if opts.overwrite:
            raise UsageError("--resume and --overwrite: choose one")
        if not os.path.isfile(path):
            raise UsageError(f"--resume: no checkpoint at {path} (train without --resume first, or "
                             "point --out at the run's directory)")
        state = read_checkpoint(path)
        opts = _resumed_options(state, given, path)
    elif os.path.exists(path) and not opts.overwrite:
        raise UsageError(f"{path} exists: pass --resume to continue that run, --overwrite to start afresh, "
                         "or --out DIR for a new one")
    _check_task_options(opts, given)
    from .distributed.env import launched_by_mpi
    if opts.gpus is not None and opts.gpus > 1 and not launched_by_mpi():
        return _launch_ranks(opts.gpus, args.argv, backend)
    group, device = _join_data_parallel(opts, backend)
    main_rank = group is None or group.rank == 0  # the one that logs and writes checkpoints
    if not main_rank:
        opts.no_progress = True
    say = (lambda *a: None) if opts.quiet or not main_rank else (lambda *a: print(*a, flush=True))

    try:
        data = _prepare_data(opts, state, say)
    except DataError as e:
        raise UsageError(str(e)) from None
    if group is not None:
        data["train"] = _shard(data["train"], group, opts.seed)
    model, trainer, loaders = _prepare_training(opts, data, state, device, path)
    if group is not None:  # its gradient hooks average every backward pass over the ranks
        from .distributed import DistributedDataParallel
        DistributedDataParallel(model)
        say(f"data parallel: {group.world_size} processes ({group.name}), "
            f"{len(data['train'])} training examples each")
    run = _describe_run(opts, model, device, say, path, trainer, loaders[0])
    if main_rank:
        os.makedirs(out, exist_ok=True)

    epochs = opts.epochs if opts.stop_after is None else min(opts.epochs, trainer.epoch + opts.stop_after)
    extra = {"task": opts.task, "args": vars(opts), "encoders": data["encoder_config"], "data": data["sources"]}
    start_epoch = trainer.epoch
    try:
        trainer.fit(loaders[0], loaders[1], epochs, checkpoint=path if main_rank else None, extra=extra,
                    on_epoch_end=lambda t, m: _end_of_epoch(t, m, opts, data, say, run))
    except TrainingInterrupted:
        print(f"\ninterrupted: the last consistent state (epoch {trainer.epoch}, step {trainer.step}) is saved "
              f"in {path}; continue with: unet train --resume --out {out}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except TrainingError as e:
        print(f"unet train: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    if main_rank:
        _summary(opts, trainer, start_epoch, path, out, wall0, cpu0)
    return 0


def _run_name(opts) -> str:
    return opts.synthetic if opts.task == "translate" and opts.data is None else opts.task



def _launch_ranks(gpus, argv, backend) -> int:
    """``unet train --gpus N``: the same command in N processes through mpiexec (each joins in
    ``_join_data_parallel``); the exit status is the launcher's."""
    from .distributed.launch import launch

    found = backend.cupy_module().cuda.runtime.getDeviceCount() if backend.cuda_available() else 0
    if found < gpus:
        raise UsageError(f"--gpus {gpus}: this machine has {found} usable GPU(s) (CuPy with CUDA devices); "
                         "for several machines use unet launch -n N --hostfile FILE -m unet train ...")
    try:
        return launch(gpus, ["-m", "unet", "train", *argv])
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None


def _join_data_parallel(opts, backend):
    """(process group or None, device). Started by mpiexec (``--gpus N``, ``unet launch``, mpirun):
    join the group and take GPU LOCAL_RANK (or the CPU with --gpus 0); else train alone."""
    from .distributed.env import launched_by_mpi

    if not launched_by_mpi():
        return None, _device(opts.gpus, backend)
    from . import distributed

    on_gpu = opts.gpus != 0 and backend.cuda_available()
    group = distributed.init(backend="nccl" if on_gpu else "mpi")
    return group, (f"cuda:{group.local_rank}" if on_gpu else "cpu")


def _shard(dataset, group, seed):
    """This rank's share of the training set: a seeded shuffle dealt out round-robin, padded so
    every rank has as many examples (so as many batches, so the all-reduces pair up)."""
    from .data.datasets import Dataset
    from .distributed import DistributedSampler

    indices = list(DistributedSampler(dataset, group.world_size, group.rank, shuffle=True, seed=seed))
    return Dataset({name: [dataset.column(name)[i] for i in indices] for name in dataset.columns},
                   dataset.sequences)


def _device(gpus, backend) -> str:
    if gpus == 0:
        return "cpu"
    if backend.cuda_available():
        return "cuda"
    if gpus == 1:
        raise UsageError("--gpus 1: no usable GPU (CuPy with a CUDA device) was found; use --gpus 0")
    return "cpu"


def _check_task_options(opts, given):
    if opts.task != "translate" and opts.data is None:
        raise UsageError(f"--task {opts.task} needs --data PATH (the built-in data is for translate only)")
    if opts.data is None and opts.valid is not None:
        raise UsageError("--valid needs --data (the built-in task makes its own held-out set)")
    if opts.task == "tag" and opts.tokenizer not in (None, "word"):
        raise UsageError(f"--tokenizer {opts.tokenizer}: tag files are already split into space-separated "
                         "tokens, one per tag; leave --tokenizer out")
    if opts.task != "classify" and "model" in given:
        raise UsageError(f"--model: only the classify task offers a choice of model (this is --task {opts.task})")
    if opts.model == "textcnn":
        recurrent = [f"--{k}" for k in ("hidden", "layers", "cell") if k in given]
        if recurrent:
            raise UsageError(f"{', '.join(recurrent)}: set the recurrent layers; --model textcnn has none")
    if opts.task != "translate" and "attention" in given:
        raise UsageError(f"--attention: only the translate task has attention (this is --task {opts.task})")
    if opts.data is not None and "synthetic" in given:
        raise UsageError("--synthetic: names a built-in data set, used only without --data")
    if opts.tokenizer == "bpe" and opts.vocab_size is not None and opts.vocab_size < 256:
        raise UsageError(f"--vocab-size {opts.vocab_size}: a byte-level BPE vocabulary holds the 256 bytes "
                         "at least")


def _resumed_options(state, given: dict, path: str):
    extra = state.get("extra") or {}
    saved = extra.get("args")
    if not isinstance(saved, dict) or extra.get("task") not in ("translate", "classify", "lm", "tag"):
        raise UsageError(f"{path}: not written by `unet train` (no saved settings); load it with "
                         "unet.models.trainer.Trainer.load instead")
    changed = []
    for key, value in given.items():
        if key in RESUME_MAY_CHANGE:
            continue
        old = saved.get(key)
        if key in ("data", "valid") and value is not None:
            value = os.path.abspath(value)
        if value != old:
            changed.append(f"--{key.replace('_', '-')} {value} (the run has {old})")
    if changed:
        raise UsageError("--resume keeps the run's settings, but these differ: " + "; ".join(changed)
                         + ". Start a new run with another --out to change them")
    # the run's settings; of those a resumption may change, only the planned epochs carry over
    opts = dict(TRAIN_DEFAULTS, **{k: v for k, v in saved.items() if k not in RESUME_MAY_CHANGE or k == "epochs"})
    opts.update((k, v) for k, v in given.items() if k in RESUME_MAY_CHANGE)
    opts["resume"], opts["overwrite"] = True, False
    return argparse.Namespace(**opts)


def _prepare_data(opts, state, say) -> dict:
    from . import tasks

    task, limit = opts.task, opts.examples
    sources = {}
    if opts.data is None:
        n = opts.examples or SYNTHETIC_EXAMPLES
        if n < 2:
            raise tasks.DataError(f"--examples {n}: the built-in task needs 2 pairs at least (one held out)")
        train, valid = tasks.split(tasks.synthetic_examples(opts.synthetic, n, opts.seed), 0.1, opts.seed)
        sources["train"] = {"synthetic": opts.synthetic, "examples": n, "seed": opts.seed}
        description = (f"built-in {opts.synthetic} task ({'written dates -> ISO 8601' if opts.synthetic == 'dates' else 'number words -> digits'}), "
                       f"{len(train)} training / {len(valid)} held-out pairs")
    else:
        opts.data = os.path.abspath(opts.data)
        examples = tasks.read_examples(task, opts.data, limit)
        sources["train"] = tasks.file_fingerprint(opts.data)
        if opts.valid is None:
            train, valid = tasks.split(examples, 0.1, opts.seed, opts.data)
            held = "a seeded 10% held out"
        else:
            opts.valid = os.path.abspath(opts.valid)
            train, valid = examples, tasks.read_examples(task, opts.valid, limit)
            sources["valid"] = tasks.file_fingerprint(opts.valid)
            held = opts.valid
        description = f"{opts.data}: {len(train)} training / {len(valid)} held-out examples ({held})"
    if state is not None:
        saved = (state.get("extra") or {}).get("data") or {}
        for key, now in sources.items():
            if saved.get(key) != now:
                where = now.get("path", "the built-in data")
                raise tasks.DataError(f"{where}: differs from the data the checkpoint was trained on "
                                      f"({saved.get(key)}); exact resumption needs the same data")
        encoders = tasks.encoders_from_config(state["extra"]["encoders"])
    else:
        tokenizer = opts.tokenizer or tasks.DEFAULT_TOKENIZER[task]
        opts.tokenizer = tokenizer
        encoders = tasks.fit_encoders(task, train, tokenizer, opts.vocab_size, opts.lowercase)
    train_set = tasks.encode(task, train, encoders, opts.max_length, opts.data or "the training data")
    valid_set = tasks.encode(task, valid, encoders, opts.max_length, opts.valid or opts.data or "held-out data")
    say(f"data: {description}; {opts.tokenizer} tokens ({tasks.vocab_sizes(task, encoders)})")
    return {"train": train_set, "valid": valid_set, "valid_examples": valid, "encoders": encoders,
            "encoder_config": tasks.encoders_to_config(encoders), "sources": sources}


def _prepare_training(opts, data, state, device, path):
    from . import backend, optim, tasks
    from .data import DataLoader
    from .models.trainer import Trainer

    backend.manual_seed(opts.seed)  # the weights, then dropout (the batch order has its own seed)
    if state is None:
        model = tasks.build_model(opts.task, data["encoders"], embedding_dim=opts.embedding,
                                  hidden_size=opts.hidden, num_layers=opts.layers, cell=opts.cell,
                                  dropout=opts.dropout, attention=opts.attention, device=device, model=opts.model)
    else:
        model = tasks.model_class(opts.task, opts.model).from_config(dict(state["model"]["config"], device=device))
    train_loader = DataLoader(data["train"], opts.batch_size, shuffle=True, seed=opts.seed)
    valid_loader = DataLoader(data["valid"], max(opts.batch_size, 256), shuffle=False, bucket=True)
    optimizer = optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    total = opts.epochs * len(train_loader)
    warmup = int(round(opts.warmup * total))
    spec = ({"name": "warmup_cosine", "warmup_iters": warmup, "total_iters": total}
            if 0 < warmup < total else {"name": "cosine", "total_iters": total})
    trainer = Trainer(model, optimizer, spec, clip=opts.clip or None, progress=not (opts.quiet or opts.no_progress),
                      amp=opts.amp)
    if state is not None:
        replan = state["scheduler"] is None or state["scheduler"].get("spec") != spec
        trainer.load_state_dict(state, path, load_scheduler=not replan)
    return model, trainer, (train_loader, valid_loader)


def _describe_run(opts, model, device, say, path, trainer, loader) -> dict:
    from . import tasks

    cfg = model.config()
    if "kernel_sizes" in cfg:  # TextCNN
        shape = f"kernel sizes {cfg['kernel_sizes']}, {cfg['num_filters']} maps each, embedding {cfg['embedding_dim']}"
    else:
        shape = f"{cfg.get('cell')}, {cfg.get('num_layers')} layer(s), hidden {cfg.get('hidden_size')}, " \
                f"embedding {cfg.get('embedding_dim')}"
    if opts.task == "translate":
        shape += f", attention {cfg.get('attention')}"
    say(f"model: {type(model).__name__} ({shape}): {tasks.parameter_count(model):,} parameters on {device}")
    say(f"training: {opts.epochs} epochs of {len(loader)} batches of {opts.batch_size}, AdamW lr {opts.lr:g} (warmup {opts.warmup:g}, cosine decay), "
        f"clip {opts.clip:g}, seed {opts.seed}" + (f", mixed precision {opts.amp}" if opts.amp else ""))
    if trainer.epoch or trainer.step:
        say(f"resuming {path} at epoch {trainer.epoch + 1}, step {trainer.step}")
    say(f"checkpoint: {path} (saved after every epoch)")
    return {"start": time.perf_counter()}


def _end_of_epoch(trainer, metrics, opts, data, say, run) -> dict:
    from . import tasks

    more = {}
    bleu = tasks.corpus_bleu(opts.task, trainer.model, data["valid_examples"], data["encoders"])
    if bleu is not None:
        more["valid_bleu"] = bleu
    shown = {**metrics, **more}
    parts = [f"epoch {metrics['epoch']}/{opts.epochs}", f"loss {metrics['train_loss']:.4f}",
             f"held-out loss {shown.get('valid_loss', float('nan')):.4f}"]
    parts += [f"{label} {tasks.format_metric(shown.get('valid_' + key), style)}"
              for key, label, style in tasks.SHOWN[opts.task]]
    parts.append(f"[{time.perf_counter() - run['start']:.0f}s]")
    say("  ".join(parts))
    return more


def _summary(opts, trainer, start_epoch, path, out, wall0, cpu0):
    from . import tasks

    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if trainer.epoch == start_epoch:
        print(f"nothing to do: {path} has finished its {trainer.epoch} epochs (raise --epochs to go on)")
        return
    last = trainer.history[-1]
    key = tasks.HEADLINE[opts.task]
    style = next(s for k, _, s in tasks.SHOWN[opts.task] if k == key)
    label = {"exact_match": "exact match", "accuracy": "accuracy", "perplexity": "perplexity"}[key]
    ran = trainer.epoch - start_epoch
    print(f"done: held-out {label} {tasks.format_metric(last.get('valid_' + key), style)} after "
          f"{trainer.epoch} epochs ({ran} this run) in {wall:.1f} s wall, {cpu:.1f} s CPU")
    print(f"saved {path}")
    if trainer.epoch < opts.epochs:
        print(f"stopped early as asked; continue with: unet train --resume --out {out}")
    print(f"try: unet predict --checkpoint {out}")


# ================================================================= predict

def add_predict_parser(subparsers):
    parser = subparsers.add_parser(
        "predict", help="read lines on stdin, write one prediction per line from a `unet train` checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Each input line is one example, each output line its prediction:
              translate  a source text       -> its translation (greedy, or --beam N)
              classify   a text              -> its label
              tag        space-separated tokens -> space-separated tags, one per token
              lm         a prefix (or empty) -> a sampled continuation (--max-length, --temperature, --top-k)"""),
        epilog="example:  printf '3 March 1998\\nthe 1st of May 2001\\n' | unet predict --checkpoint runs/unet-dates")
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help=f"a `unet train` --out directory (or its {CHECKPOINT_NAME} file)")
    parser.add_argument("--beam", type=_positive(int), metavar="N", help="translate: beam size (default 1: greedy)")
    parser.add_argument("--max-length", type=_positive(int), metavar="N",
                        help="translate/lm: most tokens to write (default: translate 2 x source + 10, lm 100)")
    parser.add_argument("--temperature", type=_positive(float), help="lm: sampling temperature (default 1.0)")
    parser.add_argument("--top-k", type=_positive(int), metavar="K",
                        help="lm: sample among the K most likely tokens (default: all)")
    parser.add_argument("--seed", type=_non_negative(int), default=0,
                        help="lm: line i is sampled with seed + i (default 0)")
    parser.add_argument("--batch-size", type=_positive(int), default=64, metavar="N",
                        help="lines per batch when stdin is not a terminal (default 64)")
    parser.add_argument("--gpus", type=_non_negative(int), metavar="N",
                        help="0: CPU; 1: one GPU; default: a GPU when one is found")
    parser.set_defaults(func=predict)


_PREDICT_OPTIONS = {"beam": ("translate",), "max_length": ("translate", "lm"), "temperature": ("lm",),
                    "top_k": ("lm",)}


def predict(args) -> int:
    from . import backend, tasks
    from .models.trainer import build_model, read_checkpoint

    path = args.checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        raise UsageError(f"--checkpoint: no checkpoint at {path}")
    if args.gpus is not None and args.gpus > 1:
        raise UsageError(f"--gpus {args.gpus}: prediction runs on one device; use --gpus 1 or 0")
    state = read_checkpoint(path)
    extra = state.get("extra") or {}
    task = extra.get("task")
    if task not in tasks.TASKS or "encoders" not in extra:
        raise UsageError(f"{path}: not written by `unet train` (no task and encoders saved with it)")
    for option, allowed in _PREDICT_OPTIONS.items():
        if getattr(args, option) is not None and task not in allowed:
            raise UsageError(f"--{option.replace('_', '-')}: applies to {' and '.join(allowed)} models; "
                             f"{path} holds a {task} model")
    device = _device(args.gpus, backend)
    model = build_model(state, path, device=device)
    encoders = tasks.encoders_from_config(extra["encoders"])
    batch = 1 if sys.stdin.isatty() else args.batch_size
    options = dict(beam_size=args.beam or 1, max_length=args.max_length, temperature=args.temperature or 1.0,
                   top_k=args.top_k)
    done = 0
    for chunk in _line_chunks(sys.stdin, batch):
        outputs = tasks.predict_lines(task, model, encoders, chunk, batch_size=args.batch_size,
                                      seed=args.seed + done, **options)
        sys.stdout.write("".join(line + "\n" for line in outputs))
        sys.stdout.flush()
        done += len(chunk)
    return 0


def _line_chunks(stream, size):
    chunk = []
    for line in stream:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ================================================================= shared

def launch(args) -> int:
    from .distributed.launch import launch as run_ranks

    command = (["-m", args.module] if args.module else []) + args.command_line
    if not command:
        raise UsageError("script: expected a Python script (or -m module) to run: unet launch -n 4 train.py ARGS")
    env = {"UNET_DIST_TIMEOUT": args.timeout} if args.timeout is not None else None
    try:
        return run_ranks(args.nprocs, command, hostfile=args.hostfile, env=env)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None


def add_launch_parser(subparsers):
    parser = subparsers.add_parser(
        "launch", help="run a training script in N processes (data parallel) through mpiexec",
        description="Start N ranks of a script with the MPI launcher installed with unet (mpiexec); "
                    "each calls unet.distributed.init(). Exit status non-zero when any rank fails.",
        epilog="examples:  unet launch -n 4 train.py --epochs 3\n"
               "           unet launch -n 16 --hostfile hosts train.py   (4 nodes x 4 GPUs)\n"
               "           unet launch -n 2 -m unet train --gpus 0        (2 CPU processes)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--nprocs", type=_positive(int), required=True, metavar="N",
                        help="number of processes (one per GPU)")
    parser.add_argument("--hostfile", metavar="FILE", help="hosts to spread the ranks over (MPI hostfile)")
    parser.add_argument("--timeout", type=_positive(float), metavar="S",
                        help="seconds a collective may wait for a silent rank before every rank stops "
                             "(default 180)")
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a module (as python -m) instead of a script")
    parser.add_argument("command_line", nargs=argparse.REMAINDER, metavar="script [args ...]")
    parser.set_defaults(func=launch)


SUBCOMMANDS = (add_info_parser, add_train_parser, add_predict_parser, add_launch_parser)


def _positive(kind):
    return _bounded(kind, lambda v: v > 0, "> 0")


def _non_negative(kind):
    return _bounded(kind, lambda v: v >= 0, ">= 0")


def _bounded(kind, ok, what):
    """An argparse type: ``kind(text)`` that must satisfy ``ok`` (argparse reports the error)."""
    def convert(text):
        value = kind(text)
        if not (ok(value) and np.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'} "
                                             f"{what}, got {text!r}")
        return value
    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def _fraction(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


_fraction.__name__ = "float"
_probability = _fraction


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unet", description="unet: sequence models on C++/CUDA kernels")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]  # after the subcommand: what `unet train --gpus N` hands its N processes
    from .models.trainer import CheckpointError

    try:
        return args.func(args)
    except UsageError as e:
        print(f"unet {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CheckpointError as e:
        print(f"unet {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\nunet {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `unet predict ... | head`: the reader left; not an error
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return 0
    except OSError as e:  # a path that cannot be written or read: a message, not a traceback
        print(f"unet {args.command}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
