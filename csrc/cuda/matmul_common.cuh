// What the CUDA matmul paths share (cuda/matmul.cu: dispatch, split-K reduction, bias
// gradient, the SIMT path; cuda/matmul_sm80.cu: mma.sync; cuda/matmul_sm90.cu: wgmma + TMA):
// the fused epilogue of unet/matmul.h, where a tile's sums go (the epilogue, or fp32
// partial sums when K is split), and the tile plan each path launches with.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "unet/matmul.h"

namespace unet::cuda::matmul_detail {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("matmul (CUDA): ") + what + ": " + cudaGetErrorString(err));
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Element idx of an array of dtype t (float32, float16 or bfloat16), as float.
__device__ __forceinline__ float load_float(const void* p, DType t, int64_t idx) {
  if (t == DType::Float16) return __half2float(static_cast<const __half*>(p)[idx]);
  if (t == DType::BFloat16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[idx]);
  return static_cast<const float*>(p)[idx];
}

// Rounded once, to nearest even.
__device__ __forceinline__ void store_float(void* p, DType t, int64_t idx, float v) {
  if (t == DType::Float16)
    static_cast<__half*>(p)[idx] = __float2half_rn(v);
  else if (t == DType::BFloat16)
    static_cast<__nv_bfloat16*>(p)[idx] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(p)[idx] = v;
}

// Z = alpha acc + beta C + bias; preact = Z; C = act(Z) + residual (unet/matmul.h), for
// element (i, j) of matrix p. The dtype switches are uniform across a launch.
struct Epilogue {
  DType c_dtype;
  void* c;
  int64_t ldc, stride_c;
  float alpha, beta;
  const void* bias;
  DType bias_dtype;
  Activation act;
  const void* residual;
  int64_t ld_residual, stride_residual;
  void* preact;
  int64_t ld_preact, stride_preact;

  explicit Epilogue(const MatmulArgs& a)
      : c_dtype(a.c_dtype), c(a.c), ldc(a.ldc), stride_c(a.stride_c), alpha(a.alpha), beta(a.beta),
        bias(a.bias), bias_dtype(a.bias_dtype), act(a.act), residual(a.residual),
        ld_residual(a.ld_residual), stride_residual(a.stride_residual), preact(a.preact),
        ld_preact(a.ld_preact), stride_preact(a.stride_preact) {}

  __device__ __forceinline__ void operator()(int64_t p, int64_t i, int64_t j, float acc) const {
    const int64_t ci = p * stride_c + i * ldc + j;
    float z = alpha * acc;
    if (beta != 0.0f) z += beta * load_float(c, c_dtype, ci);  // beta 0: C is not read
    if (bias) z += load_float(bias, bias_dtype, j);
    if (preact) store_float(preact, c_dtype, p * stride_preact + i * ld_preact + j, z);
    float y = activation_forward(act, z);
    if (residual) y += load_float(residual, c_dtype, p * stride_residual + i * ld_residual + j);
    store_float(c, c_dtype, ci, y);
  }
};

// Where the sums of a tile go: the epilogue, or, when K is split, the fp32 partial sums
// partial[split][p][i][j] that matmul.cu's reduction adds in split order.
struct Sink {
  Epilogue epi;
  float* partial;  // null: no split
  int64_t M, N, batch;

  __device__ __forceinline__ void operator()(int64_t split, int64_t p, int64_t i, int64_t j,
                                             float acc) const {
    if (partial)
      partial[((split * batch + p) * M + i) * N + j] = acc;
    else
      epi(p, i, j, acc);
  }
};

// One launch of a tensor-core path: tile variant, K split into `splits` ranges of
// k_per_split elements (a multiple of the path's k tile); grid.z runs over batch x splits.
struct Plan {
  int tile = 0;  // the path's tile variant (0: its large tile)
  int splits = 1;
  int64_t k_per_split = 0;
};

// Which matrix (p) and K range (split) block z of a launch covers.
struct BatchSplit {
  int64_t p, split, k_begin, k_end;
};
__device__ __forceinline__ BatchSplit batch_split(int64_t z, const Plan& plan, int64_t K) {
  BatchSplit b;
  b.p = z / plan.splits;
  b.split = z % plan.splits;
  b.k_begin = b.split * plan.k_per_split;
  b.k_end = b.k_begin + plan.k_per_split < K ? b.k_begin + plan.k_per_split : K;
  return b;
}

// The tensor-core paths take fp16/bf16 A and B whose rows start on 16-byte boundaries:
// 16-byte aligned base pointers and leading dimensions and batch strides that are
// multiples of 8 elements. Anything else goes to the SIMT path.
inline bool rows_16b_aligned(const MatmulArgs& a) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.ab_dtype != DType::Float32 && aligned(a.a) && aligned(a.b) && a.lda % 8 == 0 &&
         a.ldb % 8 == 0 && a.stride_a % 8 == 0 && a.stride_b % 8 == 0;
}

// The launches of each path (grid.z chunks of at most 65535 included); `plan` from
// choose_plan in matmul.cu with the path's tiles.
struct TileShape {
  int bm, bn, bk;
};
constexpr TileShape kSm80Tiles[2] = {{128, 128, 32}, {64, 64, 32}};
constexpr TileShape kSm90Tiles[2] = {{128, 128, 64}, {64, 128, 64}};

void launch_sm80(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream);
// Whether this build holds the sm90 kernels as sm_90a code (a build without 90a would
// otherwise run their empty bodies, compiled for another target).
bool sm90_compiled();
// Only A [M,K] and B [N,K] (trans_a false, trans_b true: both K-contiguous), K > 0.
bool sm90_takes(const MatmulArgs& a);
// False, launching nothing, where the driver refuses the tensor maps (strides it cannot
// describe) or a size exceeds TMA's 32-bit coordinates.
bool launch_sm90(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream);

}  // namespace unet::cuda::matmul_detail
