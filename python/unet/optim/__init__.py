"""Optimizers, learning-rate schedules and gradient clipping, with torch.optim's names and semantics.

    opt = unet.optim.AdamW(model.parameters(), lr=3e-4)
    sched = unet.optim.lr_scheduler.warmup_cosine(opt, warmup_iters=100, total_iters=10_000)
    for batch in data:
        opt.zero_grad()
        loss_fn(model(batch)).backward()
        unet.optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
"""
from . import lr_scheduler
from .adam import Adam, AdamW, adam_update
from .clip import clip_grad_norm_, clip_grad_value_
from .fused import unscale_and_check
from .optimizer import Optimizer
from .sgd import SGD, sgd_update

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "sgd_update", "adam_update", "clip_grad_norm_",
           "clip_grad_value_", "lr_scheduler", "unscale_and_check"]
