"""UNet: the framework's high-level encoder-decoder over sequences."""
from __future__ import annotations

import numbers
import weakref

import numpy as np

from .. import backend, checkpoint, nn
from .. import functional as F
from ..amp import GradScaler
from ..backend import Device, resolve_dtype
from ..tensor import Tensor
from . import training
from .losses import Loss

KINDS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
PLANNED_KINDS = ("cnn",)  # accepted by the design, not built yet: rejected, never faked
_FORMAT = "unet.models.UNet"


class UNet(nn.Module):
    """An encoder that reads a sequence into a vector and a decoder that writes a sequence from it.

    ::

        x (batch, time, input_size)
          -> encoder LSTM(input_size -> hidden_size, num_layers)
                 per-step outputs e (batch, time, hidden_size) and final state (h, c)
          -> dropout on e (training only)
          -> decoder LSTM(hidden_size -> hidden_size, num_layers), started from (h, c), run over e
          -> read-out Linear(hidden_size -> output_size) at every step
          -> y (batch, time, output_size)

    The encoder's final state (h, c) is the pipeline's vector: a summary of the
    whole input. Starting the decoder from it gives every output step the
    context of the entire sequence, later steps included (which one causal LSTM
    could not see), while running the decoder over the encoder's per-step
    outputs keeps the time axis aligned, so the output has as many steps as the
    input. A 2-D input is one unbatched sequence (time, features) and gives a
    2-D output.

    Sizes left out are taken from the first input: the layers are built on the
    first ``forward`` (or ``fit``), so ``parameters()`` is empty until then
    unless ``input_size`` is given. Numpy input of any real dtype is cast to the
    model's ``dtype``; Tensors must already be on the model's ``device``.

    Arguments:
        input_size, output_size: features in and out (output defaults to input).
        hidden_size, num_layers: size and depth of the encoder and decoder.
        encoder, decoder: layer kinds; "lstm" for now ("gru", "rnn", "cnn" are planned).
        dropout: on the encoder's outputs and between stacked layers, in training.
        loss: "mse", "cross_entropy" (integer targets shaped like the output
            without its class axis), "bce_with_logits", or a callable(output, target).
        dtype, device: of the parameters and computations.
        seed: if given, unet's generator is seeded with it (``unet.manual_seed``)
            just before the layers are built, so the initial weights, and the
            dropout and ``fit`` shuffling that follow, are reproducible.

    Training: ``backward(output, target)`` adds the loss's gradients to the
    parameters' ``.grad`` (accumulating, as in torch, until ``zero_grad()``) and
    returns the loss; ``fit`` runs the whole loop; ``save``/``load`` keep the
    config, weights, optimizer state and RNG state in one checkpoint file.
    """

    def __init__(self, input_size=None, output_size=None, hidden_size=32, num_layers=1,
                 encoder="lstm", decoder="lstm", dropout=0.0, loss="mse", dtype="float32",
                 device="cpu", seed=None):
        super().__init__()
        self.input_size = _optional_size("input_size", input_size)
        self.output_size = _optional_size("output_size", output_size)
        self.hidden_size = _size("hidden_size", hidden_size)
        self.num_layers = _size("num_layers", num_layers)
        self.encoder_kind = _kind("encoder", encoder)
        self.decoder_kind = _kind("decoder", decoder)
        if not (isinstance(dropout, numbers.Real) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.loss = Loss(loss)
        self.dtype = resolve_dtype(dtype)
        if not backend.is_floating(self.dtype):
            raise TypeError(f"dtype: expected a floating-point dtype, got {self.dtype}")
        self.device = Device(device)
        if self.device.type == "cuda":
            backend.require_cupy()
        self.seed = _seed(seed)
        self.optimizer = None  # set by fit() or load(); saved with the model
        self.scaler = None     # the GradScaler of fit(amp="fp16"); saved with the model
        self._outputs = weakref.WeakValueDictionary()  # id -> output of forward(), for backward()'s check
        if self.input_size is not None:
            self.build(self.input_size)

    # ------------------------------------------------------------ layers
    @property
    def built(self) -> bool:
        return "readout" in self._modules

    def build(self, input_size: int):
        """Create the layers for inputs of ``input_size`` features (``forward`` does it when needed)."""
        if self.built:
            raise RuntimeError(f"build: the layers exist already (input_size={self.input_size})")
        self.input_size = _size("input_size", input_size)
        self.output_size = self.output_size or self.input_size
        if self.seed is not None:  # here, not in __init__: lazily built models must not depend on build order
            backend.manual_seed(self.seed)
        dtype = self.dtype.name
        between = self.dropout if self.num_layers > 1 else 0.0  # nn.LSTM warns of dropout it cannot apply
        self.encoder = KINDS[self.encoder_kind](self.input_size, self.hidden_size, self.num_layers,
                                                batch_first=True, dropout=between, dtype=dtype)
        self.decoder = KINDS[self.decoder_kind](self.hidden_size, self.hidden_size, self.num_layers,
                                                batch_first=True, dropout=between, dtype=dtype)
        self.readout = nn.Linear(self.hidden_size, self.output_size, dtype=dtype)
        if self.device.type != "cpu":
            self.to(str(self.device))
        return self

    def to(self, *args, **kwargs):
        """Move/cast the parameters (``Module.to``) and convert later inputs to match."""
        super().to(*args, **kwargs)
        for arg in args + tuple(kwargs.values()):
            if isinstance(arg, Device) or (isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda")):
                self.device = Device(arg)
            else:
                self.dtype = resolve_dtype(arg)
        return self

    # ------------------------------------------------------------ forward and backward
    def forward(self, x) -> Tensor:
        """``x`` (time, features) or (batch, time, features) -> (…, time, output_size), with a graph."""
        x = self._input(x)
        if not self.built:
            self.build(x.shape[-1])
        batched = x.ndim == 3
        if not batched:
            x = x.unsqueeze(0)
        encoded, state = self.encoder(x)
        encoded = F.dropout(encoded, self.dropout, self.training)
        decoded, _ = self.decoder(encoded, self._bridge(state))
        y = self.readout(decoded)
        y = y if batched else y.squeeze(0)
        self._outputs[id(y)] = y
        return y

    def _bridge(self, state):
        """The encoder's final state in the form the decoder takes: an LSTM carries (h, c), GRU/RNN h."""
        h = state[0] if isinstance(state, tuple) else state
        if self.decoder_kind != "lstm":
            return h
        return state if isinstance(state, tuple) else (h, h * 0.0)  # a GRU/RNN encoder has no cell

    def backward(self, output: Tensor, target) -> float:
        """Compute the loss of ``output`` against ``target``, back-propagate it, return it as a float."""
        if not isinstance(output, Tensor) or self._outputs.get(id(output)) is not output:
            raise ValueError("output: expected a Tensor returned by this model's forward(), got "
                             f"{type(output).__name__}")
        if not output.requires_grad:
            raise ValueError("output: has no graph (computed under unet.no_grad() or by predict()); "
                             "call forward() with gradients enabled")
        loss = self.loss(output, target)
        loss.backward()
        return float(loss.item())

    # ------------------------------------------------------------ training loops
    def fit(self, X, Y, epochs=10, batch_size=32, lr=1e-3, optimizer="adam", shuffle=True,
            validation_data=None, verbose=True, amp=None) -> dict:
        """Train on (X, Y) (examples along the first axis); returns the per-epoch ``loss`` (and ``val_loss``).

        ``optimizer`` is "adam", "sgd", "adamw" (created with ``lr``; one of
        the same kind left by an earlier fit or a checkpoint is continued) or
        an optimizer instance over this model's parameters. Shuffling draws
        from unet's seeded generator. ``verbose`` shows a progress bar per epoch.
        ``amp="bf16"`` or ``"fp16"`` trains in mixed precision (``unet.amp.autocast``;
        float16 with loss scaling); the parameters stay float32.
        """
        if not self.built and self.output_size is None:
            self.output_size = self.loss.output_size_for(np.asarray(Y) if not isinstance(Y, Tensor) else Y)
        return training.fit(self, X, Y, epochs=epochs, batch_size=batch_size, lr=lr,
                            optimizer=optimizer, shuffle=shuffle, validation_data=validation_data,
                            verbose=verbose, amp=amp)

    def evaluate(self, X, Y, batch_size=32) -> float:
        """The mean loss on (X, Y), in eval mode, without a graph."""
        return training.evaluate(self, X, Y, batch_size)

    def predict(self, X, batch_size=32) -> np.ndarray:
        """The output for X as a numpy array, in eval mode, without a graph (logits for the CE/BCE losses)."""
        return training.predict(self, X, batch_size)

    # ------------------------------------------------------------ checkpoints
    @property
    def config(self) -> dict:
        """The constructor arguments that rebuild this model (sizes as built; the seed is not kept)."""
        return {"input_size": self.input_size, "output_size": self.output_size,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "encoder": self.encoder_kind, "decoder": self.decoder_kind, "dropout": self.dropout,
                "loss": self.loss.name, "dtype": self.dtype.name, "device": str(self.device)}

    def save(self, path) -> None:
        """Write config, weights, optimizer and loss-scaler state and unet's RNG state to ``path``
        (see ``unet.save``)."""
        checkpoint.save({"format": _FORMAT, "config": self.config, "model": self.state_dict(),
                         "optimizer": training.optimizer_state(self.optimizer),
                         "scaler": None if self.scaler is None else self.scaler.state_dict(),
                         "rng": backend.random_state.get_state()}, path)

    @classmethod
    def load(cls, path, restore_rng=True, **overrides) -> "UNet":
        """Rebuild a model saved by ``save``; ``overrides`` replace saved config entries (e.g. ``device``).

        ``restore_rng`` puts unet's generator back where it was at save time, so
        that ``fit`` continues exactly as the saved run would have (shuffling, dropout).
        """
        state = checkpoint.load(path)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"path: {str(path)!r} holds no UNet checkpoint (write one with UNet.save)")
        config = {**state["config"], **overrides}
        if config["loss"] is None:
            raise ValueError("loss: the model was saved with a custom loss function, which a checkpoint "
                             "cannot hold; pass it again: UNet.load(path, loss=fn)")
        model = cls(**config)
        model.load_state_dict(state["model"])
        if state["optimizer"] is not None:
            model.optimizer = training.restore_optimizer(state["optimizer"], model.parameters())
        if state.get("scaler") is not None:  # absent from checkpoints older than mixed precision
            model.scaler = GradScaler()
            model.scaler.load_state_dict(state["scaler"])
        if restore_rng:
            backend.random_state.set_state(state["rng"])
        return model

    # ------------------------------------------------------------ helpers
    def _input(self, x) -> Tensor:
        """``x`` checked and as a Tensor of the model's dtype on its device."""
        if backend.is_cupy_array(x):
            x = Tensor._wrap(x)
        if isinstance(x, Tensor):
            if x.device != self.device:
                raise ValueError(f"x: on {x.device}, the model on {self.device}; move it with .to()")
            kind = "f" if backend.is_floating(x.dtype) else x.dtype.kind
        else:
            x = np.asarray(x)
            kind = x.dtype.kind
        if kind not in "biuf":
            raise TypeError(f"x: expected real numbers, got dtype {x.dtype}")
        if x.ndim not in (2, 3) or 0 in x.shape:
            raise ValueError(f"x: expected (time, features) or (batch, time, features) with no empty "
                             f"axis, got shape {tuple(x.shape)}")
        if self.built and x.shape[-1] != self.input_size:
            raise ValueError(f"x: expected {self.input_size} features on the last axis, got shape "
                             f"{tuple(x.shape)}")
        if isinstance(x, Tensor):
            return x if x.dtype == self.dtype else x.to(self.dtype)
        return Tensor(x, dtype=self.dtype, device=self.device)

    def extra_repr(self) -> str:
        sizes = (f"input_size={self.input_size}, output_size={self.output_size}, " if self.built
                 else "not built yet, ")
        return (f"{sizes}hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
                f"encoder={self.encoder_kind!r}, decoder={self.decoder_kind!r}, "
                f"loss={self.loss.name or 'custom'!r}")


def _size(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _seed(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"seed: expected a non-negative int or None, got {value!r}")
    return int(value)


def _optional_size(name, value):
    return None if value is None else _size(name, value)


def _kind(name, value) -> str:
    available = ", ".join(map(repr, KINDS))
    if value in PLANNED_KINDS:
        raise ValueError(f"{name}: {value!r} is not available yet (planned: {', '.join(PLANNED_KINDS)}); "
                         f"available: {available}")
    if value not in KINDS:
        raise ValueError(f"{name}: expected {available}, got {value!r}")
    return value
