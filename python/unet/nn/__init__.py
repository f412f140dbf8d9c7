"""Layers, losses and initialisers, with torch.nn's names, arguments and parameter names."""
from . import init
from .containers import ModuleList, Sequential
from .layers import (GELU, Dropout, Embedding, Identity, LayerNorm, LeakyReLU, Linear, LogSoftmax,
                     ReLU, Sigmoid, Softmax, Tanh)
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, CTCLoss, MSELoss, NLLLoss
from .module import Module, Parameter
from . import utils
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase

__all__ = [
    "init", "Module", "Parameter", "Sequential", "ModuleList", "Linear", "Embedding", "Dropout",
    "LayerNorm", "Identity", "ReLU", "GELU", "Tanh", "Sigmoid", "LeakyReLU", "Softmax",
    "LogSoftmax", "MSELoss", "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss", "CTCLoss", "RNNBase", "RNN", "LSTM", "GRU",
    "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell", "utils",
]
