// CUDA LSTM with layer normalization and/or zoneout, GRU with zoneout (math and contract in
// unet/rnn_ln.h), the twin of cpu/rnn_ln.cpp with the same workspace and scratch planes:
//
//   forward    gates = x W_ih^T (+ b_ih unless normalized)   one GEMM over all T*B rows
//              per step: hg = h W_hh^T (+ b_hh ...)           GEMM, M = B
//                        one block per sequence: layer norms (block sums in a fixed order),
//                        gates, cell, zoneout, saves for backward
//   backward   per step, last to first: one block per sequence turns dh, dc into dpre and
//              through the norms into dA_ih, dA_hh; then dh += dA_hh W_hh (GEMM epilogue);
//              after the loop: dx, dW_ih, dW_hh GEMMs over all rows, column sums for the
//              biases and the norms' gains and biases.
// Every sum has a fixed order (no atomics): results are run-to-run identical.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_check.cuh"
#include "gemm_tiled.cuh"
#include "rnn_projection.cuh"
#include "unet/activations.h"
#include "unet/rnn_ln.h"

namespace unet::cuda {
namespace rnn_ln {
namespace {

using gemm::Operand;

constexpr int kThreads = 256;

template <typename T>
using Layer = RnnLnLayout<T>;

template <typename T>
struct Grads {
  T *dA_ih, *dA_hh, *dpre, *dlc, *dh, *dc, *dA_step;
};

// Sum over j < n of value(j), the same in every thread of the block: each thread sums its
// strided elements in order, then a shared-memory tree in a fixed order.
template <typename T, class F>
__device__ T block_sum(int64_t n, F value, T* shared) {
  T acc = T(0);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) acc += value(j);
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) shared[threadIdx.x] += shared[threadIdx.x + w];
    __syncthreads();
  }
  const T total = shared[0];
  __syncthreads();
  return total;
}

template <typename T>
__device__ T normalize(const T* a, int64_t n, T eps, T* xhat, T* shared) {
  const T mean = block_sum<T>(n, [&](int64_t j) { return a[j]; }, shared) / T(n);
  const T var = block_sum<T>(n, [&](int64_t j) { return (a[j] - mean) * (a[j] - mean); }, shared);
  const T rstd = T(1) / sqrt(var / T(n) + eps);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) xhat[j] = (a[j] - mean) * rstd;
  __syncthreads();
  return rstd;
}

// da = rstd * (dy γ - mean(dy γ) - xhat mean(dy γ xhat)); da may be dy.
template <typename T>
__device__ void normalize_backward(const T* dy, const T* gamma, const T* xhat, T rstd, int64_t n,
                                   T* da, T* shared) {
  const T s1 = block_sum<T>(n, [&](int64_t j) { return dy[j] * gamma[j]; }, shared) / T(n);
  const T s2 =
      block_sum<T>(n, [&](int64_t j) { return dy[j] * gamma[j] * xhat[j]; }, shared) / T(n);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
    da[j] = rstd * (dy[j] * gamma[j] - s1 - xhat[j] * s2);
  __syncthreads();
}

template <typename T>
__device__ T zone(const T* keep, int64_t j, T old_value, T new_value) {
  return keep ? keep[j] * old_value + (T(1) - keep[j]) * new_value : new_value;
}

template <typename T>
__device__ void fill(T* p, int64_t n, T v) {
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) p[j] = v;
}

template <typename T>
__device__ void copy(const T* src, int64_t n, T* dst) {
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) dst[j] = src[j];
}

