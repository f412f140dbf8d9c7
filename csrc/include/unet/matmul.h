// The mixed-precision matrix product with a fused epilogue, shared by the CPU
// (cpu/matmul.cpp) and the CUDA (cuda/matmul*.cu) implementations:
//
//   for every batch index p < batch:
//     Z = alpha * op(A_p) op(B_p) + beta * C_p + bias        (fp32 accumulation)
//     preact_p = Z                                           (when preact is given)
//     C_p = act(Z) + residual_p                              (rounded once, to C's dtype)
//     bias_grad[i] = sum_k op(A_p)(i, k), summed over p too  (when bias_grad is given)
//
// op(A) is M x K and op(B) is K x N. A is stored [M, K] (trans_a false) or [K, M]
// (trans_a true), row-major with leading dimension lda; B is stored [K, N] or [N, K]
// likewise. C, residual and preact are [M, N] with their own leading dimensions.
// All strides and leading dimensions count elements, not bytes; a batch stride of 0
// shares one matrix across the batch (a weight). A and B have one dtype, float32,
// float16 or bfloat16; 16-bit inputs are used exactly as stored and every product is
// accumulated in float32. C, residual and preact share one dtype, float32, float16 or
// bfloat16. bias is float32 or C's dtype. bias_grad is float32 and overwritten; it is the
// fused bias gradient of a Linear backward (dW = g^T x with A = g, trans_a true).
//
// With beta == 0, C is not read (it may hold NaN). K == 0 gives Z = beta C + bias.
#pragma once

#include <cstdint>

#include "unet/activations.h"
#include "unet/tensor.h"

namespace unet {

struct MatmulArgs {
  int64_t batch = 1, M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  DType ab_dtype = DType::Float32;  // A and B
  DType c_dtype = DType::Float32;   // C, residual, preact
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  float alpha = 1.0f, beta = 0.0f;
  const void* bias = nullptr;  // [N] or null
  DType bias_dtype = DType::Float32;
  Activation act = Activation::None;
  const void* residual = nullptr;  // or null
  int64_t ld_residual = 0, stride_residual = 0;
  void* preact = nullptr;  // or null
  int64_t ld_preact = 0, stride_preact = 0;
  float* bias_grad = nullptr;  // [M] or null
};

namespace cpu {
// The same result for any thread count. The AVX-512 BF16 path may sum in another order
// than the portable one (both in float32), and vdpbf16ps flushes subnormal inputs,
// products and partial sums to zero (a difference below 2^-126 per product).
void matmul(const MatmulArgs& args);
}  // namespace cpu

// Asynchronous on `stream` (a cudaStream_t as an integer) of CUDA device `device`; errors
// at launch throw std::runtime_error.
namespace cuda {
void matmul(const MatmulArgs& args, uintptr_t stream, int device);
}  // namespace cuda

}  // namespace unet
