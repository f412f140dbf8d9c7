// The input projection of the CUDA recurrent layers (rnn.cu, rnn_ln.cu): the one GEMM over
// all T*B rows that starts a forward pass, gates = x W_ih^T + bias, as
// RnnForwardArgs::projection_dtype asks (unet/rnn.h): in T on the tiled SIMT GEMM, or with a
// 16-bit projection_dtype on the mixed-precision matmul (rnn_projection.cu).
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda_check.cuh"
#include "gemm_tiled.cuh"
#include "unet/rnn.h"

namespace unet::cuda {

// C[i,j] = acc (+ bias[j]): the plain store epilogue of the tiled GEMM.
template <typename T>
struct StoreBias {
  T* C;
  int64_t ldc;
  const T* bias;
  __device__ void operator()(int64_t i, int64_t j, T acc) const {
    C[i * ldc + j] = bias ? acc + bias[j] : acc;
  }
};

// x and w_ih rounded to a.projection_dtype (float16 or bfloat16) into stream-ordered
// temporary memory, then matmul() (sm90 wgmma, sm80 mma.sync) with float32 C and the bias
// in its epilogue. Asynchronous on `stream`; the current device must be a.x's.
void rnn_input_projection_16bit(const RnnForwardArgs<float>& a, const float* bias, float* gates,
                                cudaStream_t stream, int device);

// gates [T*B, G*H] (row-major, overwritten) = x W_ih^T + bias (bias [G*H] or null).
template <typename T>
void rnn_input_projection(const RnnForwardArgs<T>& a, const T* bias, T* gates, cudaStream_t stream,
                          int device, const char* what) {
  if (a.projection_dtype != DType::Float32) {
    if constexpr (std::is_same_v<T, float>)
      return rnn_input_projection_16bit(a, bias, gates, stream, device);
    throw std::invalid_argument(std::string(what) + ": projection_dtype " +
                                dtype_name(a.projection_dtype) + " needs float32 arrays");
  }
  const int64_t I = a.input_size, GH = rnn_gate_count(a.mode) * a.hidden_size;
  gemm::launch<T, false, true>(a.steps * a.batch, GH, I, gemm::Operand<T>{a.x, I},
                               gemm::Operand<T>{a.w_ih, I}, StoreBias<T>{gates, GH, bias}, stream,
                               what);
}

}  // namespace unet::cuda
