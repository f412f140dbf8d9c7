"""TaskModel: the protocol every ready NLP model follows, so one trainer and one CLI drive them all.

A task model is an ``nn.Module`` with

    task                     class attribute: "translate", "classify", "lm" or "tag"
    batch_keys               the DataLoader batch entries ``loss``/``evaluate_batch`` read
    config() -> dict         JSON-able constructor arguments (dtype and device included)
    from_config(cfg)         classmethod: ``cls(**cfg)``; with ``load_state_dict`` it rebuilds the model
    loss(batch) -> Tensor    mean cross-entropy over the counted tokens (or examples), with a graph
    evaluate_batch(batch)    additive sums under no_grad, in eval mode: "loss_sum" and the
                             denominators/counts ("tokens", "examples", "correct", "exact", ...)

Batches are what ``unet.data.DataLoader`` yields: dicts of numpy arrays of padded ids
(``<pad>`` = 0) with ``<column>_lengths``. The model copies them to its own device.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import numbers

import numpy as np

from .. import backend, nn
from ..autograd import no_grad
from ..backend import Device, resolve_dtype
from ..data.vocab import BOS_ID, EOS_ID, PAD_ID
from ..tensor import Tensor

CELLS = ("lstm", "gru")


class TaskModel(nn.Module):
    """Base of the ready NLP models (see the module docstring for the protocol)."""

    task: str = ""
    batch_keys: tuple = ()

    def __init__(self, dtype="float32", device="cpu"):
        super().__init__()
        try:
            self.dtype = resolve_dtype(dtype)
        except (TypeError, ValueError) as e:
            raise ValueError(f"dtype: expected a floating-point dtype name, got {dtype!r} ({e})") from None
        if not backend.is_floating(self.dtype):
            raise ValueError(f"dtype: expected a floating-point dtype, got {self.dtype}")
        try:
            self.device = Device(device)
        except (TypeError, ValueError) as e:
            raise ValueError(f"device: expected 'cpu' or 'cuda[:index]', got {device!r} ({e})") from None
        if self.device.type == "cuda" and not backend.cuda_available():
            raise ValueError(f"device: {device!r} needs CuPy and a CUDA GPU; neither was found")
        self._config = {}

    def _finish(self, **config):
        """Record the constructor arguments and move the freshly built layers to the model's device."""
        self._config = config
        if self.device.type != "cpu":
            nn.Module.to(self, str(self.device))

    # ------------------------------------------------------------ protocol
    def config(self) -> dict:
        """The constructor arguments (JSON-able) that rebuild this model, with its current dtype and device."""
        return dict(self._config, dtype=self.dtype.name, device=str(self.device))

    @classmethod
    def from_config(cls, cfg: dict) -> "TaskModel":
        """A new model built from ``config()``'s output (fresh weights: load a state dict into it)."""
        if not isinstance(cfg, dict):
            raise ValueError(f"cfg: expected a dict from config(), got {type(cfg).__name__}")
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(cfg) - accepted)
        if unknown:
            raise ValueError(f"cfg: unexpected keys {unknown} for {cls.__name__} (accepted: {sorted(accepted)})")
        return cls(**cfg)

    def loss(self, batch: dict) -> Tensor:
        raise NotImplementedError

    def evaluate_batch(self, batch: dict) -> dict:
        raise NotImplementedError

    def to(self, *args, **kwargs):
        """``Module.to``, keeping ``dtype``/``device`` (and so ``config()`` and batch conversion) in step."""
        super().to(*args, **kwargs)
        for arg in args + tuple(kwargs.values()):
            if isinstance(arg, Device) or (isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda")):
                self.device = Device(arg)
            elif arg is not None:
                self.dtype = resolve_dtype(arg)
        return self

    # ------------------------------------------------------------ helpers for subclasses
    @contextlib.contextmanager
    def _inference(self):
        """no_grad and eval mode (dropout off), the previous mode restored afterwards."""
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                yield
        finally:
            self.train(was_training)

    def _columns(self, batch, *keys):
        if not isinstance(batch, dict):
            raise ValueError(f"batch: expected a dict of arrays (a DataLoader batch), got {type(batch).__name__}")
        missing = [k for k in keys if k not in batch]
        if missing:
            raise ValueError(f"batch: missing {missing} (a {type(self).__name__} reads {list(keys)}; "
                             f"got {sorted(batch)})")
        return tuple(batch[k] for k in keys)

    def _ids(self, ids, lengths, name: str, vocab_size: int):
        """Host-checked padded ids and lengths: (int64 [B, T] numpy, int64 [B] numpy)."""
        ids = _host(ids)
        if ids.ndim != 2 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"{name}: expected int ids of shape (batch, time), got shape {ids.shape} "
                             f"dtype {ids.dtype}")
        ids = ids.astype(np.int64, copy=False)
        if ids.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one sequence, got shape {ids.shape}")
        if lengths is None:
            lengths = np.full(ids.shape[0], ids.shape[1], np.int64)
        lengths = _host(lengths)
        if lengths.ndim != 1 or lengths.shape[0] != ids.shape[0] or (lengths.size and lengths.dtype.kind not in "iu"):
            raise ValueError(f"{name}_lengths: expected {ids.shape[0]} int lengths, got shape {lengths.shape} "
                             f"dtype {lengths.dtype}")
        lengths = lengths.astype(np.int64, copy=False)
        if (lengths < 0).any() or (lengths > ids.shape[1]).any():
            raise ValueError(f"{name}_lengths: expected lengths in [0, {ids.shape[1]}], got {lengths.tolist()[:8]}")
        valid = ids[_mask(lengths, ids.shape[1])]
        if valid.size and (valid.min() < 0 or valid.max() >= vocab_size):
            bad = valid[(valid < 0) | (valid >= vocab_size)][0]
            raise ValueError(f"{name}: id {int(bad)} is out of range for a vocabulary of {vocab_size}")
        return ids, lengths

    def _device_array(self, array):
        return backend.to_device(np.ascontiguousarray(array), self.device)

    def _tensor(self, array) -> Tensor:
        return Tensor._wrap(self._device_array(array))


