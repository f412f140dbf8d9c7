"""ImageCNN: a small image classifier of conv-BN-ReLU-pool blocks, global pooling and a linear layer."""
from __future__ import annotations

import numpy as np

from .. import backend, nn
from .. import functional as F
from ..autograd import no_grad
from ..backend import Device, resolve_dtype
from ..tensor import Tensor
from .base import check_dropout, check_positive


class ImageCNN(nn.Module):
    """Class logits for (N, C, H, W) images.

    ::

        for each width w in ``channels``:  Conv2d(3x3, 'same', no bias) -> BatchNorm2d -> ReLU -> MaxPool2d(2)
        -> AdaptiveAvgPool2d(1) (global average) -> flatten -> dropout -> Linear(channels[-1] -> num_classes)

    Pooling runs in ceil mode and leaves a one-pixel side alone, so an image of any size passes
    every block. ``predict``/``predict_proba`` take numpy images
    and work in eval mode (running BatchNorm statistics) without a graph.
    """

    def __init__(self, in_channels=1, num_classes=10, channels=(32, 64), dropout=0.0, dtype="float32",
                 device="cpu"):
        super().__init__()
        self.in_channels = check_positive("in_channels", in_channels)
        self.num_classes = check_positive("num_classes", num_classes)
        if not isinstance(channels, (tuple, list)) or not channels:
            raise ValueError(f"channels: expected a non-empty list of positive ints, got {channels!r}")
        self.channels = tuple(check_positive("channels", c) for c in channels)
        self.dropout = check_dropout(dropout)
        self.dtype = resolve_dtype(dtype)
        if not backend.is_floating(self.dtype):
            raise ValueError(f"dtype: expected a floating-point dtype, got {self.dtype}")
        self.device = Device(device)
        d = self.dtype.name
        blocks = []
        for c_in, c_out in zip((self.in_channels,) + self.channels[:-1], self.channels):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding="same", bias=False, dtype=d), nn.BatchNorm2d(c_out, dtype=d),
                       nn.ReLU(), _HalvingPool()]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(self.dropout)
        self.classifier = nn.Linear(self.channels[-1], self.num_classes, dtype=d)
        if self.device.type != "cpu":
            self.to(str(self.device))

    def forward(self, images) -> Tensor:
        x = images if isinstance(images, Tensor) else Tensor(np.asarray(images), dtype=self.dtype, device=self.device)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"images: expected (N, {self.in_channels}, H, W), got shape {x.shape}")
        features = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.drop(features))

    def predict_proba(self, images, batch_size=256) -> np.ndarray:
        """Class probabilities (N, num_classes) as a numpy array."""
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                return np.concatenate([backend.to_device(F.softmax(self(images[i:i + batch_size]), dim=-1).data,
                                                         Device("cpu"))
                                       for i in range(0, len(images), batch_size)])
        finally:
            self.train(was_training)

    def predict(self, images, batch_size=256) -> np.ndarray:
        """The most likely class per image, int64 (N,)."""
        return self.predict_proba(images, batch_size).argmax(axis=-1).astype(np.int64)

    def extra_repr(self):
        return f"in_channels={self.in_channels}, num_classes={self.num_classes}, channels={self.channels}"


class _HalvingPool(nn.Module):
    """Max pooling by 2 (ceil mode) along each side longer than one pixel; a one-pixel side stays."""

    def forward(self, input):
        return F.max_pool2d(input, tuple(2 if n > 1 else 1 for n in input.shape[-2:]), ceil_mode=True)

    def extra_repr(self):
        return "kernel_size=2, ceil_mode=True"
