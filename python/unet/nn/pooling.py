"""Pooling and upsampling layers: torch.nn's names and arguments over ``unet.functional.pooling``.

The layers hold no parameters; the window arguments are checked when a layer is built
(by the functional module's own checks), the rest on the first call.
"""
from __future__ import annotations

from .. import functional as F
from ..functional import pooling as P
from .module import Module


class _MaxPoolNd(Module):
    n = 0

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        kernel, stride, padding, dilation = P._window_args(self.n, kernel_size, stride, padding, dilation)
        self.kernel_size, self.stride, self.padding, self.dilation = _one(kernel, stride, padding, dilation)
        self.return_indices = P._flag("return_indices", return_indices)
        self.ceil_mode = P._flag("ceil_mode", ceil_mode)

    def forward(self, input):
        pool = F.max_pool1d if self.n == 1 else F.max_pool2d
        return pool(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                    self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    n = 1


class MaxPool2d(_MaxPoolNd):
    n = 2


class AvgPool1d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        kernel, stride, padding, _ = P._window_args(1, kernel_size, stride, padding, 1)
        self.kernel_size, self.stride, self.padding, _ = _one(kernel, stride, padding, (1,))
        self.ceil_mode = P._flag("ceil_mode", ceil_mode)
        self.count_include_pad = P._flag("count_include_pad", count_include_pad)

    def forward(self, input):
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        kernel, stride, padding, _ = P._window_args(2, kernel_size, stride, padding, 1)
        self.kernel_size, self.stride, self.padding, _ = _one(kernel, stride, padding, (1, 1))
        self.ceil_mode = P._flag("ceil_mode", ceil_mode)
        self.count_include_pad = P._flag("count_include_pad", count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _AdaptivePool(Module):
    fn = None

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return type(self).fn(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptivePool):
    fn = staticmethod(F.adaptive_avg_pool1d)


class AdaptiveAvgPool2d(_AdaptivePool):
    fn = staticmethod(F.adaptive_avg_pool2d)


class _AdaptiveMaxPool(_AdaptivePool):
    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = P._flag("return_indices", return_indices)

    def forward(self, input):
        return type(self).fn(input, self.output_size, self.return_indices)


class AdaptiveMaxPool1d(_AdaptiveMaxPool):
    fn = staticmethod(F.adaptive_max_pool1d)


class AdaptiveMaxPool2d(_AdaptiveMaxPool):
    fn = staticmethod(F.adaptive_max_pool2d)


class Upsample(Module):
    """``F.interpolate`` as a layer: mode 'nearest', 'linear' (N, C, L) or 'bilinear' (N, C, H, W)."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        if mode not in P.INTERPOLATION_MODES:
            raise ValueError(f"mode: expected one of {tuple(P.INTERPOLATION_MODES)}, got {mode!r}")
        if (size is None) == (scale_factor is None):
            raise ValueError(f"size, scale_factor: expected exactly one of them, got size={size!r}, "
                             f"scale_factor={scale_factor!r}")
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             self.recompute_scale_factor)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"


def _one(*tuples):
    """Window arguments as torch shows them: an int where all sides agree (``kernel_size=2``), else a tuple."""
    return tuple(t[0] if len(set(t)) == 1 else t for t in tuples)
