"""Training loops shared by the ready models: fit, evaluate and predict over in-memory arrays.

A model here is a ``unet.nn.Module`` with ``forward(x)``, ``loss(output, target)``
(a ``models.losses.Loss``), ``built`` and ``build(input_size)`` for lazily sized
layers, and ``optimizer`` and ``scaler`` attributes that ``fit`` fills (the
GradScaler of float16 training, else None) and checkpoints save. Data are numpy arrays (or CPU
Tensors) whose first axis indexes the examples.
"""
from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np
from tqdm import tqdm

from .. import backend, optim
from ..amp import GradScaler, autocast, resolve_half_dtype
from ..autograd import no_grad
from ..backend import Device
from ..tensor import Tensor

OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def fit(model, X, Y, *, epochs, batch_size, lr, optimizer, shuffle, validation_data, verbose, amp=None) -> dict:
    """Train for ``epochs`` passes over (X, Y); returns ``{"loss": [...], "val_loss": [...]}`` per epoch.

    ``amp`` ("bf16", "fp16" or None): the forward pass and loss under ``unet.amp.autocast``;
    float16 adds loss scaling (a GradScaler kept on the model, so a later fit or a
    checkpoint continues its scale). Validation runs in float32."""
    epochs, batch_size = _positive("epochs", epochs), _positive("batch_size", batch_size)
    amp = amp_dtype(amp)
    X, Y = _examples(X, Y)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data: expected a pair (X, Y), got "
                             f"{type(validation_data).__name__}")
        validation_data = _examples(*validation_data)
    model.train()
    if not model.built:  # the optimizer needs the parameters, which are sized by the data
        model.build(X.shape[-1])
    model.optimizer = make_optimizer(optimizer, model, lr)
    scaler = make_scaler(amp, model.scaler)
    model.scaler = scaler if scaler.is_enabled() else None
    history = {"loss": []} if validation_data is None else {"loss": [], "val_loss": []}
    for epoch in range(epochs):
        with tqdm(total=len(X), desc=f"epoch {epoch + 1}/{epochs}", unit="seq", disable=not verbose,
                  dynamic_ncols=True) as bar:
            total = 0.0
            for seen, index in _batches(len(X), batch_size, shuffle):
                model.zero_grad()
                with autocast_for(amp):
                    loss = model.loss(model.forward(X[index]), Y[index])
                backward_scaled(scaler, loss)
                scaler.step(model.optimizer)
                scaler.update()
                total += float(loss.item()) * len(index)
                bar.update(len(index))
                bar.set_postfix(loss=f"{total / seen:.4g}")
            history["loss"].append(total / len(X))
            if validation_data is not None:
                history["val_loss"].append(evaluate(model, *validation_data, batch_size=batch_size))
                bar.set_postfix(loss=f"{history['loss'][-1]:.4g}", val_loss=f"{history['val_loss'][-1]:.4g}")
    return history


def evaluate(model, X, Y, batch_size: int = 32) -> float:
    """The mean loss over (X, Y) in eval mode, without building a graph."""
    X, Y = _examples(X, Y)
    total = 0.0
    with _eval_mode(model), no_grad():
        for _, index in _batches(len(X), _positive("batch_size", batch_size), shuffle=False):
            total += float(model.loss(model.forward(X[index]), Y[index]).item()) * len(index)
    return total / len(X)


def predict(model, X, batch_size: int = 32) -> np.ndarray:
    """The model's output for X as a numpy array, in eval mode and without a graph.

    A 2-D X is one sequence and gives one output; a 3-D X is a batch, run
    ``batch_size`` sequences at a time.
    """
    X = _array(X, "X")
    batch_size = _positive("batch_size", batch_size)
    with _eval_mode(model), no_grad():
        if X.ndim != 3:
            return _host(model.forward(X))
        return np.concatenate([_host(model.forward(X[index]))
                               for _, index in _batches(len(X), batch_size, shuffle=False)])


