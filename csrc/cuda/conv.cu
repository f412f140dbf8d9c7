// CUDA convolution (math in unet/conv.h), the twin of cpu/conv.cpp: implicit GEMMs on the
// tiled GEMM of gemm_tiled.cuh, whose operands here compute the im2col addresses as they
// load (no column buffer in device memory):
//
//   forward          out[c, q]  = sum_k  W_g[c, k] patch(k, q)        M = C_out_g, N = positions
//                    (bias, preact and act in the epilogue)
//   backward-data    grad_x[ci, p] = sum_(c,tap) W_g[c, ci, tap] g(c, tap, p)  M = C_in_g,
//                    N = input positions; a gather: each input element sums its own terms
//   backward-weight  grad_W[c, k] = sum_q g[c, q] patch(k, q)        M = C_out_g, N = K
//
// with q = (n, oy, ox) an output position, k = (ci, ky, kx) a patch element and
// g = grad_out * act'(preact) formed while loading. Depthwise convolutions (one input
// channel per group) run direct kernels instead. Every element is summed by one thread
// (or one block, in a fixed tree) in a fixed order: results are run-to-run identical.
// fp32/fp64 SIMT; the mixed-precision (fp16/bf16) convolutions are cuda/conv_mma.cu.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda_check.cuh"
#include "conv_common.cuh"
#include "gemm_tiled.cuh"
#include "unet/conv.h"

namespace unet::cuda {
namespace {

using gemm::ceil_div;

// g = grad_out * act'(preact) at one offset.
template <typename T>
struct Grad {
  const T* grad_out;
  const T* preact;  // null: act is None
  Activation act;
  __device__ __forceinline__ T at(int64_t offset) const {
    T v = grad_out[offset];
    if (preact) v *= activation_derivative(act, preact[offset]);
    return v;
  }
};

// patch(k, q): the input value that patch element k of output position q + q0 reads in
// group `group` (0 in the padding).
template <typename T>
struct XPatch {
  const T* x;
  Dims d;
  int64_t group, q0;
  // one product, no batch: every z is the same operand
  __device__ __forceinline__ XPatch batch(int64_t) const { return *this; }
  __device__ __forceinline__ T load(int64_t k, int64_t q) const {
    q += q0;
    const int64_t n = q / d.P, p = q % d.P, oy = p / d.Wo, ox = p % d.Wo;
    const int64_t ci = group * d.Cig + k / d.taps, t = k % d.taps;
    const int64_t iy = oy * d.sh - d.pt + (t / d.KW) * d.dh;
    const int64_t ix = ox * d.sw - d.pl + (t % d.KW) * d.dw;
    if (iy < 0 || iy >= d.H || ix < 0 || ix >= d.W) return T(0);
    return x[((n * d.C_in + ci) * d.H + iy) * d.W + ix];
  }
};

// W_g[c, ci, tap] as A(ci, (c, tap)) of the backward-data product.
template <typename T>
struct WeightByInput {
  const T* w;
  Dims d;
  int64_t group;
  // one product, no batch: every z is the same operand
  __device__ __forceinline__ WeightByInput batch(int64_t) const { return *this; }
  __device__ __forceinline__ T load(int64_t ci, int64_t ct) const {
    const int64_t c = ct / d.taps, t = ct % d.taps;
    return w[((group * d.Cog + c) * d.Cig + ci) * d.taps + t];
  }
};

// g at the output position that tap t of output channel c sends to input position i + i0,
// as B((c, tap), i) of the backward-data product (0 where no output position does).
template <typename T>
struct GradPatch {
  Grad<T> g;
  Dims d;
  int64_t group, i0;
  // one product, no batch: every z is the same operand
  __device__ __forceinline__ GradPatch batch(int64_t) const { return *this; }
  __device__ __forceinline__ T load(int64_t ct, int64_t i) const {
    i += i0;
    const int64_t HW = d.H * d.W, n = i / HW, iy = i % HW / d.W, ix = i % d.W;
    const int64_t c = ct / d.taps, t = ct % d.taps;
    const int64_t ny = iy + d.pt - (t / d.KW) * d.dh, nx = ix + d.pl - (t % d.KW) * d.dw;
    if (ny < 0 || nx < 0 || ny % d.sh || nx % d.sw) return T(0);
    const int64_t oy = ny / d.sh, ox = nx / d.sw;
    if (oy >= d.Ho || ox >= d.Wo) return T(0);
    return g.at(((n * d.C_out + group * d.Cog + c) * d.Ho + oy) * d.Wo + ox);
  }
};

// g[c, q] of group `group` as A(c, q) of the backward-weight product.
template <typename T>
struct GradRows {
  Grad<T> g;
  Dims d;
  int64_t group;
  // one product, no batch: every z is the same operand
  __device__ __forceinline__ GradRows batch(int64_t) const { return *this; }
  __device__ __forceinline__ T load(int64_t c, int64_t q) const {
    const int64_t n = q / d.P, p = q % d.P;
    return g.at((n * d.C_out + group * d.Cog + c) * d.P + p);
  }
};

template <typename T>
struct ForwardEpilogue {
  Dims d;
  int64_t group, q0;
  const T* bias;
  T* out;
  T* preact;
  Activation act;
  __device__ __forceinline__ void operator()(int64_t c, int64_t q, T acc) const {
    q += q0;
    const int64_t co = group * d.Cog + c, n = q / d.P, p = q % d.P;
    const int64_t offset = (n * d.C_out + co) * d.P + p;
    const T z = bias ? acc + bias[co] : acc;
    if (preact) preact[offset] = z;
    out[offset] = activation_forward(act, z);
  }
};

template <typename T>
struct GradXEpilogue {
  Dims d;
  int64_t group, i0;
  T* grad_x;
  __device__ __forceinline__ void operator()(int64_t ci, int64_t i, T acc) const {
    i += i0;
    const int64_t HW = d.H * d.W, n = i / HW;
    grad_x[(n * d.C_in + group * d.Cig + ci) * HW + i % HW] = acc;
  }
};

template <typename T>
struct GradWEpilogue {
  Dims d;
  int64_t group;
  T* grad_weight;
  __device__ __forceinline__ void operator()(int64_t c, int64_t k, T acc) const {
    grad_weight[(group * d.Cog + c) * d.K + k] = acc;
  }
};

// The GEMM grid has at most 65535 column tiles: longer column ranges go in pieces.
constexpr int64_t kMaxColumns = int64_t(65535) * gemm::kBN;

// ---- the direct depthwise kernels

template <typename T>
__global__ void depthwise_forward_kernel(Dims d, const T* x, const T* w, const T* bias, T* out,
                                         T* preact, Activation act) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= d.N * d.C_out * d.P) return;
  const int64_t ox = i % d.Wo, oy = i / d.Wo % d.Ho, co = i / d.P % d.C_out, n = i / d.P / d.C_out;
  const T* xc = x + (n * d.C_in + co / d.Cog) * d.H * d.W;
  T acc = T(0);
  for (int64_t t = 0; t < d.taps; ++t) {
    const int64_t iy = oy * d.sh - d.pt + t / d.KW * d.dh, ix = ox * d.sw - d.pl + t % d.KW * d.dw;
    if (iy >= 0 && iy < d.H && ix >= 0 && ix < d.W)
      acc = gemm::fma_(w[co * d.taps + t], xc[iy * d.W + ix], acc);
  }
  const T z = bias ? acc + bias[co] : acc;
  if (preact) preact[i] = z;
  out[i] = activation_forward(act, z);
}

