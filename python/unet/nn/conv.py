"""Convolution layers with torch's arguments, parameter names, shapes and initialisation,
so that a torch state_dict loads: Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d."""
from __future__ import annotations

import math

from .. import functional as F
from ..functional.conv import _ints
from ..functional.linear import ACTIVATIONS
from . import init
from .layers import _empty, _flag, _positive
from .module import Module


class _ConvNd(Module):
    _spatial = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", dtype=None, output_padding=0):
        super().__init__()
        n = self._spatial
        self.in_channels = _positive("in_channels", in_channels)
        self.out_channels = _positive("out_channels", out_channels)
        self.groups = _positive("groups", groups)
        for name, channels in (("in_channels", self.in_channels), ("out_channels", self.out_channels)):
            if channels % self.groups:
                raise ValueError(f"groups: must divide {name}={channels}, got {groups}")
        self.kernel_size = _ints("kernel_size", kernel_size, n, 1)
        self.stride = _ints("stride", stride, n, 1)
        self.dilation = _ints("dilation", dilation, n, 1)
        if isinstance(padding, str):
            if self._transposed or padding not in ("same", "valid"):
                allowed = "an int or a tuple" if self._transposed else "an int, a tuple, 'same' or 'valid'"
                raise ValueError(f"padding: expected {allowed}, got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"padding: 'same' needs stride 1, got stride {self.stride}")
            self.padding = padding
        else:
            self.padding = _ints("padding", padding, n, 0)
        self.output_padding = _ints("output_padding", output_padding, n, 0)
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode: only 'zeros' is supported, got {padding_mode!r}")
        self.padding_mode = padding_mode
        shape = ((self.in_channels, self.out_channels // self.groups) if self._transposed
                 else (self.out_channels, self.in_channels // self.groups)) + self.kernel_size
        self.weight = _empty(*shape, dtype=dtype)
        self.register_parameter("bias", _empty(self.out_channels, dtype=dtype) if _flag("bias", bias) else None)
        self.reset_parameters()

    def reset_parameters(self):
        # torch's default: kaiming_uniform(a=sqrt(5)) for W, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for b
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._spatial:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._spatial:
            s += f", dilation={self.dilation}"
        if any(self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class _Conv(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", dtype=None, activation="none"):
        """``activation`` (unet's, not torch's) fuses relu/gelu/tanh/sigmoid into the kernel."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, dtype)
        self.activation = activation

    def forward(self, input):
        conv = F.conv1d if self._spatial == 1 else F.conv2d
        return conv(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                    self.activation)

    def extra_repr(self):
        act = f", activation={self.activation!r}" if self.activation != "none" else ""
        return super().extra_repr() + act


class _ConvTranspose(_ConvNd):
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, padding_mode="zeros", dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, dtype, output_padding)

    def forward(self, input, output_size=None):
        """``output_size`` (torch's): the spatial size wanted, among those the stride leaves
        open (it picks output_padding for this call; may include the batch and channel dims)."""
        conv = F.conv_transpose1d if self._spatial == 1 else F.conv_transpose2d
        output_padding = self.output_padding if output_size is None else self._output_padding(input, output_size)
        return conv(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                    self.groups, self.dilation)

    def _output_padding(self, input, output_size):
        n = self._spatial
        size = tuple(output_size)[-n:] if isinstance(output_size, (tuple, list)) else None
        if size is None or len(size) != n:
            raise ValueError(f"output_size: expected a sequence ending in {n} spatial sizes, got {output_size!r}")
        padding = []
        for d in range(n):
            smallest = ((input.shape[input.ndim - n + d] - 1) * self.stride[d] - 2 * self.padding[d]
                        + self.dilation[d] * (self.kernel_size[d] - 1) + 1)
            if not smallest <= size[d] < smallest + self.stride[d]:
                raise ValueError(f"output_size: dim {d} must lie in [{smallest}, {smallest + self.stride[d] - 1}] "
                                 f"for input shape {input.shape}, got {size[d]}")
            padding.append(size[d] - smallest)
        return tuple(padding)


class Conv1d(_Conv):
    """torch.nn.Conv1d: (N, C_in, L) -> (N, C_out, L_out); weight (C_out, C_in/groups, k)."""
    _spatial = 1


class Conv2d(_Conv):
    """torch.nn.Conv2d: (N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
    _spatial = 2


class ConvTranspose1d(_ConvTranspose):
    """torch.nn.ConvTranspose1d; weight (C_in, C_out/groups, k)."""
    _spatial = 1


class ConvTranspose2d(_ConvTranspose):
    """torch.nn.ConvTranspose2d; weight (C_in, C_out/groups, kH, kW)."""
    _spatial = 2
