"""The ``unet`` command (also ``python -m unet``): one function per subcommand.

    unet info                      what was built, what this machine has
    unet train [--epochs N ...]    train a UNet on a built-in synthetic task

To add a subcommand, write ``add_<name>_parser(subparsers)`` that registers its
arguments and sets ``func=<name>``, a ``<name>(args) -> exit code`` function,
and list the first in ``SUBCOMMANDS``.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .info import info as build_report
from .models import UNet


def info(args) -> int:
    build_report(verbose=True)
    return 0


def add_info_parser(subparsers):
    parser = subparsers.add_parser("info", help="show the build (CUDA architectures, CPU features, "
                                                "OpenMP) and the GPUs and optional packages found")
    parser.set_defaults(func=info)


def sine_delay_task(examples: int, steps: int, delay: int, noise: float, rng: np.random.Generator):
    """Noisy sine waves in, the clean wave ``delay`` steps later out: (examples, steps, 1) each.

    Every example has its own frequency and phase, so the model must denoise,
    track the wave and remember it for ``delay`` steps. The first ``delay``
    target steps are the wave before the input window opens: only the context
    of the whole sequence (the encoder's final state) lets the model infer them.
    """
    t = np.arange(steps + delay)
    freq = rng.uniform(0.15, 0.45, (examples, 1))
    phase = rng.uniform(0, 2 * np.pi, (examples, 1))
    clean = np.sin(freq * t + phase)
    x = clean[:, delay:] + noise * rng.standard_normal((examples, steps))
    y = clean[:, :steps].copy()
    return x[..., None].astype(np.float32), y[..., None].astype(np.float32)


def train(args) -> int:
    rng = np.random.default_rng(args.seed)
    x_train, y_train = sine_delay_task(args.examples, args.steps, args.delay, args.noise, rng)
    x_val, y_val = sine_delay_task(max(args.examples // 4, 1), args.steps, args.delay, args.noise, rng)
    model = UNet(hidden_size=args.hidden_size, seed=args.seed)
    if not args.quiet:
        print(f"task: recover a sine wave from noise (sd {args.noise}) and delay it by {args.delay} steps; "
              f"{args.examples} sequences of {args.steps} steps")
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        validation_data=(x_val, y_val), verbose=not args.quiet)
    if not args.quiet:
        for epoch, (loss, val) in enumerate(zip(history["loss"], history["val_loss"]), 1):
            print(f"epoch {epoch:3d}  loss {loss:.4f}  val_loss {val:.4f}")
    val_mse = history["val_loss"][-1]
    baseline = float(np.mean(y_val ** 2))  # the MSE of always answering 0
    print(f"final: train mse {history['loss'][-1]:.4f}, validation mse {val_mse:.4f} "
          f"(predicting zeros: {baseline:.4f}), R^2 {1 - val_mse / np.var(y_val):.3f}")
    if args.save:
        model.save(args.save)
        print(f"saved to {args.save}")
    return 0


def add_train_parser(subparsers):
    parser = subparsers.add_parser("train", help="train a UNet on a built-in synthetic task "
                                                 "(noisy sine -> clean, delayed sine)")
    parser.add_argument("--epochs", type=_positive(int), default=15)
    parser.add_argument("--batch-size", type=_positive(int), default=32)
    parser.add_argument("--lr", type=_positive(float), default=1e-2)
    parser.add_argument("--hidden-size", type=_positive(int), default=32)
    parser.add_argument("--examples", type=_positive(int), default=512, help="training sequences")
    parser.add_argument("--steps", type=_positive(int), default=24, help="time steps per sequence")
    parser.add_argument("--delay", type=_non_negative(int), default=3, help="steps the output lags the input")
    parser.add_argument("--noise", type=_non_negative(float), default=0.3,
                        help="standard deviation of the input noise")
    parser.add_argument("--seed", type=_non_negative(int), default=0)
    parser.add_argument("--save", metavar="PATH", help="write the trained model (UNet.save) here")
    parser.add_argument("--quiet", action="store_true", help="print the final metrics only")
    parser.set_defaults(func=train)


SUBCOMMANDS = (add_info_parser, add_train_parser)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unet", description="unet: sequence models on C++/CUDA kernels")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OSError as e:  # a path that cannot be written or read: a message, not a traceback
        print(f"unet {args.command}: error: {e}", file=sys.stderr)
        return 1
