"""Stateless differentiable functions (``unet.functional``, usually imported as ``F``).

Light ops run through the array module; the heavy ones (the fused linear
kernel, the fused whole-sequence recurrent kernels, and the convolutions to come) call ``unet._C``.
"""
from .activation import gelu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from .ctc import ctc_loss
from .dropout import dropout
from .embedding import embedding
from .linear import linear
from .loss import binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss
from .normalization import layer_norm
from .rnn import rnn
from .tensor_ops import cat, concat, split, stack, where

__all__ = [
    "gelu", "leaky_relu", "log_softmax", "relu", "sigmoid", "softmax", "tanh", "dropout",
    "embedding", "linear", "binary_cross_entropy_with_logits", "cross_entropy", "mse_loss",
    "nll_loss", "ctc_loss", "layer_norm", "rnn", "cat", "concat", "split", "stack", "where",
]
