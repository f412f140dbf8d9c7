"""Layers, losses and initialisers, with torch.nn's names, arguments and parameter names."""
from . import init
from .containers import ModuleList, Sequential
from .conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from .layers import (GELU, BatchNorm1d, BatchNorm2d, Dropout, Embedding, Identity, LayerNorm, LeakyReLU, Linear,
                     LogSoftmax, ReLU, Sigmoid, Softmax, Tanh)
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, CTCLoss, MSELoss, NLLLoss
from .module import Module, Parameter
from .pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, AvgPool1d,
                      AvgPool2d, MaxPool1d, MaxPool2d, Upsample)
from . import utils
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase

__all__ = [
    "init", "Module", "Parameter", "Sequential", "ModuleList", "Linear", "Embedding", "Dropout",
    "LayerNorm", "Identity", "ReLU", "GELU", "Tanh", "Sigmoid", "LeakyReLU", "Softmax",
    "LogSoftmax", "MSELoss", "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss", "CTCLoss", "RNNBase", "RNN", "LSTM", "GRU",
    "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell", "utils",
    "BatchNorm1d", "BatchNorm2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "Upsample",
    "Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d",
]
