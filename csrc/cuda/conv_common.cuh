// What the CUDA convolutions share (cuda/conv.cu: fp32/fp64 SIMT and depthwise;
// cuda/conv_mma.cu: the mixed-precision tensor-core path): the geometry in device-friendly
// form and the deterministic bias-gradient reduction.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>

#include "conv_dims.h"
#include "unet/conv.h"

namespace unet::cuda {
// Internal linkage: each .cu that includes this gets its own kernels.
namespace {

// One input channel per group: the direct kernels of cuda/conv.cu, not an implicit GEMM.
bool is_depthwise(const ConvGeometry& g) { return g.C_in_group() == 1 && g.groups > 1; }

constexpr int kReduceThreads = 256;

// The sum of every thread's `v` in a fixed tree (deterministic); valid in thread 0.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T partial[kReduceThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
  for (int s = kReduceThreads / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  return partial[0];
}

// grad_bias[co] = sum over images and positions of g (G::at(offset): g at an offset of
// grad_out, as T); one block per channel.
template <typename T, class G>
__global__ void __launch_bounds__(kReduceThreads) bias_grad_kernel(Dims d, G g, T* grad_bias) {
  const int64_t co = blockIdx.x;
  T sum = T(0);
  for (int64_t q = threadIdx.x; q < d.N * d.P; q += kReduceThreads)
    sum += g.at((q / d.P * d.C_out + co) * d.P + q % d.P);
  sum = block_sum(sum);
  if (threadIdx.x == 0) grad_bias[co] = sum;
}

// One block per channel (or per channel and tap): at most 2^31 - 1 of them.
unsigned reduce_blocks(int64_t n) {
  if (n > 2147483647LL) throw std::invalid_argument("conv (CUDA): too many channels");
  return static_cast<unsigned>(n);
}

}  // namespace
}  // namespace unet::cuda