template <typename T>
__global__ void depthwise_grad_x_kernel(Dims d, Grad<T> g, const T* w, T* grad_x) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= d.N * d.C_in * d.H * d.W) return;
  const int64_t ix = i % d.W, iy = i / d.W % d.H, ci = i / (d.H * d.W) % d.C_in;
  const int64_t n = i / (d.H * d.W) / d.C_in;
  T acc = T(0);
  for (int64_t m = 0; m < d.Cog; ++m) {
    const int64_t co = ci * d.Cog + m;
    for (int64_t t = 0; t < d.taps; ++t) {
      const int64_t ny = iy + d.pt - t / d.KW * d.dh, nx = ix + d.pl - t % d.KW * d.dw;
      if (ny < 0 || nx < 0 || ny % d.sh || nx % d.sw) continue;
      const int64_t oy = ny / d.sh, ox = nx / d.sw;
      if (oy >= d.Ho || ox >= d.Wo) continue;
      acc = gemm::fma_(w[co * d.taps + t], g.at(((n * d.C_out + co) * d.Ho + oy) * d.Wo + ox), acc);
    }
  }
  grad_x[i] = acc;
}

// grad_weight[co, tap]: one block per (co, tap), summing over images and positions.
template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    depthwise_grad_w_kernel(Dims d, Grad<T> g, const T* x, T* grad_weight) {
  const int64_t co = blockIdx.x / d.taps, t = blockIdx.x % d.taps;
  const int64_t ky = t / d.KW, kx = t % d.KW;
  T sum = T(0);
  for (int64_t q = threadIdx.x; q < d.N * d.P; q += kReduceThreads) {
    const int64_t n = q / d.P, oy = q % d.P / d.Wo, ox = q % d.Wo;
    const int64_t iy = oy * d.sh - d.pt + ky * d.dh, ix = ox * d.sw - d.pl + kx * d.dw;
    if (iy < 0 || iy >= d.H || ix < 0 || ix >= d.W) continue;
    const T xv = x[((n * d.C_in + co / d.Cog) * d.H + iy) * d.W + ix];
    sum = gemm::fma_(g.at((n * d.C_out + co) * d.P + q % d.P), xv, sum);
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) grad_weight[co * d.taps + t] = sum;
}

