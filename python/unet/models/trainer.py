"""The generic training loop for the task models: fit, evaluate, checkpoint, resume exactly.

    trainer = Trainer(model, optim.AdamW(model.parameters(), lr=3e-3),
                      scheduler={"name": "warmup_cosine", "warmup_iters": 100, "total_iters": 2000})
    trainer.fit(train_loader, valid_loader, epochs=10, checkpoint="run/checkpoint.unet")
    trainer = Trainer.load("run/checkpoint.unet")          # model, optimizer, schedule, RNG, data position
    trainer.fit(train_loader, valid_loader, epochs=20)     # continues at the saved batch

The model is a task model (``unet.models.base.TaskModel``): ``loss(batch)`` gives a
scalar Tensor with a graph, ``evaluate_batch(batch)`` a dict of additive sums
(``loss_sum``, ``tokens``, ``correct``, ``examples``, ``exact``), and ``config()`` /
``from_config`` rebuild it. Batches are the DataLoader's dicts of numpy arrays.

One step: zero the gradients, ``loss(batch).backward()``, clip the global
gradient norm, ``optimizer.step()``, ``scheduler.step()``. With ``amp`` ("bf16" or
"fp16") the loss is computed under ``unet.amp.autocast`` and, for float16, scaled by a
``GradScaler`` (gradients unscaled before clipping; a step with inf/NaN gradients is
skipped, while the schedule moves on). Evaluation runs in float32. Nothing waits for
the device inside a step: the losses are kept as device scalars and read back
every ``log_every`` steps for the progress bar (and a non-finite check).

A checkpoint is one ``unet.save`` file (temporary file, fsync, rename): the
model's class, config and weights, the optimizer's and scheduler's state, unet's
random state, the training DataLoader's position, the epoch/step counters and
the history, the mixed-precision mode and the GradScaler's state, plus whatever the
caller passes as ``extra`` (encoders, options).
Everything that decides the next update is in it, so training N epochs in one
go and training k, stopping, loading and training the rest give bitwise equal
parameters (on one device with deterministic kernels; on a GPU, dropout draws from CuPy's
generator, whose state ``unet.backend.random_state`` does not save yet). Under
``unet.distributed`` every rank must run ``fit`` (pass ``checkpoint`` only where it is
written): the checkpoint holds each rank's random state and running epoch loss, and a resume
with the same number of ranks gives each its own; ``train_loss`` is the mean over the ranks. Ctrl-C during ``fit``
finishes the running step, saves that consistent state and raises
``TrainingInterrupted``; a second Ctrl-C stops at once.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import signal
import threading

import numpy as np
from tqdm import tqdm

from .. import backend, checkpoint, optim
from ..amp import GradScaler
from ..autograd import no_grad
from ..tensor import Tensor
from .training import _eval_mode, amp_dtype, autocast_for, backward_scaled, make_scaler

FORMAT = "unet.trainer"
VERSION = 1
SCHEDULES = ("warmup_cosine", "cosine", "linear_warmup", "step", "constant")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to change."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``fit`` between two steps; ``checkpoint`` is where that state was saved (or None)."""

    def __init__(self, checkpoint=None):
        super().__init__(checkpoint)
        self.checkpoint = checkpoint


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked: wrong format, or tensors missing or mis-shaped."""


# ---------------------------------------------------------------- metrics

def summarize(sums: dict) -> dict:
    """Metrics from the additive sums of ``evaluate_batch`` (sums over a whole data set).

    ``loss`` is ``loss_sum`` per token (per example when there is no ``tokens``),
    ``perplexity`` its exp (token losses only), ``accuracy`` ``correct`` per token
    (or per example), ``exact_match`` ``exact`` per example. The sums stay in the result.
    """
    out = {key: _as_float(value) for key, value in sums.items()}
    tokens, examples = out.get("tokens"), out.get("examples")
    per = tokens if tokens else examples
    if "loss_sum" in out and per:
        out["loss"] = out["loss_sum"] / per
        if tokens:
            out["perplexity"] = math.exp(min(out["loss"], 700.0))  # exp(710) overflows a double
    if "correct" in out and per:
        out["accuracy"] = out["correct"] / per
    if "exact" in out and examples:
        out["exact_match"] = out["exact"] / examples
    return out


def _as_float(value) -> float:
    if isinstance(value, Tensor):
        value = value.data
    if backend.is_cupy_array(value):
        value = value.get()
    return float(value)


# ---------------------------------------------------------------- schedules

def make_scheduler(optimizer, spec: dict | None):
    """An LR schedule from a JSON-able spec, so a checkpoint can rebuild it.

    ``{"name": "warmup_cosine", "warmup_iters": W, "total_iters": N, "eta_min": 0.0}``,
    ``{"name": "cosine", "total_iters": N, "eta_min": 0.0}``,
    ``{"name": "linear_warmup", "warmup_iters": W}``, ``{"name": "step", "step_size": S, "gamma": 0.1}``,
    ``{"name": "constant"}`` or None (no scheduler). Iterations are optimizer steps.
    """
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("name") not in SCHEDULES:
        raise ValueError(f"scheduler: expected None, an LRScheduler or a dict with 'name' in {SCHEDULES}, "
                         f"got {spec!r:.200}")
    args = {k: v for k, v in spec.items() if k != "name"}
    sched = optim.lr_scheduler
    try:
        if spec["name"] == "warmup_cosine":
            return sched.warmup_cosine(optimizer, **args)
        if spec["name"] == "cosine":
            return sched.CosineAnnealingLR(optimizer, T_max=args.pop("total_iters"), **args)
        if spec["name"] == "linear_warmup":
            return sched.LinearLR(optimizer, start_factor=args.pop("start_factor", None)
                                  or 1.0 / args["warmup_iters"], total_iters=args.pop("warmup_iters"), **args)
        if spec["name"] == "step":
            return sched.StepLR(optimizer, **args)
        return sched.LambdaLR(optimizer, _constant)
    except (TypeError, KeyError) as e:
        raise ValueError(f"scheduler: bad arguments for {spec['name']!r}: {e}") from None


def _constant(epoch):
    return 1.0


# ---------------------------------------------------------------- the trainer

class Trainer:
    """Trains a task model; see the module docstring.

    Arguments:
        model: a TaskModel (already on its device).
        optimizer: a ``unet.optim`` optimizer over the model's parameters.
        scheduler: None, an LRScheduler, or a spec dict for ``make_scheduler``
            (only a spec can be rebuilt by ``Trainer.load`` without passing one).
        clip: the global gradient-norm bound (None or 0: no clipping).
        log_every: steps between reading the loss back (progress bar, NaN check).
        progress: show a tqdm bar (on stderr) while training.
        amp: None (float32), "bf16" or "fp16": mixed-precision training.
        scaler: the ``unet.amp.GradScaler`` to use (default: a new one for "fp16", none otherwise).
    """

    def __init__(self, model, optimizer, scheduler=None, clip: float | None = 1.0, *, log_every: int = 10,
                 progress: bool = True, amp: str | None = None, scaler: GradScaler | None = None):
        if not hasattr(model, "loss") or not hasattr(model, "parameters"):
            raise TypeError(f"model: expected a task model with loss(batch), got {type(model).__name__}")
        if not isinstance(optimizer, optim.Optimizer):
            raise TypeError(f"optimizer: expected a unet.optim optimizer, got {type(optimizer).__name__}")
        if clip is not None and not (isinstance(clip, numbers.Real) and math.isfinite(clip) and clip >= 0):
            raise ValueError(f"clip: expected None or a finite number >= 0, got {clip!r}")
        if isinstance(log_every, bool) or not isinstance(log_every, numbers.Integral) or log_every < 1:
            raise ValueError(f"log_every: expected a positive int, got {log_every!r}")
        self.model, self.optimizer = model, optimizer
        if isinstance(scheduler, dict) or scheduler is None:
            self.scheduler_spec = scheduler
            self.scheduler = make_scheduler(optimizer, scheduler)
        else:
            if getattr(scheduler, "optimizer", None) is not optimizer:
                raise ValueError("scheduler: belongs to another optimizer")
            self.scheduler_spec, self.scheduler = None, scheduler
        self.clip = float(clip) if clip else None
        self.log_every, self.progress = int(log_every), bool(progress)
        if scaler is not None and not isinstance(scaler, GradScaler):
            raise TypeError(f"scaler: expected a unet.amp.GradScaler or None, got {type(scaler).__name__}")
        self.amp = amp_dtype(amp)
        self.scaler = scaler if scaler is not None else make_scaler(self.amp)
        self.epoch = 0           # epochs completed
        self.step = 0            # optimizer steps taken
        self.history = []        # one dict of metrics per completed epoch
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._epoch_loss = [0.0, 0]  # (sum of batch losses read back, their count) in the running epoch
        self._pending = []           # device scalars of losses not yet read back
        self._data_state = None      # a loaded DataLoader position, applied when fit() gets the loader
        self._train_loader = None
        self._interrupted = False
        self.extra = None            # what the loaded checkpoint carried as ``extra``

    # ------------------------------------------------------------ training
    def train_step(self, batch) -> Tensor:
        """One update on ``batch``; returns the loss (a device scalar: reading it syncs)."""
        self.model.train()
        self.optimizer.zero_grad()
        with autocast_for(self.amp):
            loss = self.model.loss(batch)
        backward_scaled(self.scaler, loss)
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            optim.clip_grad_norm_(self._params, self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return loss

    def fit(self, train_loader, valid_loader=None, epochs: int = 1, *, on_epoch_end=None,
            checkpoint=None, extra=None) -> list:
        """Train until ``epochs`` epochs are done in all (a loaded trainer goes on where it stopped).

        After each epoch: evaluate on ``valid_loader`` (metrics prefixed ``valid_``),
        call ``on_epoch_end(trainer, metrics)`` (a dict it returns is merged into the
        metrics), append them to ``history`` and, with ``checkpoint`` (a path), save
        there with ``extra``. Returns ``history``.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
            raise ValueError(f"epochs: expected a non-negative int, got {epochs!r}")
        self._attach(train_loader)
        with self._sigint_deferred():
            while self.epoch < epochs:
                self._train_epoch(train_loader, epochs, checkpoint, extra)
                metrics = {"epoch": self.epoch, "step": self.step, "train_loss": self._train_loss(),
                           "lr": float(self.optimizer.param_groups[0]["lr"])}
                self._epoch_loss = [0.0, 0]
                if valid_loader is not None:
                    metrics.update(("valid_" + k, v) for k, v in self.evaluate(valid_loader).items())
                if on_epoch_end is not None:
                    more = on_epoch_end(self, metrics)
                    if isinstance(more, dict):
                        metrics.update(more)
                self.history.append(metrics)
                self._checkpoint(checkpoint, extra)
                self._stop_if_interrupted(checkpoint, extra)
        return self.history

    def _attach(self, loader):
        if self._data_state is not None:
            loader.load_state_dict(self._data_state)
            self._data_state = None
        elif loader is not self._train_loader and loader.position == 0:
            # a fresh loader: its epoch e's order is a function of (seed, e), so start at ours
            loader.epoch = self.epoch
        self._train_loader = loader

    def _train_epoch(self, loader, epochs, checkpoint, extra):
        start = min(loader.position, len(loader))
        with tqdm(total=len(loader), initial=start, desc=f"epoch {self.epoch + 1}/{epochs}", unit="batch",
                  disable=not self.progress, leave=False, dynamic_ncols=True) as bar:
            if start == len(loader):  # stopped after the epoch's last batch, before closing the epoch
                loader.epoch, loader.position = loader.epoch + 1, 0
            else:
                for batch in loader:
                    loss = self.train_step(batch)
                    self._pending.append(loss.data)
                    if len(self._pending) >= self.log_every:
                        self._read_losses()
                        bar.set_postfix(loss=f"{self._epoch_loss[0] / max(self._epoch_loss[1], 1):.4f}",
                                        refresh=False)
                    bar.update(1)
                    if self._interrupted:
                        break
            self._read_losses()
        self._stop_if_interrupted(checkpoint, extra)
        self.epoch += 1

    def _read_losses(self):
        """Fold the pending device losses into the epoch's sum: one read-back for all of them."""
        if not self._pending:
            return
        xp = backend.array_module(self._pending[0])
        total = float(xp.stack([xp.asarray(l, dtype=np.float64) for l in self._pending]).sum())
        count = len(self._pending)
        self._pending = []
        if not math.isfinite(total):
            raise TrainingError(f"the training loss became {total} by step {self.step}; lower the "
                                "learning rate or the gradient clip, or check the data")
        self._epoch_loss[0] += total
        self._epoch_loss[1] += count

    def evaluate(self, loader) -> dict:
        """``summarize`` of the summed ``evaluate_batch`` over ``loader``, in eval mode, without graphs."""
        sums = {}
        with _eval_mode(self.model), no_grad():
            for batch in loader:
                for key, value in self.model.evaluate_batch(batch).items():
                    value = value.data if isinstance(value, Tensor) else value
                    sums[key] = sums[key] + value if key in sums else value
        return summarize(sums)

    # ------------------------------------------------------------ Ctrl-C
    @contextlib.contextmanager
    def _sigint_deferred(self):
        """While training, the first Ctrl-C only raises a flag checked between steps."""
        self._interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self._interrupted = True
            signal.signal(signal.SIGINT, previous)  # a second Ctrl-C stops at once

        previous = signal.getsignal(signal.SIGINT)
        if previous is None:  # installed outside Python: put Python's default back afterwards
            previous = signal.default_int_handler
        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop_if_interrupted(self, path, extra):
        if not self._interrupted:
            return
        self._interrupted = False
        self._read_losses()
        self._checkpoint(path, extra)
        raise TrainingInterrupted(path)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything exact resumption needs, as a structure ``unet.save`` writes."""
        self._read_losses()
        model = self.model
        loader = self._train_loader
        return {
            "format": FORMAT, "version": VERSION,
            "model": {"class": type(model).__name__,
                      "config": model.config() if hasattr(model, "config") else None,
                      "state": dict(model.state_dict())},
            "optimizer": {"type": type(self.optimizer).__name__, "state": _host(self.optimizer.state_dict())},
            "scheduler": None if self.scheduler is None else
            {"spec": self.scheduler_spec, "type": type(self.scheduler).__name__,
             "state": self.scheduler.state_dict()},
            "scaler": self.scaler.state_dict(),
            "rng": backend.random_state.get_state(),
            "data": loader.state_dict() if loader is not None else self._data_state,
            "trainer": {"epoch": self.epoch, "step": self.step, "clip": self.clip, "amp": self.amp,
                        "epoch_loss": list(self._epoch_loss), "history": self.history},
        }

    def load_state_dict(self, state: dict, source: str = "state", *, load_scheduler: bool = True) -> None:
        """Restore ``state_dict()``: weights (checked first), optimizer, schedule, RNG, counters.

        The data position is applied to the training loader at the next ``fit``
        (or at once, when one is attached). ``source`` names the state in errors.
        ``load_scheduler=False`` keeps this trainer's own schedule (a re-planned one,
        e.g. for more epochs) and moves it to the saved step instead.
        """
        _check_format(state, source)
        load_model_state(self.model, state["model"]["state"], source)
        self.optimizer.load_state_dict(state["optimizer"]["state"])
        saved = state.get("scheduler")
        if not load_scheduler:
            if self.scheduler is not None:
                # the schedules are closed forms of the step: a re-planned one just jumps there
                self.scheduler._set_epoch(int(state["trainer"]["step"]))
        elif (saved is None) != (self.scheduler is None):
            raise CheckpointError(f"{source}: {'has no' if saved is None else 'has a'} learning-rate "
                                  f"schedule, this trainer {'has one' if saved is None else 'has none'}")
        elif saved is not None:
            if saved["type"] != type(self.scheduler).__name__:
                raise CheckpointError(f"{source}: holds a {saved['type']} schedule, this trainer a "
                                      f"{type(self.scheduler).__name__}")
            self.scheduler.load_state_dict(saved["state"])
        if state.get("scaler"):  # {} from a disabled scaler; absent before mixed precision
            self.scaler.load_state_dict(state["scaler"])
        progress = state["trainer"]
        own = _own_progress(state)
        backend.random_state.set_state(own["rng"])
        self.epoch, self.step = int(progress["epoch"]), int(progress["step"])
        self._epoch_loss = [float(own["epoch_loss"][0]), int(own["epoch_loss"][1])]
        self._pending = []
        self.history = list(progress["history"])
        self._data_state = state.get("data")
        if self._train_loader is not None and self._data_state is not None:
            self._attach(self._train_loader)

    def save(self, path, extra=None) -> None:
        """Write ``state_dict()`` plus ``extra`` (JSON-able values and arrays) atomically to ``path``."""
        self._write(path, extra)

    def _checkpoint(self, path, extra):
        """``fit``'s save points, which every rank of a process group reaches (``path`` None on the
        ranks that do not write): the ranks' random states and running epoch losses differ
        (dropout and losses on different shards), so all of them go into the checkpoint and each
        rank resumes with its own."""
        self._read_losses()
        ranks = _every_rank(self._own_progress())
        if path is not None:
            self._write(path, extra, ranks)

    def _own_progress(self) -> dict:
        return {"rng": backend.random_state.get_state(), "epoch_loss": list(self._epoch_loss)}

    def _train_loss(self) -> float:
        """The running epoch's mean training loss, over every rank of a process group."""
        sums = _every_rank(self._epoch_loss) or [self._epoch_loss]
        return sum(total for total, _ in sums) / max(sum(count for _, count in sums), 1)

    def _write(self, path, extra, ranks=None):
        state = self.state_dict()
        state["extra"] = extra
        if ranks is not None:
            state["ranks"] = ranks
        checkpoint.save(state, path)

    @classmethod
    def load(cls, path, model=None, optimizer=None, scheduler=None, *, device=None, **kwargs) -> "Trainer":
        """A trainer restored from the checkpoint at ``path``; ``trainer.extra`` is what was saved with it.

        Left out, the model is rebuilt from its saved class (in ``unet.models``) and
        config and moved to ``device``; the optimizer is rebuilt from its saved type and
        options; the schedule from its saved spec. Pass your own to use them instead
        (their state is loaded from the checkpoint all the same). ``kwargs`` go to
        the constructor (``clip`` and ``amp`` default to the saved ones).
        """
        state = read_checkpoint(path)
        source = str(path)
        if model is None:
            model = build_model(state, source, device)
        if optimizer is None:
            kind = getattr(optim, state["optimizer"]["type"], None)
            if not (isinstance(kind, type) and issubclass(kind, optim.Optimizer)):
                raise CheckpointError(f"{source}: holds an optimizer {state['optimizer']['type']!r} that "
                                      "unet.optim does not define; pass one")
            optimizer = kind(model.parameters(), lr=state["optimizer"]["state"]["param_groups"][0]["lr"])
        if scheduler is None and state.get("scheduler") is not None:
            scheduler = state["scheduler"]["spec"]
            if scheduler is None:
                raise CheckpointError(f"{source}: its {state['scheduler']['type']} schedule was given as an "
                                      "object, not a spec; pass one to rebuild it")
            # the rebuilt schedule must start from the saved initial lr, not the current one
            for group, saved in zip(optimizer.param_groups, state["optimizer"]["state"]["param_groups"]):
                group["lr"] = saved.get("initial_lr", group["lr"])
        kwargs.setdefault("clip", state["trainer"]["clip"])
        kwargs.setdefault("amp", state["trainer"].get("amp"))
        if state.get("scaler") and "scaler" not in kwargs:  # a saved scaler, even one used with bf16
            kwargs["scaler"] = GradScaler()
        trainer = cls(model, optimizer, scheduler, **kwargs)
        trainer.load_state_dict(state, source)
        trainer.extra = state.get("extra")
        return trainer


