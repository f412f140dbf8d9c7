// The convolution geometry with its derived sizes, in the form the CUDA convolution
// kernels take (ConvGeometry's helpers are host-only). Plain C++: the host check of the
// tensor-core convolutions' index arithmetic (tests/cuda_host) builds it with any compiler.
#pragma once

#include <cstdint>

#include "unet/conv.h"

namespace unet::cuda {
// Internal linkage, like the CUDA headers that include this.
namespace {

// ConvGeometry with the derived sizes, for device code (ConvGeometry's helpers are host-only).
struct Dims {
  int64_t N, C_in, H, W, C_out, KH, KW, sh, sw, pt, pl, dh, dw;
  int64_t Cig, Cog, Ho, Wo, P, taps, K;
};

Dims dims_of(const ConvGeometry& g) {
  const int64_t Ho = g.H_out(), Wo = g.W_out();
  return {g.N, g.C_in, g.H, g.W, g.C_out, g.KH, g.KW, g.stride_h, g.stride_w, g.pad_top,
          g.pad_left, g.dilation_h, g.dilation_w, g.C_in_group(), g.C_out_group(), Ho, Wo,
          Ho * Wo, g.KH * g.KW, g.K()};
}

}  // namespace
}  // namespace unet::cuda