constexpr int kPointwiseThreads = 256;

unsigned blocks_for(int64_t n) {
  const int64_t b = ceil_div(n, kPointwiseThreads);
  if (b > 2147483647LL) throw std::invalid_argument("conv (CUDA): tensor too large");
  return static_cast<unsigned>(b);
}

}  // namespace

template <typename T>
void conv_forward(const ConvForwardArgs<T>& a, uintptr_t stream, int device) {
  const ConvGeometry& g = a.geo;
  const Dims d = dims_of(g);
  const int64_t total = d.N * d.P;
  if (total == 0) return;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  DeviceGuard guard(device);
  if (is_depthwise(g)) {
    depthwise_forward_kernel<T><<<blocks_for(total * d.C_out), kPointwiseThreads, 0, s>>>(
        d, a.x, a.weight, a.bias, a.out, a.preact, a.act);
    return check(cudaGetLastError(), "conv depthwise forward launch");
  }
  for (int64_t group = 0; group < g.groups; ++group)
    for (int64_t q0 = 0; q0 < total; q0 += kMaxColumns) {
      const int64_t n = std::min(kMaxColumns, total - q0);
      gemm::launch<T, false, false>(
          d.Cog, n, d.K, gemm::Operand<T>{a.weight + group * d.Cog * d.K, d.K},
          XPatch<T>{a.x, d, group, q0},
          ForwardEpilogue<T>{d, group, q0, a.bias, a.out, a.preact, a.act}, s, "conv forward");
    }
}

template <typename T>
void conv_backward(const ConvBackwardArgs<T>& a, uintptr_t stream, int device) {
  const ConvGeometry& g = a.geo;
  const Dims d = dims_of(g);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const Grad<T> grad{a.grad_out, a.act == Activation::None ? nullptr : a.preact, a.act};
  DeviceGuard guard(device);
  if (a.grad_bias && d.C_out > 0) {
    bias_grad_kernel<T><<<reduce_blocks(d.C_out), kReduceThreads, 0, s>>>(d, grad, a.grad_bias);
    check(cudaGetLastError(), "conv bias gradient launch");
  }
  const int64_t inputs = d.N * d.H * d.W;
  if (is_depthwise(g)) {
    if (a.grad_x && inputs > 0) {
      depthwise_grad_x_kernel<T><<<blocks_for(inputs * d.C_in), kPointwiseThreads, 0, s>>>(
          d, grad, a.weight, a.grad_x);
      check(cudaGetLastError(), "conv depthwise backward-data launch");
    }
    if (a.grad_weight) {
      depthwise_grad_w_kernel<T><<<reduce_blocks(d.C_out * d.taps), kReduceThreads, 0, s>>>(
          d, grad, a.x, a.grad_weight);
      check(cudaGetLastError(), "conv depthwise backward-weight launch");
    }
    return;
  }
  for (int64_t group = 0; group < g.groups; ++group) {
    if (a.grad_x)
      for (int64_t i0 = 0; i0 < inputs; i0 += kMaxColumns) {
        const int64_t n = std::min(kMaxColumns, inputs - i0);
        gemm::launch<T, false, false>(d.Cig, n, d.Cog * d.taps, WeightByInput<T>{a.weight, d, group},
                                      GradPatch<T>{grad, d, group, i0},
                                      GradXEpilogue<T>{d, group, i0, a.grad_x}, s,
                                      "conv backward-data");
      }
    if (a.grad_weight)  // B(q, k) = patch(k, q): stored "transposed", loads run along q
      gemm::launch<T, false, true>(d.Cog, d.K, d.N * d.P, GradRows<T>{grad, d, group},
                                   XPatch<T>{a.x, d, group, 0},
                                   GradWEpilogue<T>{d, group, a.grad_weight}, s,
                                   "conv backward-weight");
  }
}

template void conv_forward<float>(const ConvForwardArgs<float>&, uintptr_t, int);
template void conv_forward<double>(const ConvForwardArgs<double>&, uintptr_t, int);
template void conv_backward<float>(const ConvBackwardArgs<float>&, uintptr_t, int);
template void conv_backward<double>(const ConvBackwardArgs<double>&, uintptr_t, int);

}  // namespace unet::cuda
