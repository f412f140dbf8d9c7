"""unet: sequence models (RNN/LSTM/GRU/CNN) on hand-written C++ and CUDA kernels.

    import numpy as np
    from unet import UNet
    x = np.random.randn(10, 10)
    unet = UNet()
    y = unet.forward(x)
    unet.backward(y, np.random.randn(10, 10))
"""
import os as _os

# OpenMP threads that spin while waiting stall whenever another process holds their core
# (measured on 2 cores under load: an LSTM step 2-6x slower than one thread); sleeping
# waiters keep the parallel speed-up on a quiet machine. Set before unet._C loads libgomp;
# a user's own OMP_WAIT_POLICY wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__
from .autograd import enable_grad, is_grad_enabled, no_grad
from .backend import (Device, bfloat16, bool_, cuda_available, float16, float32, float64, int32,
                      int64, is_deterministic, manual_seed, use_deterministic)
from .creation import (arange, from_dlpack, full, full_like, ones, ones_like, rand, rand_like, randn,
                       randn_like, tensor, zeros, zeros_like)
from .tensor import Tensor
from . import functional
from .functional import cat, concat, stack, where
from . import amp, distributed, nn, optim
from . import onnx  # unet.onnx.export; the onnx package itself is imported only when exporting
from .checkpoint import load, save
from .info import info
from .models import UNet

device = Device

__all__ = [
    "__version__", "Tensor", "tensor", "zeros", "ones", "full", "zeros_like", "ones_like",
    "full_like", "randn_like", "rand_like", "randn", "rand", "arange", "from_dlpack", "no_grad", "enable_grad", "is_grad_enabled",
    "manual_seed", "use_deterministic", "is_deterministic", "cuda_available", "device", "float64",
    "float32", "float16", "bfloat16", "int64", "int32", "bool_", "cat", "concat", "stack", "where",
    "functional", "nn", "optim", "amp", "distributed",
    "save", "load", "info", "UNet",
]
