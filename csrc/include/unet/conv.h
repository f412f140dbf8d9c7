// 2-D convolution in NCHW (1-D is the case H = 1), one contract for the CPU
// (cpu/conv.cpp) and the CUDA (cuda/conv.cu) implementations.
//
//   x [N, C_in, H, W], weight [C_out, C_in / groups, KH, KW] (torch layout), bias [C_out]
//   out [N, C_out, H_out, W_out] with
//     H_out = (H + pad_top + pad_bottom - dilation_h * (KH - 1) - 1) / stride_h + 1
//     (W_out likewise with pad_left, pad_right): padding per side, so that "same" padding
//     with an even kernel (more on one side) is expressible.
//   Output channel co of group g = co / (C_out / groups) reads the input channels
//   [g * C_in/groups, (g + 1) * C_in/groups).
//
//   forward:   z = conv(x, weight) + bias,  out = act(z)   (z stored in preact if given)
//   backward:  g = grad_out * act'(preact)                  (fused into reading grad_out)
//              grad_x = conv's adjoint applied to g  (backward-data; also the transposed
//                       convolution's forward)
//              grad_weight = sum over images and positions of g x-patch^T,
//              grad_bias = sum of g over N, H_out, W_out
//
// All arrays contiguous and preallocated; outputs are overwritten. Optional pointers may
// be null: bias, preact (when act is None), and in backward x (when grad_weight is null),
// any of the three gradients. Results do not depend on the number of threads.
#pragma once

#include <cstdint>

#include "unet/activations.h"
#include "unet/tensor.h"

namespace unet {

struct ConvGeometry {
  int64_t N, C_in, H, W;
  int64_t C_out, KH, KW;
  int64_t stride_h, stride_w;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t dilation_h, dilation_w;
  int64_t groups;

  int64_t H_out() const { return (H + pad_top + pad_bottom - dilation_h * (KH - 1) - 1) / stride_h + 1; }
  int64_t W_out() const { return (W + pad_left + pad_right - dilation_w * (KW - 1) - 1) / stride_w + 1; }
  int64_t C_in_group() const { return C_in / groups; }
  int64_t C_out_group() const { return C_out / groups; }
  // The reduction length of one output element: a group's input channels times the kernel.
  int64_t K() const { return C_in_group() * KH * KW; }
};

template <typename T>
struct ConvForwardArgs {
  ConvGeometry geo;
  const T* x;
  const T* weight;
  const T* bias;
  T* out;
  T* preact;
  Activation act;
};

template <typename T>
struct ConvBackwardArgs {
  ConvGeometry geo;
  const T* grad_out;
  const T* x;
  const T* weight;
  const T* preact;
  Activation act;
  T* grad_x;
  T* grad_weight;
  T* grad_bias;
};

// Mixed precision (autocast, or 16-bit tensors): x, weight and grad_out hold one 16-bit
// dtype (Float16 or BFloat16); bias, out, preact and the three gradients are float32.
// Every product is of two 16-bit values, summed in float32. In backward,
// g = grad_out * act'(preact) is rounded to the 16-bit dtype before it enters the products
// and the bias sum (as if the activation were a layer of its own); with act None, g is
// grad_out itself. The CPU runs the float32 kernels on exact float32 copies; CUDA runs
// tensor-core implicit GEMMs (cuda/conv_mma.cu) where it can.
struct ConvMixedForwardArgs {
  ConvGeometry geo;
  DType dtype;  // of x and weight
  const void* x;
  const void* weight;
  const float* bias;
  float* out;
  float* preact;
  Activation act;
};

struct ConvMixedBackwardArgs {
  ConvGeometry geo;
  DType dtype;  // of grad_out, x and weight
  const void* grad_out;
  const void* x;
  const void* weight;
  const float* preact;
  Activation act;
  float* grad_x;
  float* grad_weight;
  float* grad_bias;
};

namespace cpu {
template <typename T>
void conv_forward(const ConvForwardArgs<T>& args);
template <typename T>
void conv_backward(const ConvBackwardArgs<T>& args);
void conv_forward_mixed(const ConvMixedForwardArgs& args);
void conv_backward_mixed(const ConvMixedBackwardArgs& args);
}  // namespace cpu

// Asynchronous on `stream` (a cudaStream_t as an integer) of CUDA device `device`;
// launch errors throw std::runtime_error.
namespace cuda {
template <typename T>
void conv_forward(const ConvForwardArgs<T>& args, uintptr_t stream, int device);
template <typename T>
void conv_backward(const ConvBackwardArgs<T>& args, uintptr_t stream, int device);
void conv_forward_mixed(const ConvMixedForwardArgs& args, uintptr_t stream, int device);
void conv_backward_mixed(const ConvMixedBackwardArgs& args, uintptr_t stream, int device);
}  // namespace cuda

}  // namespace unet
