"""Stateless differentiable functions (``unet.functional``, usually imported as ``F``).

Light ops run through the array module; the heavy ones (the fused linear
kernel, the fused whole-sequence recurrent kernels, the convolutions, CTC) call ``unet._C``.
"""
from .activation import gelu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from .conv import conv1d, conv2d, conv_transpose1d, conv_transpose2d
from .ctc import ctc_loss
from .dropout import dropout
from .embedding import embedding
from .linear import linear
from .loss import binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss
from .normalization import batch_norm, layer_norm
from .pooling import (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_max_pool1d, adaptive_max_pool2d,
                      avg_pool1d, avg_pool2d, interpolate, max_pool1d, max_pool2d)
from .rnn import rnn
from .rnn_ln import rnn_ln
from .tensor_ops import cat, concat, split, stack, where

__all__ = [
    "gelu", "leaky_relu", "log_softmax", "relu", "sigmoid", "softmax", "tanh", "dropout",
    "embedding", "linear", "binary_cross_entropy_with_logits", "cross_entropy", "mse_loss",
    "nll_loss", "ctc_loss", "layer_norm", "rnn", "rnn_ln", "cat", "concat", "split", "stack", "where",
    "batch_norm", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "interpolate",
    "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d",
]
