// A shared-memory tiled GEMM with pluggable operands and epilogue, and a deterministic
// column sum: the fp32/fp64 matrix machinery of the CUDA kernels (linear, recurrent,
// convolution, and the SIMT path of matmul).
//
//   C(i,j) = epilogue(i, j, sum_k A(i,k) B(k,j))        i < M, j < N, k < K
//
// Each operand is a stored row-major matrix S (element (r,c) at p[r*ld + c]), optionally
// multiplied elementwise by a second one (q[r*ldq + c]: the LSTM's m = o * tanh(c) without
// storing m). A(i,k) = S(i,k), or S(k,i) when A_T; B(k,j) = S(k,j), or S(j,k) when B_T.
// Stored elements may be narrower than the arithmetic type T (fp16/bf16 read as float).
// The epilogue is a functor called once per output element by the thread that summed it,
// so it may read and then overwrite the same element (C += AB in place).
//
// Batched (launch_batched): matrix p of a batch starts `stride` elements after matrix p-1
// (0: all share one). K may be split into `splits` ranges of k_per_split (a multiple of
// kBK), each summed by its own blocks; the epilogue is then called as epi(z, i, j, acc)
// with z = p * splits + split, and whoever it stores for adds the ranges up.
//
// The tiling: 64-wide column tiles of 16-deep k slices, a 256-thread block, each thread a
// register tile at stride 16 (a warp reads 16 consecutive B values and broadcast A values),
// padded shared tiles, and the row tile BM a template parameter so that the recurrent products, whose M is the
// batch, do not waste most of a 64-row tile. Products use explicit fma and a fixed k
// order: results are run-to-run identical.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda_check.cuh"