# ---------------------------------------------------------------- batch helpers

def _host(array) -> np.ndarray:
    if isinstance(array, Tensor):
        array = array.data
    if backend.is_cupy_array(array):
        array = array.get()
    return np.asarray(array)


def _mask(lengths, width: int) -> np.ndarray:
    return np.arange(width) < np.asarray(lengths)[:, None]


def nonempty(ids: np.ndarray, lengths: np.ndarray):
    """A recurrent layer needs at least one step per sequence: an empty one is read as one <pad>."""
    empty = lengths == 0
    if ids.shape[1] == 0:
        ids = np.full((ids.shape[0], 1), PAD_ID, np.int64)
    elif empty.any():
        ids = ids.copy()
        ids[empty, 0] = PAD_ID  # whatever the padding held
    return ids, np.maximum(lengths, 1)


def add_bos_eos(ids: np.ndarray, lengths: np.ndarray):
    """Teacher-forcing pairs for a padded batch of sequences (a <bos>/<eos> already there is kept once).

    Returns ``inputs`` [B, T+1] = <bos> y_1 .. y_n <pad>.., ``targets`` [B, T+1] = y_1 .. y_n <eos> <pad>..,
    and the new lengths n + 1.
    """
    batch, width = ids.shape
    rows = np.arange(batch)
    start = ((lengths > 0) & (ids[:, 0] == BOS_ID)).astype(np.int64) if width else np.zeros(batch, np.int64)
    last = ids[rows, np.clip(lengths - 1, 0, max(width - 1, 0))] if width else np.zeros(batch, np.int64)
    stop = ((lengths - start > 0) & (last == EOS_ID)).astype(np.int64)
    core = lengths - start - stop
    span = int(core.max(initial=0))
    cols = np.arange(span)
    valid = cols < core[:, None]
    source = np.minimum(start[:, None] + cols, max(width - 1, 0))
    body = np.where(valid, ids[rows[:, None], source], PAD_ID) if span else np.zeros((batch, 0), np.int64)
    inputs = np.concatenate([np.full((batch, 1), BOS_ID, np.int64), body], axis=1)
    targets = np.concatenate([body, np.full((batch, 1), PAD_ID, np.int64)], axis=1)
    targets[rows, core] = EOS_ID
    return inputs, targets, core + 1


def strip_bos_eos(ids: np.ndarray, lengths: np.ndarray) -> list:
    """Each sequence's ids as a list, without a leading <bos> or a trailing <eos>."""
    out = []
    for row, n in zip(ids, lengths):
        seq = row[:n].tolist()
        if seq and seq[0] == BOS_ID:
            seq = seq[1:]
        if seq and seq[-1] == EOS_ID:
            seq = seq[:-1]
        out.append(seq)
    return out


def log_probs(logits: Tensor, banned=(PAD_ID, BOS_ID)) -> np.ndarray:
    """float64 host log-softmax of (N, V) logits; the ``banned`` ids (never emitted) get -inf."""
    x = _host(logits.data).astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    x = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    x[:, [b for b in banned if b < x.shape[1]]] = -np.inf
    return x


def index_state(state, index):
    """Select batch rows ``index`` of a recurrent state: h or (h, c), each (layers, batch, size)."""
    if isinstance(state, tuple):
        return tuple(s[:, index] for s in state)
    return state[:, index]


# ---------------------------------------------------------------- argument checks (ValueError naming the argument)

def check_positive(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def check_dropout(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {value!r}")
    return float(value)


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def check_flag(name, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected a bool, got {value!r}")
    return bool(value)


def check_real(name, value, low=-math.inf, low_open=True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < low or (low_open and value == low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return float(value)


def recurrent(cell, input_size, hidden_size, num_layers, dropout, bidirectional=False, dtype=None):
    """nn.LSTM or nn.GRU (batch_first); dropout between stacked layers only when there are some."""
    layer = nn.LSTM if cell == "lstm" else nn.GRU
    return layer(input_size, hidden_size, num_layers, batch_first=True,
                 dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional, dtype=dtype)
