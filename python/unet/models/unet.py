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

RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
KINDS = (*RECURRENT, "cnn")
UPSAMPLING = ("transpose", "linear", "nearest")  # cnn: ConvTranspose1d, or Upsample then Conv1d
_FORMAT = "unet.models.UNet"


class UNet(nn.Module):
    """An encoder that reads a sequence into a vector and a decoder that writes a sequence from it.

    Recurrent kinds (``encoder`` "lstm", "gru" or "rnn")::

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

    The convolutional kind (``encoder="cnn"``, whose decoder is "cnn" too) is a
    1-D U-Net over time, for same-length sequence-to-sequence work (tagging, denoising)::

        x (batch, time, input_size), read as input_size channels over time
          encoder level 0: 2 x [Conv1d(kernel_size, 'same') + ReLU] -> hidden_size channels
          MaxPool1d(2, ceil_mode) then level l: 2 x [Conv1d + ReLU] -> hidden_size * 2**l channels,
              for l = 1 .. num_layers (the deepest level is the pipeline's vector sequence)
          decoder, from the deepest level back to level 0: up-sample x2 (ConvTranspose1d, or
              Upsample + Conv1d) to the next level's channels, cut to that level's length,
              concatenate that encoder level's output (the skip), 2 x [Conv1d + ReLU]
          -> read-out Linear(hidden_size -> output_size) at every step

    Pooling in ceil mode and cutting each up-sampled sequence to its skip's
    length keep odd lengths exact, so the output has as many steps as the input.
    Every level doubles the receptive field; the skips bring back the detail
    that the down-sampled levels lose.

    Sizes left out are taken from the first input: the layers are built on the
    first ``forward`` (or ``fit``), so ``parameters()`` is empty until then
    unless ``input_size`` is given. Numpy input of any real dtype is cast to the
    model's ``dtype``; Tensors must already be on the model's ``device``.

    Arguments:
        input_size, output_size: features in and out (output defaults to input).
        hidden_size, num_layers: size and depth of the encoder and decoder (cnn: the
            channels of the first level and the number of down-sampling levels).
        encoder, decoder: layer kinds, "lstm", "gru", "rnn" (any pairing) or "cnn"
            (both; ``decoder`` defaults to "cnn" for a cnn encoder, else "lstm").
        kernel_size, upsampling: cnn only: the convolutions' (odd) width, and how
            the decoder doubles the length: "transpose" (ConvTranspose1d(2, stride 2)),
            "linear" or "nearest" (Upsample then a Conv1d).
        dropout: on the encoder's outputs and between stacked layers (cnn: after
            every level), in training.
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
                 encoder="lstm", decoder=None, dropout=0.0, loss="mse", dtype="float32",
                 device="cpu", seed=None, kernel_size=3, upsampling="transpose"):
        super().__init__()
        self.input_size = _optional_size("input_size", input_size)
        self.output_size = _optional_size("output_size", output_size)
        self.hidden_size = _size("hidden_size", hidden_size)
        self.num_layers = _size("num_layers", num_layers)
        self.encoder_kind = _kind("encoder", encoder)
        default_decoder = "cnn" if self.encoder_kind == "cnn" else "lstm"
        self.decoder_kind = _kind("decoder", default_decoder if decoder is None else decoder)
        if (self.encoder_kind == "cnn") != (self.decoder_kind == "cnn"):
            raise ValueError(f"decoder: a {self.encoder_kind!r} encoder needs "
                             f"{'a cnn' if self.encoder_kind == 'cnn' else 'a recurrent'} decoder "
                             f"(the skips join matching levels), got {self.decoder_kind!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral) \
                or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected a positive odd int, got {kernel_size!r}")
        self.kernel_size = int(kernel_size)
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling: expected one of {UPSAMPLING}, got {upsampling!r}")
        self.upsampling = upsampling
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
        if self.encoder_kind == "cnn":
            self._build_convolutional(dtype)
        else:
            between = self.dropout if self.num_layers > 1 else 0.0  # nn.LSTM warns of dropout it cannot apply
            self.encoder = RECURRENT[self.encoder_kind](self.input_size, self.hidden_size, self.num_layers,
                                                        batch_first=True, dropout=between, dtype=dtype)
            self.decoder = RECURRENT[self.decoder_kind](self.hidden_size, self.hidden_size, self.num_layers,
                                                        batch_first=True, dropout=between, dtype=dtype)
        self.readout = nn.Linear(self.hidden_size, self.output_size, dtype=dtype)
        if self.device.type != "cpu":
            self.to(str(self.device))
        return self

    def _build_convolutional(self, dtype):
        """encoder[i]: level i's convolutions (the last is the deepest level); up[i], decoder[i]: the way
        back from level i + 1 to level i (listed from the deepest)."""
        widths = [self.hidden_size * 2 ** level for level in range(self.num_layers + 1)]
        self.encoder = nn.ModuleList([self._convolutions(c_in, c_out, dtype) for c_in, c_out
                                      in zip([self.input_size] + widths[:-1], widths)])
        self.pool = nn.MaxPool1d(2, ceil_mode=True)
        levels = list(reversed(range(self.num_layers)))
        self.up = nn.ModuleList([self._upsampler(widths[level + 1], widths[level], dtype) for level in levels])
        self.decoder = nn.ModuleList([self._convolutions(2 * widths[level], widths[level], dtype)
                                      for level in levels])

    def _convolutions(self, c_in, c_out, dtype):
        conv = dict(kernel_size=self.kernel_size, padding="same", activation="relu", dtype=dtype)
        return nn.Sequential(nn.Conv1d(c_in, c_out, **conv), nn.Conv1d(c_out, c_out, **conv))

    def _upsampler(self, c_in, c_out, dtype):
        if self.upsampling == "transpose":
            return nn.ConvTranspose1d(c_in, c_out, 2, stride=2, dtype=dtype)
        align = None if self.upsampling == "nearest" else False
        return nn.Sequential(nn.Upsample(scale_factor=2, mode=self.upsampling, align_corners=align),
                             nn.Conv1d(c_in, c_out, self.kernel_size, padding="same", dtype=dtype))

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
        decoded = self._convolutional(x) if self.encoder_kind == "cnn" else self._recurrent(x)
        y = self.readout(decoded)
        y = y if batched else y.squeeze(0)
        self._outputs[id(y)] = y
        return y

    def _recurrent(self, x) -> Tensor:
        """(batch, time, features) -> the decoder's (batch, time, hidden_size)."""
        encoded, state = self.encoder(x)
        encoded = F.dropout(encoded, self.dropout, self.training)
        decoded, _ = self.decoder(encoded, self._bridge(state))
        return decoded

    def _convolutional(self, x) -> Tensor:
        """(batch, time, features) -> (batch, time, hidden_size) through the U of convolutions."""
        h = x.transpose(1, 2)  # channels over time
        skips = []
        for level, convolutions in enumerate(self.encoder):
            if level and h.shape[-1] > 1:  # one step cannot halve: it stays, and the way up cuts back to it
                h = self.pool(h)
            h = F.dropout(convolutions(h), self.dropout, self.training)
            skips.append(h)
        for up, convolutions, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            h = up(h)[:, :, :skip.shape[-1]]  # x2 may overshoot an odd length by one
            h = F.dropout(convolutions(F.cat([skip, h], dim=1)), self.dropout, self.training)
        return h.transpose(1, 2)

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
                "loss": self.loss.name, "dtype": self.dtype.name, "device": str(self.device),
                "kernel_size": self.kernel_size, "upsampling": self.upsampling}

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
        cnn = (f", kernel_size={self.kernel_size}, upsampling={self.upsampling!r}"
               if self.encoder_kind == "cnn" else "")
        return (f"{sizes}hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
                f"encoder={self.encoder_kind!r}, decoder={self.decoder_kind!r}{cnn}, "
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
    if value not in KINDS:
        raise ValueError(f"{name}: expected {available}, got {value!r}")
    return value