// One step, block b = sequence b. h, c: the state [B, H], updated in place.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_step(Layer<T> L, RnnLnArgs<T> e, const T* bias, const T* hg_all, T* y_all, T* h_all,
                 T* c_all, int64_t s) {
  __shared__ T shared[kThreads];
  const int64_t b = blockIdx.x, H = L.H, GH = L.GH, r = L.row(s, b);
  T *h = h_all + b * H, *c = L.lstm ? c_all + b * H : nullptr, *y = y_all + r * H;
  T *g = L.gates + r * GH, *hp = L.hprev + r * H, *aux = L.aux + r * H;
  const T* hg = hg_all + b * GH;
  const T* kh = e.keep_h ? e.keep_h + r * H : nullptr;
  if (s >= L.length(b)) {  // padded: the state stays, y = 0, the saves are zeros
    fill(g, GH, T(0));
    fill(aux, H, T(0));
    fill(y, H, T(0));
    copy(h, H, hp);
    if (L.lstm) copy(c, H, L.cprev + r * H);
    if (L.ln) {
      fill(L.xih + r * GH, GH, T(0));
      fill(L.xhh + r * GH, GH, T(0));
      fill(L.xc + r * H, H, T(0));
      fill(L.rstd + r * 3, 3, T(0));
    }
    return;
  }
  if (!L.lstm) {
    for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
      const T rg = sigmoid(g[j] + hg[j]), z = sigmoid(g[H + j] + hg[H + j]), hn = hg[2 * H + j];
      const T n = tanh_(g[2 * H + j] + rg * hn), old = h[j];
      g[j] = rg, g[H + j] = z, g[2 * H + j] = n;
      aux[j] = hn;
      hp[j] = old;
      h[j] = y[j] = zone(kh, j, old, n + z * (old - n));
    }
    return;
  }
  T* cp = L.cprev + r * H;
  const T* kc = e.keep_c ? e.keep_c + r * H : nullptr;
  copy(h, H, hp);
  copy(c, H, cp);
  if (L.ln) {
    T *xih = L.xih + r * GH, *xhh = L.xhh + r * GH;
    const T r0 = normalize(g, GH, e.eps, xih, shared);
    const T r1 = normalize(hg, GH, e.eps, xhh, shared);
    if (threadIdx.x == 0) L.rstd[r * 3] = r0, L.rstd[r * 3 + 1] = r1;
    for (int64_t j = threadIdx.x; j < GH; j += blockDim.x)
      g[j] = e.ln_ih_weight[j] * xih[j] + e.ln_ih_bias[j] + e.ln_hh_weight[j] * xhh[j] +
             e.ln_hh_bias[j] + (bias ? bias[j] : T(0));
  } else {
    for (int64_t j = threadIdx.x; j < GH; j += blockDim.x) g[j] += hg[j];
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    const T i = sigmoid(g[j]), f = sigmoid(g[H + j]), z = tanh_(g[2 * H + j]),
            o = sigmoid(g[3 * H + j]);
    g[j] = i, g[H + j] = f, g[2 * H + j] = z, g[3 * H + j] = o;
    aux[j] = f * cp[j] + i * z;  // the new cell, for now
  }
  __syncthreads();
  const T* xc = nullptr;
  if (L.ln) {
    const T r2 = normalize(aux, H, e.eps, L.xc + r * H, shared);
    if (threadIdx.x == 0) L.rstd[r * 3 + 2] = r2;
    xc = L.xc + r * H;
  }
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    const T cn = aux[j];
    c[j] = zone(kc, j, cp[j], cn);
    aux[j] = tanh_(xc ? e.ln_c_weight[j] * xc[j] + e.ln_c_bias[j] : cn);
    h[j] = y[j] = zone(kh, j, hp[j], g[3 * H + j] * aux[j]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    backward_step(Layer<T> L, RnnLnArgs<T> e, Grads<T> d, const T* grad_y, int64_t s) {
  __shared__ T shared[kThreads];
  const int64_t b = blockIdx.x, H = L.H, GH = L.GH, r = L.row(s, b);
  T* step = d.dA_step + b * GH;
  if (s >= L.length(b)) {  // padded: no gradient; dh, dc pass through unchanged
    fill(d.dA_ih + r * GH, GH, T(0));
    fill(d.dA_hh + r * GH, GH, T(0));
    fill(d.dpre + r * GH, GH, T(0));
    if (L.ln) fill(d.dlc + r * H, H, T(0));
    fill(step, GH, T(0));
    return;
  }
  const T *g = L.gates + r * GH, *aux = L.aux + r * H, *gy = grad_y + r * H;
  const T* kh = e.keep_h ? e.keep_h + r * H : nullptr;
  T* dh = d.dh + b * H;
  if (!L.lstm) {
    const T* hp = L.hprev + r * H;
    T *di = d.dA_ih + r * GH, *ds = d.dA_hh + r * GH;
    for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
      const T dht = dh[j] + gy[j];
      const T dhn = kh ? (T(1) - kh[j]) * dht : dht;
      const T rg = g[j], z = g[H + j], n = g[2 * H + j];
      const T dn = dhn * (T(1) - z) * (T(1) - n * n);
      const T dz = dhn * (hp[j] - n) * z * (T(1) - z);
      const T dr = dn * aux[j] * rg * (T(1) - rg);
      di[j] = ds[j] = step[j] = dr;
      di[H + j] = ds[H + j] = step[H + j] = dz;
      di[2 * H + j] = dn;
      ds[2 * H + j] = step[2 * H + j] = dn * rg;
      dh[j] = (kh ? kh[j] * dht : T(0)) + dhn * z;
    }
    return;
  }
  const T* cp = L.cprev + r * H;
  const T* kc = e.keep_c ? e.keep_c + r * H : nullptr;
  T *dc = d.dc + b * H, *dpre = d.dpre + r * GH;
  T* dl = L.ln ? d.dlc + r * H : dpre;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    const T dht = dh[j] + gy[j];
    const T dhn = kh ? (T(1) - kh[j]) * dht : dht;
    const T o = g[3 * H + j], t = aux[j];
    dpre[3 * H + j] = dhn * t * o * (T(1) - o);
    dl[j] = dhn * o * (T(1) - t * t);
    dh[j] = kh ? kh[j] * dht : T(0);
  }
  __syncthreads();
  if (L.ln) normalize_backward(dl, e.ln_c_weight, L.xc + r * H, L.rstd[r * 3 + 2], H, dpre, shared);
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    const T dct = dc[j];
    const T dcn = (kc ? (T(1) - kc[j]) * dct : dct) + dpre[j];
    const T i = g[j], f = g[H + j], z = g[2 * H + j];
    dpre[j] = dcn * z * i * (T(1) - i);
    dpre[H + j] = dcn * cp[j] * f * (T(1) - f);
    dpre[2 * H + j] = dcn * i * (T(1) - z * z);
    dc[j] = (kc ? kc[j] * dct : T(0)) + dcn * f;
  }
  __syncthreads();
  if (L.ln) {
    normalize_backward(dpre, e.ln_ih_weight, L.xih + r * GH, L.rstd[r * 3], GH, d.dA_ih + r * GH,
                       shared);
    normalize_backward(dpre, e.ln_hh_weight, L.xhh + r * GH, L.rstd[r * 3 + 1], GH,
                       d.dA_hh + r * GH, shared);
  }
  copy(d.dA_hh + r * GH, GH, step);
}

