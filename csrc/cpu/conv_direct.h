// The forward convolution without im2col (cpu/conv_direct.cpp), for the layers where
// copying the patches out and packing them costs as much as the multiplications: few
// input channels, small images, strides. conv.cpp decides when to call it.
#pragma once

#include "unet/conv.h"

namespace unet::cpu {

// Same contract as conv_forward (unet/conv.h).
template <typename T>
void conv_forward_direct(const ConvForwardArgs<T>& args);

// Whether the direct kernel beats im2col + GEMM (measured, benchmarks/bench_conv.py): for
// kernels larger than 1 x 1 where it computes few positions only to drop them (the
// padding columns of each row, and the last block of each image).
template <typename T>
bool conv_direct_pays(const ConvGeometry& g);

}  // namespace unet::cpu
