// CUDA fused linear layer (math in unet/linear.h), the twin of cpu/linear.cpp.
//
// One shared-memory tiled GEMM serves the three products; two template flags say how
// each operand is stored:
//   forward    z  = x W^T    A = x [M,K],                 B = W [N,K] read transposed
//   backward   dx = g W      A = g [M,N],                 B = W [N,K]
//              dW = g^T x    A = g [M,N] read transposed, B = x [M,K]
// g = grad_out * act'(preact) is formed while A tiles are loaded, never stored; bias,
// activation and the pre-activation store run in the epilogue. A second kernel sums g
// over rows for the bias gradient in a fixed order, so results are run-to-run identical.
// Products use explicit fma: the build never uses --use_fast_math.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_check.cuh"
#include "unet/linear.h"

namespace unet::cuda {
namespace {

// A 256-thread block computes a BM x BN tile of C, each thread a TM x TN register tile
// at rows ty + 16*r, columns tx + 16*c: a warp then reads 16 consecutive B values
// (no bank conflicts) and 2 A values (broadcast), and writes C in 16-wide runs.
constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;
constexpr int kThreadsX = BN / TN, kThreadsY = BM / TM;
constexpr int kThreads = kThreadsX * kThreadsY;
static_assert(BM * BK % kThreads == 0 && BK * BN % kThreads == 0, "tile loads must divide evenly");

__device__ __forceinline__ float fma_(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fma_(double a, double b, double c) { return fma(a, b, c); }

// C[M,N] (row-major) = op(A) op(B), then z = C + bias[j]; preact = z; C = act(z).
// op(A)(i,k) = A[i*lda + k], or A[k*lda + i] when A_T; when dpre is set it is multiplied
// by act'(dpre[same offset]) (dact). op(B)(k,j) = B[k*ldb + j], or B[j*ldb + k] when B_T.
// bias, preact, dpre may be null. Every load and store is bounds-checked, so any M, N, K
// (K = 0 too: C = act(bias)) is safe.
template <typename T, bool A_T, bool B_T>
__global__ void __launch_bounds__(kThreads)
    gemm_tiled_kernel(int64_t M, int64_t N, int64_t K, const T* __restrict__ A, int64_t lda,
                      const T* __restrict__ dpre, Activation dact, const T* __restrict__ B,
                      int64_t ldb, T* __restrict__ C, const T* __restrict__ bias,
                      T* __restrict__ preact, Activation act) {
  // +1 column of padding: the tile stores below hit distinct banks.
  __shared__ T As[BK][BM + 1];
  __shared__ T Bs[BK][BN + 1];
  const int tid = threadIdx.x;
  const int tx = tid % kThreadsX, ty = tid / kThreadsX;
  const int64_t i0 = int64_t(blockIdx.x) * BM, j0 = int64_t(blockIdx.y) * BN;

  T acc[TM][TN];
#pragma unroll
  for (int r = 0; r < TM; ++r)
#pragma unroll
    for (int c = 0; c < TN; ++c) acc[r][c] = T(0);

  for (int64_t k0 = 0; k0 < K; k0 += BK) {
    // Consecutive threads load consecutive global addresses (coalesced) whichever way
    // the operand is stored; out-of-range elements are zeros.
#pragma unroll
    for (int l = 0; l < BM * BK / kThreads; ++l) {
      const int e = tid + l * kThreads;
      const int r = A_T ? e % BM : e / BK, k = A_T ? e / BM : e % BK;
      const int64_t gi = i0 + r, gk = k0 + k;
      T v = T(0);
      if (gi < M && gk < K) {
        const int64_t off = A_T ? gk * lda + gi : gi * lda + gk;
        v = A[off];
        if (dpre) v *= activation_derivative(dact, dpre[off]);
      }
      As[k][r] = v;
    }
#pragma unroll
    for (int l = 0; l < BK * BN / kThreads; ++l) {
      const int e = tid + l * kThreads;
      const int c = B_T ? e / BK : e % BN, k = B_T ? e % BK : e / BN;
      const int64_t gj = j0 + c, gk = k0 + k;
      T v = T(0);
      if (gj < N && gk < K) v = B[B_T ? gj * ldb + gk : gk * ldb + gj];
      Bs[k][c] = v;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      T a[TM], b[TN];
#pragma unroll
      for (int r = 0; r < TM; ++r) a[r] = As[k][ty + r * kThreadsY];
#pragma unroll
      for (int c = 0; c < TN; ++c) b[c] = Bs[k][tx + c * kThreadsX];
#pragma unroll
      for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int c = 0; c < TN; ++c) acc[r][c] = fma_(a[r], b[c], acc[r][c]);
    }
    __syncthreads();  // before the next tiles overwrite As/Bs
  }

#pragma unroll
  for (int r = 0; r < TM; ++r) {
    const int64_t i = i0 + ty + r * kThreadsY;
    if (i >= M) continue;
#pragma unroll
    for (int c = 0; c < TN; ++c) {
      const int64_t j = j0 + tx + c * kThreadsX;
      if (j >= N) continue;
      T z = acc[r][c];
      if (bias) z += bias[j];
      if (preact) preact[i * N + j] = z;
      C[i * N + j] = activation_forward(act, z);
    }
  }
}

// grad_bias[j] = sum_i grad_out[i,j] * act'(preact[i,j]). A block owns 32 columns; its 8
// rows of threads each sum every 8th row in order, then one thread per column adds the 8
// partial sums in order: a fixed summation order, so deterministic.
constexpr int kBiasCols = 32, kBiasRows = 8;

template <typename T>
__global__ void __launch_bounds__(kBiasCols* kBiasRows)
    bias_grad_kernel(int64_t M, int64_t N, const T* __restrict__ grad_out,
                     const T* __restrict__ dpre, Activation dact, T* __restrict__ grad_bias) {
  __shared__ T partial[kBiasRows][kBiasCols];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = int64_t(blockIdx.x) * kBiasCols + tx;
  T sum = T(0);
  if (j < N) {
    for (int64_t i = ty; i < M; i += kBiasRows) {
      T g = grad_out[i * N + j];
      if (dpre) g *= activation_derivative(dact, dpre[i * N + j]);
      sum += g;
    }
  }
  partial[ty][tx] = sum;
  __syncthreads();
  if (ty == 0 && j < N) {
    T total = T(0);
    for (int r = 0; r < kBiasRows; ++r) total += partial[r][tx];
    grad_bias[j] = total;
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T, bool A_T, bool B_T>
void launch_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* dpre,
                 Activation dact, const T* B, int64_t ldb, T* C, const T* bias, T* preact,
                 Activation act, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  // Row tiles go on grid.x (up to 2^31 - 1), column tiles on grid.y (up to 65535).
  if (ceil_div(N, BN) > 65535)
    throw std::invalid_argument("linear (CUDA): at most " + std::to_string(65535 * BN) +
                                " output columns, got " + std::to_string(N));
  const dim3 grid(static_cast<unsigned>(ceil_div(M, BM)), static_cast<unsigned>(ceil_div(N, BN)));
  gemm_tiled_kernel<T, A_T, B_T><<<grid, kThreads, 0, stream>>>(M, N, K, A, lda, dpre, dact, B,
                                                                 ldb, C, bias, preact, act);
  check(cudaGetLastError(), "gemm_tiled_kernel launch");
}

}  // namespace

template <typename T>
void linear_forward(const LinearForwardArgs<T>& a, uintptr_t stream, int device) {
  if (a.M == 0 || a.N == 0) return;
  DeviceGuard guard(device);
  launch_gemm<T, false, true>(a.M, a.N, a.K, a.x, a.K, nullptr, Activation::None, a.weight, a.K,
                              a.out, a.bias, a.preact, a.act,
                              reinterpret_cast<cudaStream_t>(stream));
}

template <typename T>
void linear_backward(const LinearBackwardArgs<T>& a, uintptr_t stream, int device) {
  const int64_t M = a.M, N = a.N, K = a.K;
  const T* dpre = a.act == Activation::None ? nullptr : a.preact;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  DeviceGuard guard(device);
  if (a.grad_x)
    launch_gemm<T, false, false>(M, K, N, a.grad_out, N, dpre, a.act, a.weight, K, a.grad_x,
                                 nullptr, nullptr, Activation::None, s);
  if (a.grad_weight)
    launch_gemm<T, true, false>(N, K, M, a.grad_out, N, dpre, a.act, a.x, K, a.grad_weight,
                                nullptr, nullptr, Activation::None, s);
  if (a.grad_bias && N > 0) {
    bias_grad_kernel<T><<<static_cast<unsigned>(ceil_div(N, kBiasCols)),
                          dim3(kBiasCols, kBiasRows), 0, s>>>(M, N, a.grad_out, dpre, a.act,
                                                              a.grad_bias);
    check(cudaGetLastError(), "bias_grad_kernel launch");
  }
}

template void linear_forward<float>(const LinearForwardArgs<float>&, uintptr_t, int);
template void linear_forward<double>(const LinearForwardArgs<double>&, uintptr_t, int);
template void linear_backward<float>(const LinearBackwardArgs<float>&, uintptr_t, int);
template void linear_backward<double>(const LinearBackwardArgs<double>&, uintptr_t, int);

}  // namespace unet::cuda