# ---------------------------------------------------------------- checkpoints

def _process_group():
    from .. import distributed
    return distributed if distributed.is_initialized() and distributed.get_world_size() > 1 else None


def _every_rank(value):
    """Every rank's ``value``, in rank order (None outside a process group of several ranks)."""
    group = _process_group()
    if group is None:
        return None
    values = [None] * group.get_world_size()
    group.all_gather_object(values, value)
    return values


def _own_progress(state: dict) -> dict:
    """This rank's random state and running epoch loss: its own where the checkpoint has one per
    rank of a group this size, else the saved ones (the writer's)."""
    per_rank, group = state.get("ranks"), _process_group()
    if per_rank and group is not None and len(per_rank) == group.get_world_size():
        return per_rank[group.get_rank()]
    return {"rng": state["rng"], "epoch_loss": state["trainer"]["epoch_loss"]}


def read_checkpoint(path) -> dict:
    """The structure of a trainer checkpoint, checked to be one."""
    try:
        state = checkpoint.load(path)
    except (ValueError, FileNotFoundError) as e:  # unet.load names the path
        raise CheckpointError(str(e)) from None
    _check_format(state, str(path))
    return state


def _check_format(state, source: str):
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not a unet training checkpoint (no {FORMAT!r} format mark)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{source}: checkpoint version {state.get('version')!r}; this unet reads "
                              f"version {VERSION}")
    for key in ("model", "optimizer", "rng", "trainer"):
        if key not in state:
            raise CheckpointError(f"{source}: the checkpoint has no {key!r} entry (damaged?)")


