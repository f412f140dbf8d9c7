"""Learning-rate schedules with torch.optim.lr_scheduler's names and semantics.

The constructor records each group's ``initial_lr`` and sets the lr for epoch
0; call ``step()`` after ``optimizer.step()``. Each schedule is the closed form
lr(base_lr, epoch) that torch documents, so a schedule resumed from its
``state_dict()`` (plain numbers, JSON-ready) continues exactly. Unlike torch's
chainable forms, an lr changed by hand is overwritten at the next ``step()``.
"""
from __future__ import annotations

import math
import numbers
from bisect import bisect_right

from .optimizer import Optimizer, check_range


class LRScheduler:
    """Base class: subclasses give ``get_lr()``, the group lrs at ``last_epoch``."""

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected a unet.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"last_epoch: resuming at {last_epoch} needs 'initial_lr' in "
                               f"param_groups[{i}] (load the optimizer's state_dict first)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self) -> list:
        raise NotImplementedError

    def step(self):
        self._set_epoch(self.last_epoch + 1)

    def _set_epoch(self, epoch: int):
        self.last_epoch = epoch
        self._last_lr = [float(lr) for lr in self.get_lr()]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self) -> list:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict):
        self.__dict__.update(state_dict)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        _check_positive_int("step_size", step_size)
        check_range("gamma", gamma)
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 (periodic past T_max)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _check_positive_int("T_max", T_max)
        check_range("eta_min", eta_min)
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        cosine = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * cosine for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Factor going linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` steps, then held.

    Linear warmup is ``LinearLR(opt, start_factor=0.01, total_iters=warmup_steps)``.
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        check_range("start_factor", start_factor, high=1.0)
        if start_factor == 0:  # torch's range is (0, 1]
            raise ValueError("start_factor: expected a finite number in (0, 1], got 0")
        check_range("end_factor", end_factor, high=1.0)
        _check_positive_int("total_iters", total_iters)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        done = min(self.last_epoch, self.total_iters)
        factor = self.start_factor + (self.end_factor - self.start_factor) * done / self.total_iters
        return [base * factor for base in self.base_lrs]


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch); one function, or a list with one per group.

    The functions are code, not state: ``state_dict()`` leaves them out and
    ``load_state_dict()`` keeps the ones given to the constructor.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        groups = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != groups:
                raise ValueError(f"lr_lambda: expected {groups} functions (one per group), "
                                 f"got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * groups
        for i, fn in enumerate(self.lr_lambdas):
            if not callable(fn):
                raise TypeError(f"lr_lambda[{i}]: expected a function of the epoch, got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]

    def state_dict(self):
        state = super().state_dict()
        del state["lr_lambdas"]
        return state


class SequentialLR(LRScheduler):
    """Run ``schedulers[i]`` from ``milestones[i - 1]`` on, each restarted at its own epoch 0."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("schedulers: expected at least one scheduler, got none")
        for i, scheduler in enumerate(schedulers):
            if getattr(scheduler, "optimizer", None) is not optimizer:
                raise ValueError(f"schedulers[{i}]: belongs to another optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"milestones: expected {len(schedulers) - 1} (one fewer than schedulers), "
                             f"got {len(milestones)}")
        if milestones != sorted(milestones) or any(m <= 0 for m in milestones):
            raise ValueError(f"milestones: expected increasing positive epochs, got {milestones}")
        self._schedulers, self._milestones = schedulers, milestones
        super().__init__(optimizer, last_epoch)

    def _set_epoch(self, epoch):
        self.last_epoch = epoch
        index = bisect_right(self._milestones, epoch)
        start = self._milestones[index - 1] if index else 0
        self._schedulers[index]._set_epoch(epoch - start)
        self._last_lr = self._schedulers[index].get_last_lr()

    def state_dict(self):
        state = super().state_dict()
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        for scheduler, saved in zip(self._schedulers, state.pop("_schedulers")):
            scheduler.load_state_dict(saved)
        super().load_state_dict(state)


def warmup_cosine(optimizer, warmup_iters, total_iters, eta_min=0.0, start_factor=None):
    """Linear warmup for ``warmup_iters`` steps, then cosine decay to ``eta_min`` at ``total_iters``.

    The warmup starts at ``start_factor * lr`` (default ``1 / warmup_iters``:
    lr / warmup_iters, 2 lr / warmup_iters, ...) and reaches lr at step ``warmup_iters``.
    """
    _check_positive_int("warmup_iters", warmup_iters)
    if not isinstance(total_iters, numbers.Integral) or total_iters <= warmup_iters:
        raise ValueError(f"total_iters: expected an int > warmup_iters ({warmup_iters}), got {total_iters!r}")
    start_factor = 1.0 / warmup_iters if start_factor is None else start_factor
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_iters)
    decay = CosineAnnealingLR(optimizer, T_max=total_iters - warmup_iters, eta_min=eta_min)
    return SequentialLR(optimizer, [warmup, decay], milestones=[warmup_iters])


def _check_positive_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
