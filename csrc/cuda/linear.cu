// CUDA fused linear layer (math in unet/linear.h), the twin of cpu/linear.cpp, on the tiled
// GEMM of gemm_tiled.cuh:
//   forward    z  = x W^T    A = x [M,K],                 B = W [N,K] read transposed
//   backward   dx = g W      A = g [M,N],                 B = W [N,K]
//              dW = g^T x    A = g [M,N] read transposed, B = x [M,K]
// g = grad_out * act'(preact) is formed as A tiles are loaded (and as the bias gradient's
// column sum reads it), never stored; bias, activation and the pre-activation store run in
// the epilogue. Fixed summation orders: results are run-to-run identical.
#include <cuda_runtime.h>

#include "gemm_tiled.cuh"
#include "unet/linear.h"

namespace unet::cuda {
namespace {

using gemm::Operand;

// grad_out read as g = grad_out * act'(preact) (preact null: grad_out itself).
template <typename T>
struct ActGradOperand {
  const T* grad_out;
  const T* preact;
  Activation act;
  int64_t ld;
  __device__ __forceinline__ T load(int64_t r, int64_t c) const {
    T g = grad_out[r * ld + c];
    if (preact) g *= activation_derivative(act, preact[r * ld + c]);
    return g;
  }
  __device__ __forceinline__ ActGradOperand batch(int64_t) const { return *this; }
};

// z = acc + bias[j]; preact = z; C = act(z) (bias and preact may be null).
template <typename T>
struct BiasActEpilogue {
  T* C;
  int64_t ldc;
  const T* bias;
  T* preact;
  Activation act;
  __device__ __forceinline__ void operator()(int64_t i, int64_t j, T acc) const {
    if (bias) acc += bias[j];
    if (preact) preact[i * ldc + j] = acc;
    C[i * ldc + j] = activation_forward(act, acc);
  }
};

}  // namespace

template <typename T>
void linear_forward(const LinearForwardArgs<T>& a, uintptr_t stream, int device) {
  DeviceGuard guard(device);
  gemm::launch<T, false, true>(a.M, a.N, a.K, Operand<T>{a.x, a.K}, Operand<T>{a.weight, a.K},
                               BiasActEpilogue<T>{a.out, a.N, a.bias, a.preact, a.act},
                               reinterpret_cast<cudaStream_t>(stream), "linear forward (CUDA) launch");
}

template <typename T>
void linear_backward(const LinearBackwardArgs<T>& a, uintptr_t stream, int device) {
  const int64_t M = a.M, N = a.N, K = a.K;
  const ActGradOperand<T> g{a.grad_out, a.act == Activation::None ? nullptr : a.preact, a.act, N};
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  DeviceGuard guard(device);
  if (a.grad_x)
    gemm::launch<T, false, false>(M, K, N, g, Operand<T>{a.weight, K},
                                  BiasActEpilogue<T>{a.grad_x, K, nullptr, nullptr, Activation::None}, s,
                                  "linear backward (CUDA): grad_x launch");
  if (a.grad_weight)
    gemm::launch<T, true, false>(N, K, M, g, Operand<T>{a.x, K},
                                 BiasActEpilogue<T>{a.grad_weight, K, nullptr, nullptr, Activation::None}, s,
                                 "linear backward (CUDA): grad_weight launch");
  if (a.grad_bias) gemm::column_sum_of(M, N, g, a.grad_bias, s, "linear backward (CUDA): grad_bias launch");
}

template void linear_forward<float>(const LinearForwardArgs<float>&, uintptr_t, int);
template void linear_forward<double>(const LinearForwardArgs<double>&, uintptr_t, int);
template void linear_backward<float>(const LinearBackwardArgs<float>&, uintptr_t, int);
template void linear_backward<double>(const LinearBackwardArgs<double>&, uintptr_t, int);

}  // namespace unet::cuda
