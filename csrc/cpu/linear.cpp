// CPU fused linear layer (math in unet/linear.h): three calls of the blocked GEMM with the
// epilogue (forward) or the activation derivative (backward) fused in, plus the bias
// gradient as a column sum.
#include "unet/linear.h"

#include <algorithm>

#include "gemm.h"

namespace unet::cpu {

template <typename T>
void linear_forward(const LinearForwardArgs<T>& a) {
  // z[i,j] = sum_k x[i,k] W[j,k]: both operands are read along their contiguous rows.
  gemm<T>(a.M, a.N, a.K, {a.x, a.K, 1}, {a.weight, a.K, 1}, a.out, a.N,
          {a.bias, a.act, a.preact});
}

template <typename T>
void linear_backward(const LinearBackwardArgs<T>& a) {
  const int64_t M = a.M, N = a.N, K = a.K;
  // g = grad_out * act'(preact) is never stored: the GEMMs' packing applies act' as it
  // reads grad_out (grad_out and preact share one layout, so one offset serves both).
  const T* dpre = a.act == Activation::None ? nullptr : a.preact;
  if (a.grad_x)  // dx[i,j] = sum_n g[i,n] W[n,j]
    gemm<T>(M, K, N, {a.grad_out, N, 1, dpre, a.act}, {a.weight, 1, K}, a.grad_x, K);
  if (a.grad_weight)  // dW[n,j] = sum_i g[i,n] x[i,j]: one GEMM over all M rows
    gemm<T>(N, K, M, {a.grad_out, 1, N, dpre, a.act}, {a.x, 1, K}, a.grad_weight, K);
  if (a.grad_bias) {
    // Column sums of g. Threads own column blocks and add rows in order, so the result
    // does not depend on the thread count.
    constexpr int64_t kCols = 64;
#pragma omp parallel for schedule(static) if (M * N > (int64_t(1) << 16))
    for (int64_t j0 = 0; j0 < N; j0 += kCols) {
      const int64_t n = std::min(kCols, N - j0);
      T sum[kCols] = {};
      for (int64_t i = 0; i < M; ++i) {
        const T* go = a.grad_out + i * N + j0;
        if (dpre) {
          const T* z = dpre + i * N + j0;
          for (int64_t j = 0; j < n; ++j) sum[j] += go[j] * activation_derivative(a.act, z[j]);
        } else {
          for (int64_t j = 0; j < n; ++j) sum[j] += go[j];
        }
      }
      std::copy(sum, sum + n, a.grad_bias + j0);
    }
  }
}

template void linear_forward<float>(const LinearForwardArgs<float>&);
template void linear_forward<double>(const LinearForwardArgs<double>&);
template void linear_backward<float>(const LinearBackwardArgs<float>&);
template void linear_backward<double>(const LinearBackwardArgs<double>&);

}  // namespace unet::cpu