def build_model(state: dict, source: str = "checkpoint", device=None):
    """The model a checkpoint describes (class from ``unet.models``, ``from_config``), weights loaded;
    ``device`` overrides the saved one."""
    from .. import models

    saved = state["model"]
    kind = getattr(models, saved["class"], None)
    if not (isinstance(kind, type) and hasattr(kind, "from_config")):
        raise CheckpointError(f"{source}: holds a model of class {saved['class']!r}, which unet.models "
                              "does not define")
    config = dict(saved["config"])
    if device is not None:
        config["device"] = str(device)
    try:
        model = kind.from_config(config)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{source}: its {saved['class']} config cannot build a model: {e}") from e
    load_model_state(model, saved["state"], source)
    return model


def load_model_state(model, saved: dict, source: str = "checkpoint") -> None:
    """Copy saved weights into ``model``; any tensor missing, extra or mis-shaped is an error naming all."""
    own = dict(model.named_parameters())
    own.update(model.named_buffers())
    missing = [name for name in own if name not in saved]
    unexpected = [name for name in saved if name not in own]
    misshaped = [f"{name} (checkpoint {tuple(_shape(saved[name]))}, model {tuple(own[name].shape)})"
                 for name in own if name in saved and tuple(_shape(saved[name])) != tuple(own[name].shape)]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if misshaped:
        problems.append(f"mis-shaped tensors: {', '.join(misshaped)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    if problems:
        raise CheckpointError(f"{source}: the saved weights do not fit the {type(model).__name__} model; "
                              + "; ".join(problems))
    model.load_state_dict(saved)


def _shape(value):
    return value.shape


def _host(value):
    """``value`` with every CuPy array (optimizer moments on a GPU) copied to a numpy one."""
    if backend.is_cupy_array(value):
        return value.get()
    if isinstance(value, dict):
        return {k: _host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_host(v) for v in value)
    return value