// out[j] = sum over rows i, in order, of a[i*n + j] * b[i*n + j]: one thread per column.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    column_dot(int64_t rows, int64_t n, const T* a, const T* b, T* out) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  T acc = T(0);
  for (int64_t i = 0; i < rows; ++i) acc += a[i * n + j] * b[i * n + j];
  out[j] = acc;
}

template <typename T>
struct AddTo {  // C += acc
  T* C;
  int64_t ldc;
  __device__ void operator()(int64_t i, int64_t j, T acc) const { C[i * ldc + j] += acc; }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) add_biases(int64_t n, const T* a, const T* b, T* out) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j < n) out[j] = a[j] + b[j];
}

template <typename T>
__global__ void __launch_bounds__(kThreads) copy_or_zero(int64_t n, const T* src, T* dst) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n;
       j += int64_t(gridDim.x) * blockDim.x)
    dst[j] = src ? src[j] : T(0);
}

unsigned blocks(int64_t n) {
  const int64_t g = gemm::ceil_div(n, kThreads);
  return static_cast<unsigned>(g < 4096 ? (g > 0 ? g : 1) : 4096);
}

template <typename T>
void copy_n(int64_t n, const T* src, T* dst, cudaStream_t s) {
  if (n <= 0 || !dst) return;
  copy_or_zero<T><<<blocks(n), kThreads, 0, s>>>(n, src, dst);
  check(cudaGetLastError(), "rnn_ln (CUDA): copy launch");
}

}  // namespace
}  // namespace rnn_ln

template <typename T>
void rnn_ln_forward(const RnnForwardArgs<T>& a, const RnnLnArgs<T>& e, uintptr_t stream,
                    int device) {
  using namespace rnn_ln;
  const Layer<T> L(a, e);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  DeviceGuard guard(device);
  const int64_t B = L.B, H = L.H, GH = L.GH;
  if (B == 0 || H == 0) return;
  copy_n(B * H, a.h0, a.h_n, s);
  if (L.lstm) copy_n(B * H, a.c0, a.c_n, s);
  if (L.TB == 0) return;
  rnn_input_projection(a, L.ln ? nullptr : a.b_ih, L.gates, s, device,
                       "rnn_ln forward (CUDA): input projection");
  DeviceBuffer<T> hg(B * GH, s), bias(L.ln && a.b_ih ? GH : 0, s);
  if (bias.p) {
    add_biases<T><<<blocks(GH), kThreads, 0, s>>>(GH, a.b_ih, a.b_hh, bias.p);
    check(cudaGetLastError(), "rnn_ln forward (CUDA): bias launch");
  }
  for (int64_t st = 0; st < L.steps; ++st) {
    gemm::launch<T, false, true>(B, GH, H, Operand<T>{a.h_n, H}, Operand<T>{a.w_hh, H},
                                 StoreBias<T>{hg.p, GH, L.ln ? nullptr : a.b_hh}, s,
                                 "rnn_ln forward (CUDA): recurrent GEMM launch");
    forward_step<T><<<static_cast<unsigned>(B), kThreads, 0, s>>>(L, e, bias.p, hg.p, a.y, a.h_n,
                                                                 a.c_n, st);
    check(cudaGetLastError(), "rnn_ln forward (CUDA): step launch");
  }
}

