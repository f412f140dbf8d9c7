// Fully connected layer with the bias and the activation fused into the GEMM.
//
//   forward:   z = x W^T + b,   y = act(z)            x [M,K], W [N,K] (torch layout), b [N]
//   backward:  g = dy * act'(z)                       (never stored: fused into reading dy)
//              dx = g W [M,K],  dW = g^T x [N,K],  db = sum over rows of g [N]
//
// One argument struct per direction, shared by the CPU (cpu/linear.cpp) and the CUDA
// (cuda/linear.cu) implementations. All arrays are contiguous row-major and preallocated;
// outputs are overwritten. Optional pointers may be null: bias, preact (when act is None;
// when given, z is written there), and in backward any of the three gradients.
#pragma once

#include <cstdint>

#include "unet/activations.h"

namespace unet {

template <typename T>
struct LinearForwardArgs {
  int64_t M, N, K;
  const T* x;
  const T* weight;
  const T* bias;
  T* out;
  T* preact;
  Activation act;
};

template <typename T>
struct LinearBackwardArgs {
  int64_t M, N, K;
  const T* grad_out;
  const T* x;
  const T* weight;
  const T* preact;
  Activation act;
  T* grad_x;
  T* grad_weight;
  T* grad_bias;
};

namespace cpu {
template <typename T>
void linear_forward(const LinearForwardArgs<T>& args);
template <typename T>
void linear_backward(const LinearBackwardArgs<T>& args);
}  // namespace cpu

// Asynchronous: kernels are queued on `stream` (a cudaStream_t as an integer) of CUDA
// device `device`; errors at launch throw std::runtime_error.
namespace cuda {
template <typename T>
void linear_forward(const LinearForwardArgs<T>& args, uintptr_t stream, int device);
template <typename T>
void linear_backward(const LinearBackwardArgs<T>& args, uintptr_t stream, int device);
}  // namespace cuda

}  // namespace unet