namespace unet::cuda::gemm {
// Internal linkage: each .cu that includes this gets its own kernels (no -rdc needed, no
// clash between translation units).
namespace {

__device__ __forceinline__ float fma_(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fma_(double a, double b, double c) { return fma(a, b, c); }

// T: the arithmetic type, S: the stored one. q is not batched (only batch 1 uses it).
template <typename T, typename S = T>
struct Operand {
  const S* p;
  int64_t ld;
  const S* q = nullptr;
  int64_t ldq = 0;
  int64_t stride = 0;
  __device__ __forceinline__ T load(int64_t r, int64_t c) const {
    T v = static_cast<T>(p[r * ld + c]);
    if (q) v *= static_cast<T>(q[r * ldq + c]);
    return v;
  }
  __device__ __forceinline__ Operand batch(int64_t z) const {
    Operand o = *this;
    o.p += z * stride;
    return o;
  }
};

constexpr int kBN = 64, kBK = 16, kTN = 4, kThreads = 256;
constexpr int kThreadsX = kBN / kTN;             // 16 column groups
constexpr int kThreadsY = kThreads / kThreadsX;  // 16 row groups

// OpA and OpB: Operand<T>, or any type with the same load(r, c) and batch(z) (an implicit
// im2col: the convolutions of cuda/conv.cu).
template <typename T, int BM, bool A_T, bool B_T, class OpA, class OpB, class Epilogue>
__global__ void __launch_bounds__(kThreads)
    gemm_tiled_kernel(int64_t M, int64_t N, int64_t K, OpA A_, OpB B_, Epilogue epi, int64_t z0, int splits,
                      int64_t k_per_split) {
  constexpr int TM = BM / kThreadsY;
  static_assert(BM % kThreadsY == 0 && BM * kBK % kThreads == 0, "row tile must divide evenly");
  static_assert(kBK * kBN % kThreads == 0, "column tile must divide evenly");
  // +1 column of padding: the tile stores below hit distinct banks.
  __shared__ T As[kBK][BM + 1];
  __shared__ T Bs[kBK][kBN + 1];
  const int tid = threadIdx.x;
  const int tx = tid % kThreadsX, ty = tid / kThreadsX;
  const int64_t i0 = int64_t(blockIdx.x) * BM, j0 = int64_t(blockIdx.y) * kBN;
  const int64_t z = z0 + blockIdx.z;
  const OpA A = A_.batch(z / splits);
  const OpB B = B_.batch(z / splits);
  const int64_t k_begin = (z % splits) * k_per_split;
  const int64_t k_end = k_begin + k_per_split < K ? k_begin + k_per_split : K;

  T acc[TM][kTN];
#pragma unroll
  for (int r = 0; r < TM; ++r)
#pragma unroll
    for (int c = 0; c < kTN; ++c) acc[r][c] = T(0);

  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
    // Consecutive threads load consecutive stored addresses (coalesced) whichever way the
    // operand is stored; out-of-range elements are zeros.
#pragma unroll
    for (int l = 0; l < BM * kBK / kThreads; ++l) {
      const int e = tid + l * kThreads;
      const int r = A_T ? e % BM : e / kBK, k = A_T ? e / BM : e % kBK;
      const int64_t gi = i0 + r, gk = k0 + k;
      As[k][r] = (gi < M && gk < k_end) ? (A_T ? A.load(gk, gi) : A.load(gi, gk)) : T(0);
    }
#pragma unroll
    for (int l = 0; l < kBK * kBN / kThreads; ++l) {
      const int e = tid + l * kThreads;
      const int c = B_T ? e / kBK : e % kBN, k = B_T ? e % kBK : e / kBN;
      const int64_t gj = j0 + c, gk = k0 + k;
      Bs[k][c] = (gj < N && gk < k_end) ? (B_T ? B.load(gj, gk) : B.load(gk, gj)) : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      T a[TM], b[kTN];
#pragma unroll
      for (int r = 0; r < TM; ++r) a[r] = As[k][ty + r * kThreadsY];
#pragma unroll
      for (int c = 0; c < kTN; ++c) b[c] = Bs[k][tx + c * kThreadsX];
#pragma unroll
      for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int c = 0; c < kTN; ++c) acc[r][c] = fma_(a[r], b[c], acc[r][c]);
    }
    __syncthreads();  // before the next tiles overwrite As/Bs
  }

#pragma unroll
  for (int r = 0; r < TM; ++r) {
    const int64_t i = i0 + ty + r * kThreadsY;
    if (i >= M) continue;
#pragma unroll
    for (int c = 0; c < kTN; ++c) {
      const int64_t j = j0 + tx + c * kThreadsX;
      if (j >= N) continue;
      if constexpr (std::is_invocable_v<Epilogue, int64_t, int64_t, int64_t, T>)
        epi(z, i, j, acc[r][c]);
      else
        epi(i, j, acc[r][c]);
    }
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }


template <typename T, int BM, bool A_T, bool B_T, class OpA, class OpB, class Epilogue>
void launch_bm(int64_t M, int64_t N, int64_t K, int64_t batch, const OpA& A, const OpB& B,
               const Epilogue& epi, cudaStream_t stream, const char* what, int splits, int64_t k_per_split) {
  const dim3 grid(static_cast<unsigned>(ceil_div(M, BM)), static_cast<unsigned>(ceil_div(N, kBN)));
  // grid.z is at most 65535: larger batches go in several launches.
  const int64_t zs = batch * splits;
  for (int64_t z0 = 0; z0 < zs; z0 += 65535) {
    const unsigned nz = static_cast<unsigned>(std::min<int64_t>(zs - z0, 65535));
    gemm_tiled_kernel<T, BM, A_T, B_T><<<dim3(grid.x, grid.y, nz), kThreads, 0, stream>>>(
        M, N, K, A, B, epi, z0, splits, k_per_split);
    check(cudaGetLastError(), what);
  }
}

// The row tile for M rows: 16 or 32 rows for the small batch-sized products, 64 otherwise.
inline int row_tile(int64_t M) { return M <= 16 ? 16 : (M <= 32 ? 32 : 64); }

// `batch` products (see the top of this file), any M, N, K (K = 0 too: every element gets
// epilogue(i, j, 0)), the row tile from row_tile(M). splits > 1 splits K (see the top).
template <typename T, bool A_T, bool B_T, class OpA, class OpB, class Epilogue>
void launch_batched(int64_t M, int64_t N, int64_t K, int64_t batch, const OpA& A, const OpB& B,
                    const Epilogue& epi, cudaStream_t stream, const char* what, int splits = 1,
                    int64_t k_per_split = 0) {
  if (M <= 0 || N <= 0 || batch <= 0) return;
  if (splits <= 1) {
    splits = 1;
    k_per_split = K;
  }
  // Row tiles go on grid.x (up to 2^31 - 1), column tiles on grid.y (up to 65535).
  if (ceil_div(N, kBN) > 65535 || ceil_div(M, 16) > 2147483647LL)
    throw std::invalid_argument(std::string(what) + ": matrix too large (" + std::to_string(M) +
                                " x " + std::to_string(N) + ")");
  const int bm = row_tile(M);
  if (bm == 16)
    launch_bm<T, 16, A_T, B_T>(M, N, K, batch, A, B, epi, stream, what, splits, k_per_split);
  else if (bm == 32)
    launch_bm<T, 32, A_T, B_T>(M, N, K, batch, A, B, epi, stream, what, splits, k_per_split);
  else
    launch_bm<T, 64, A_T, B_T>(M, N, K, batch, A, B, epi, stream, what, splits, k_per_split);
}

// One product.
template <typename T, bool A_T, bool B_T, class OpA, class OpB, class Epilogue>
void launch(int64_t M, int64_t N, int64_t K, const OpA& A, const OpB& B, const Epilogue& epi,
            cudaStream_t stream, const char* what) {
  launch_batched<T, A_T, B_T>(M, N, K, 1, A, B, epi, stream, what);
}

// out[j] = sum over i < M of A(i, j) (A an Operand<T> or any type with its load(r, c)), in
// a fixed order: a block owns 32 columns; its 8 rows of threads each sum every 8th row in
// order, then one thread per column adds the 8 partial sums in order. Deterministic; M = 0
// gives zeros.
constexpr int kSumCols = 32, kSumRows = 8;

template <typename T, class Op>
__global__ void __launch_bounds__(kSumCols* kSumRows)
    column_sum_kernel(int64_t M, int64_t N, Op A, T* __restrict__ out) {
  __shared__ T partial[kSumRows][kSumCols];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = int64_t(blockIdx.x) * kSumCols + tx;
  T sum = T(0);
  if (j < N)
    for (int64_t i = ty; i < M; i += kSumRows) sum += A.load(i, j);
  partial[ty][tx] = sum;
  __syncthreads();
  if (ty == 0 && j < N) {
    T total = T(0);
    for (int r = 0; r < kSumRows; ++r) total += partial[r][tx];
    out[j] = total;
  }
}

template <typename T, class Op>
void column_sum_of(int64_t M, int64_t N, const Op& A, T* out, cudaStream_t stream, const char* what) {
  if (N <= 0) return;
  column_sum_kernel<T><<<static_cast<unsigned>(ceil_div(N, kSumCols)), dim3(kSumCols, kSumRows), 0,
                         stream>>>(M, N, A, out);
  check(cudaGetLastError(), what);
}

// The column sums of a contiguous row-major M x N matrix.
template <typename T>
void column_sum(int64_t M, int64_t N, const T* A, T* out, cudaStream_t stream, const char* what) {
  column_sum_of(M, N, Operand<T>{A, N}, out, stream, what);
}

}  // namespace
}  // namespace unet::cuda::gemm