template <typename T>
void rnn_ln_backward(const RnnBackwardArgs<T>& a, const RnnLnArgs<T>& e, const RnnLnGrads<T>& gr,
                     uintptr_t stream, int device) {
  using namespace rnn_ln;
  const RnnForwardArgs<T>& f = a.fwd;
  const Layer<T> L(f, e);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  DeviceGuard guard(device);
  const int64_t B = L.B, H = L.H, GH = L.GH, TB = L.TB, I = L.I;
  if (B == 0 || H == 0) return;
  DeviceBuffer<T> dh(B * H, s), dc(L.lstm ? B * H : 0, s), dA_step(B * GH, s);
  copy_n(B * H, a.grad_h_n, dh.p, s);
  if (L.lstm) copy_n(B * H, a.grad_c_n, dc.p, s);
  Grads<T> d{a.scratch, a.scratch, a.scratch, a.scratch + 3 * TB * GH, dh.p, dc.p, dA_step.p};
  if (L.ln) d.dA_hh = d.dA_ih + TB * GH, d.dpre = d.dA_hh + TB * GH;
  if (!L.lstm) d.dA_hh = d.dA_ih + TB * GH;
  for (int64_t st = L.steps - 1; st >= 0; --st) {
    backward_step<T><<<static_cast<unsigned>(B), kThreads, 0, s>>>(L, e, d, a.grad_y, st);
    check(cudaGetLastError(), "rnn_ln backward (CUDA): step launch");
    if (st == 0 && !a.grad_h0) break;
    gemm::launch<T, false, false>(B, H, GH, Operand<T>{dA_step.p, GH}, Operand<T>{f.w_hh, H},
                                  AddTo<T>{dh.p, H}, s,
                                  "rnn_ln backward (CUDA): recurrent GEMM launch");
  }
  copy_n(B * H, dh.p, a.grad_h0, s);
  if (L.lstm) copy_n(B * H, dc.p, a.grad_c0, s);
  const char* what = "rnn_ln backward (CUDA): parameter gradient launch";
  if (a.grad_x)
    gemm::launch<T, false, false>(TB, I, GH, Operand<T>{d.dA_ih, GH}, Operand<T>{f.w_ih, I},
                                  StoreBias<T>{a.grad_x, I, nullptr}, s, what);
  if (a.grad_w_ih)
    gemm::launch<T, true, false>(GH, I, TB, Operand<T>{d.dA_ih, GH}, Operand<T>{f.x, I},
                                 StoreBias<T>{a.grad_w_ih, I, nullptr}, s, what);
  if (a.grad_w_hh)
    gemm::launch<T, true, false>(GH, H, TB, Operand<T>{d.dA_hh, GH}, Operand<T>{L.hprev, H},
                                 StoreBias<T>{a.grad_w_hh, H, nullptr}, s, what);
  const T* sums_ih = L.lstm ? d.dpre : d.dA_ih;
  const T* sums_hh = L.lstm ? d.dpre : d.dA_hh;
  if (a.grad_b_ih) gemm::column_sum(TB, GH, sums_ih, a.grad_b_ih, s, what);
  if (a.grad_b_hh) gemm::column_sum(TB, GH, sums_hh, a.grad_b_hh, s, what);
  if (!L.ln) return;
  auto dot = [&](int64_t n, const T* x, const T* y, T* out) {
    if (!out) return;
    column_dot<T><<<static_cast<unsigned>(gemm::ceil_div(n, kThreads)), kThreads, 0, s>>>(TB, n, x, y, out);
    check(cudaGetLastError(), what);
  };
  dot(GH, d.dpre, L.xih, gr.ln_ih_weight);
  dot(GH, d.dpre, L.xhh, gr.ln_hh_weight);
  dot(H, d.dlc, L.xc, gr.ln_c_weight);
  if (gr.ln_ih_bias) gemm::column_sum(TB, GH, d.dpre, gr.ln_ih_bias, s, what);
  if (gr.ln_hh_bias) gemm::column_sum(TB, GH, d.dpre, gr.ln_hh_bias, s, what);
  if (gr.ln_c_bias) gemm::column_sum(TB, H, d.dlc, gr.ln_c_bias, s, what);
}

template void rnn_ln_forward<float>(const RnnForwardArgs<float>&, const RnnLnArgs<float>&, uintptr_t, int);
template void rnn_ln_forward<double>(const RnnForwardArgs<double>&, const RnnLnArgs<double>&, uintptr_t, int);
template void rnn_ln_backward<float>(const RnnBackwardArgs<float>&, const RnnLnArgs<float>&,
                                     const RnnLnGrads<float>&, uintptr_t, int);
template void rnn_ln_backward<double>(const RnnBackwardArgs<double>&, const RnnLnArgs<double>&,
                                      const RnnLnGrads<double>&, uintptr_t, int);

}  // namespace unet::cuda