def make_optimizer(spec, model, lr):
    """The optimizer ``fit`` steps: an instance as given, or one of kind ``spec`` with learning rate ``lr``.

    A model already holding an optimizer of that kind (from an earlier ``fit``
    or a checkpoint) keeps it, with ``lr`` set, so its moments and step counts
    carry over and a resumed run continues exactly.
    """
    if not isinstance(spec, str):
        if not (hasattr(spec, "step") and hasattr(spec, "param_groups")):
            raise TypeError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or an optimizer instance, "
                            f"got {type(spec).__name__}")
        return spec
    if spec.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or an optimizer instance, "
                         f"got {spec!r}")
    if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
    kind = getattr(optim, OPTIMIZERS[spec.lower()])
    if type(model.optimizer) is kind:
        for group in model.optimizer.param_groups:
            group["lr"] = lr
        return model.optimizer
    return kind(model.parameters(), lr=lr)


def amp_dtype(amp):
    """``amp`` ("bf16", "bfloat16", "fp16", "float16" or None) as its dtype name, or None."""
    return None if amp is None else resolve_half_dtype(amp, "amp").name


def autocast_for(amp):
    """The autocast region of a training step with ``amp_dtype`` ``amp`` (off for None)."""
    return autocast(amp or "bfloat16", enabled=amp is not None)


def make_scaler(amp, scaler=None) -> GradScaler:
    """Loss scaling for float16 (``scaler`` when one is given, to carry its state on), else a disabled one."""
    if amp != "float16":
        return GradScaler(enabled=False)
    return scaler if scaler is not None else GradScaler()


def backward_scaled(scaler: GradScaler, loss) -> None:
    """``scaler.scale(loss).backward()``; with loss scaling on, float16 overflows in the backward pass
    are expected (the scaler skips that step), so numpy is not asked to warn of them."""
    quiet = np.errstate(over="ignore", invalid="ignore") if scaler.is_enabled() else contextlib.nullcontext()
    with quiet:
        scaler.scale(loss).backward()


def optimizer_state(optimizer) -> dict | None:
    """What a checkpoint keeps of an optimizer: its class name and ``state_dict()``."""
    if optimizer is None:
        return None
    return {"type": type(optimizer).__name__, "state": optimizer.state_dict()}


def restore_optimizer(saved: dict, params):
    """Rebuild an optimizer of ``unet.optim`` from ``optimizer_state``'s dict."""
    kind = getattr(optim, saved["type"], None)
    if kind is None:
        raise ValueError(f"optimizer: the checkpoint holds a {saved['type']!r}, which unet.optim "
                         "does not define; rebuild it yourself from the saved state")
    optimizer = kind(params, lr=saved["state"]["param_groups"][0]["lr"])
    optimizer.load_state_dict(saved["state"])
    return optimizer


# ---------------------------------------------------------------- helpers

def _batches(n: int, batch_size: int, shuffle: bool):
    """(examples seen so far, index array) per batch; shuffling draws from unet's seeded CPU generator."""
    order = backend.random_state.generator(Device("cpu")).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        yield start + len(index), index


def _examples(X, Y):
    """X as (examples, time, features), Y with as many examples; one 2-D sequence is a batch of one."""
    X, Y = _array(X, "X"), _array(Y, "Y")
    if X.ndim == 2:
        X, Y = X[None], Y[None]
    if X.ndim != 3 or len(X) == 0:
        raise ValueError(f"X: expected (examples, time, features) or one (time, features) sequence, "
                         f"got shape {X.shape}")
    if Y.ndim == 0 or len(Y) != len(X):
        raise ValueError(f"Y: expected {len(X)} examples (like X), got shape {Y.shape}")
    return X, Y


def _array(data, name):
    if isinstance(data, Tensor):
        if data.device.type != "cpu":
            raise ValueError(f"{name}: on {data.device}; pass data on the CPU (batches move to the "
                             "model's device one at a time)")
        return data.numpy()
    return np.asarray(data)


def _host(output: Tensor) -> np.ndarray:
    return backend.to_device(output.data, Device("cpu"))


def _positive(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
