// CUDA recurrent layers (math in unet/rnn.h), the twin of cpu/rnn.cpp: the per-step path,
// the dispatch between it and the persistent path (cuda/rnn_persistent.cu), and what both
// share (input projection, weight gradients). Workspace layout: cuda/rnn_kernels.cuh.
//
// Forward:   gates = x W_ih^T + b_ih                        one GEMM over all T*B rows
//              (rnn_projection.cuh: 16-bit inputs on tensor cores with projection_dtype)
//            per step s (time t): gates[t] += hprev[t] W_hh^T + b_hh   (GRU: the n part goes to
//              aux[t] instead), then one fused cell kernel (activations, cell update, lengths
//              mask; writes y[t], the next state, what backward needs);
//              LSTM with projection: h' = m W_hr^T in a GEMM whose epilogue applies the mask.
// Backward:  per step, from the last processed to the first: [projection: dh = dh_carry +
//              dy masked; dm = dh W_hr], one fused cell-backward kernel (d pre-activations,
//              the cell gradient, the direct part of dh_prev), then dh_carry += dgh[t] W_hh;
//            then grad_x = dgi W_ih, dW_ih = dgi^T x, dW_hh = dgh^T hprev, dW_hr = dh^T m and
//              the biases as column sums: each one GEMM / one reduction over all T*B rows.
// The persistent path replaces the per-step loops (forward and backward alike) whenever the
// shape fits (no projection, batch <= 32, W_hh within the grid's shared memory). The
// environment variable UNET_RNN_PATH, read at every call, overrides: 'step' always takes the
// per-step path, 'persistent' takes the persistent one or throws saying why it cannot
// (for tests), 'auto' or unset chooses as above.
// Everything is summed in a fixed order (no atomics): results are run-to-run identical.
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "gemm_tiled.cuh"
#include "rnn_kernels.cuh"
#include "rnn_projection.cuh"
#include "unet/rnn.h"

namespace unet::cuda {
namespace rnn {
namespace {

using gemm::Operand;

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  const int64_t b = gemm::ceil_div(n, kThreads);
  return static_cast<unsigned>(b < 4096 ? (b > 0 ? b : 1) : 4096);  // grid-stride loops
}

__device__ __forceinline__ bool is_valid(const int64_t* lengths, int64_t b, int64_t t) {
  return lengths == nullptr || t < lengths[b];
}

// ---- GEMM epilogues ----

// The recurrent product of one step: columns j < split are added to the gates' summed
// pre-activations, columns j >= split (GRU's n part) are stored apart in `rest`.
template <typename T>
struct RecurrentEpilogue {
  T* gates;
  int64_t ldg, split;
  T* rest;
  int64_t ldr;
  const T* bias;
  __device__ void operator()(int64_t i, int64_t j, T acc) const {
    const T z = bias ? acc + bias[j] : acc;
    if (j < split)
      gates[i * ldg + j] += z;
    else
      rest[i * ldr + (j - split)] = z;
  }
};

// LSTM projection h' = m W_hr^T: valid rows take h', padded rows keep the state; y = 0 there.
template <typename T>
struct ProjectionEpilogue {
  const int64_t* lengths;
  int64_t t, P;
  const T* h_prev;
  T* h_next;
  T* y;
  __device__ void operator()(int64_t i, int64_t j, T acc) const {
    const bool valid = is_valid(lengths, i, t);
    h_next[i * P + j] = valid ? acc : h_prev[i * P + j];
    y[i * P + j] = valid ? acc : T(0);
  }
};

// out[i,j] = acc + base[i,j]; out may be base (read, then written, by the same thread).
template <typename T>
struct AddTo {
  const T* base;
  T* out;
  int64_t ld;
  __device__ void operator()(int64_t i, int64_t j, T acc) const {
    out[i * ld + j] = acc + base[i * ld + j];
  }
};

// ---- per-step cell kernels: one thread per (batch row b, hidden unit j) ----

template <typename T>
struct StepForward {
  int64_t B, H, P, GH, t;
  const int64_t* lengths;
  T* gates;         // [B,GH] at time t: pre-activations in, activated gates out
  T* aux;           // [B,H]: LSTM cell out / GRU hn in
  T* tanhc;         // [B,H]: LSTM
  const T* c_prev;  // [B,H]: LSTM, the cell before the step (null: zeros)
  const T* h_prev;  // [B,P]: the state before the step
  T* h_next;        // [B,P]: the state after (the next step's hprev, or h_n); not with projection
  T* y;             // [B,P] at time t; not with projection
  T* c_n;           // [B,H]: LSTM at the last step, else null
  bool proj, relu;
};

template <typename T, RnnMode MODE>
__global__ void __launch_bounds__(kThreads) step_forward_kernel(StepForward<T> p) {
  const int64_t n = p.B * p.H;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / p.H, j = e % p.H;
    const bool valid = is_valid(p.lengths, b, p.t);
    T* g = p.gates + b * p.GH + j;
    T h = T(0);
    if constexpr (MODE == RnnMode::LSTM) {
      const T cp = p.c_prev ? p.c_prev[e] : T(0);
      T c = cp, tc = T(0), gate[4] = {T(0), T(0), T(0), T(0)};
      if (valid) {
        const T pre[4] = {g[0], g[p.H], g[2 * p.H], g[3 * p.H]};
        lstm_cell_forward(pre, cp, gate, c, tc);
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) g[q * p.H] = gate[q];
      p.aux[e] = c;
      p.tanhc[e] = tc;
      if (p.c_n) p.c_n[e] = c;
      if (p.proj) continue;  // the projection GEMM writes h and y
      h = gate[3] * tc;
    } else if constexpr (MODE == RnnMode::GRU) {
      T gate[3] = {T(0), T(0), T(0)};
      if (valid) h = gru_cell_forward(g[0], g[p.H], g[2 * p.H], p.aux[e], p.h_prev[e], gate);
#pragma unroll
      for (int q = 0; q < 3; ++q) g[q * p.H] = gate[q];
    } else {
      const T a = valid ? rnn_cell_forward(p.relu, g[0]) : T(0);
      g[0] = a;
      h = a;
    }
    // Without projection P == H, so e also indexes [B,P].
    p.h_next[e] = valid ? h : p.h_prev[e];
    p.y[e] = h;
  }
}

template <typename T>
struct StepBackward {
  int64_t B, H, P, GH, t;
  const int64_t* lengths;
  const T* gates;     // [B,GH] activated, at time t
  const T* aux;       // [B,H]: GRU hn
  const T* tanhc;     // [B,H]: LSTM
  const T* c_prev;    // [B,H]: LSTM (null: zeros)
  const T* h_prev;    // [B,P]: GRU
  const T* grad_y;    // [B,P] at time t, or null; not with projection
  const T* dm;        // [B,H]: LSTM with projection, dL/dm
  T* dh_carry;        // [B,P]: in, dL/d(state after); out, the direct part of dL/d(state before)
  T* dc_carry;        // [B,H]: LSTM, in/out
  T* dgi;             // [B,GH] at time t
  T* dgh;             // [B,GH] at time t (GRU; else dgi)
  bool proj, relu;
};

template <typename T, RnnMode MODE>
__global__ void __launch_bounds__(kThreads) step_backward_kernel(StepBackward<T> p) {
  const int64_t n = p.B * p.H;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / p.H, j = e % p.H;
    const bool valid = is_valid(p.lengths, b, p.t);
    const T* g = p.gates + b * p.GH + j;
    T* di = p.dgi + b * p.GH + j;
    T* dh_carry = p.dh_carry + e;  // [B,P] with P == H where it is used
    if (!valid) {  // the state passes through: dh_carry and dc_carry stay, no gate gradient
#pragma unroll
      for (int q = 0; q < (MODE == RnnMode::LSTM ? 4 : MODE == RnnMode::GRU ? 3 : 1); ++q) {
        di[q * p.H] = T(0);
        if constexpr (MODE == RnnMode::GRU) p.dgh[b * p.GH + j + q * p.H] = T(0);
      }
      continue;
    }
    if constexpr (MODE == RnnMode::LSTM) {
      T dh;
      if (p.proj) {
        dh = p.dm[e];
      } else {
        dh = *dh_carry + (p.grad_y ? p.grad_y[e] : T(0));
        *dh_carry = T(0);  // no direct path from h' to h
      }
      const T gate[4] = {g[0], g[p.H], g[2 * p.H], g[3 * p.H]};
      T dpre[4];
      lstm_cell_backward(gate, p.c_prev ? p.c_prev[e] : T(0), p.tanhc[e], dh, p.dc_carry[e], dpre);
#pragma unroll
      for (int q = 0; q < 4; ++q) di[q * p.H] = dpre[q];
    } else if constexpr (MODE == RnnMode::GRU) {
      const T dh = *dh_carry + (p.grad_y ? p.grad_y[e] : T(0));
      const T gate[3] = {g[0], g[p.H], g[2 * p.H]};
      T dgi[3], dgh[3];
      *dh_carry = gru_cell_backward(gate, p.aux[e], p.h_prev[e], dh, dgi, dgh);
      T* dr = p.dgh + b * p.GH + j;
#pragma unroll
      for (int q = 0; q < 3; ++q) {
        di[q * p.H] = dgi[q];
        dr[q * p.H] = dgh[q];
      }
    } else {
      const T dh = *dh_carry + (p.grad_y ? p.grad_y[e] : T(0));
      di[0] = rnn_cell_backward(p.relu, g[0], dh);
      *dh_carry = T(0);
    }
  }
}

// LSTM with projection, before the cell: dh[t] = dh_carry + dy on valid rows (dh_carry then
// 0: h' has no direct path to h), dh[t] = 0 and dh_carry kept on padded rows.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    projection_grad_kernel(int64_t B, int64_t P, int64_t t, const int64_t* __restrict__ lengths,
                           const T* __restrict__ grad_y, T* __restrict__ dh_carry,
                           T* __restrict__ dh) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < B * P;
       e += int64_t(gridDim.x) * blockDim.x) {
    if (is_valid(lengths, e / P, t)) {
      dh[e] = dh_carry[e] + (grad_y ? grad_y[e] : T(0));
      dh_carry[e] = T(0);
    } else {
      dh[e] = T(0);
    }
  }
}

// dst = src, or zeros when src is null.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    copy_or_zero_kernel(int64_t n, const T* __restrict__ src, T* __restrict__ dst) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x)
    dst[e] = src ? src[e] : T(0);
}

template <typename T>
void copy_or_zero(int64_t n, const T* src, T* dst, cudaStream_t s, const char* what) {
  if (n <= 0 || dst == nullptr) return;
  copy_or_zero_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(n, src, dst);
  check(cudaGetLastError(), what);
}

// ---- the per-step path ----

// f(mode as a compile-time constant), for the cell kernels' instantiations (the two RNN
// modes share one: relu is a run-time flag).
template <class F>
void dispatch_mode(RnnMode mode, F&& f) {
  switch (mode) {
    case RnnMode::LSTM: return f(std::integral_constant<RnnMode, RnnMode::LSTM>{});
    case RnnMode::GRU: return f(std::integral_constant<RnnMode, RnnMode::GRU>{});
    default: return f(std::integral_constant<RnnMode, RnnMode::RNN_TANH>{});
  }
}

template <typename T>
void step_forward(const RnnForwardArgs<T>& a, const Layout& L, cudaStream_t s) {
  const int64_t T_ = L.T, B = L.B, H = L.H, P = L.P, GH = L.GH;
  T* ws = a.workspace;
  const bool proj = a.mode == RnnMode::LSTM && P != H;
  // The first processed step's hprev slot holds h0: dW_hh then is one GEMM over all slots.
  copy_or_zero(B * P, a.h0, ws + L.hprev() + L.time(0) * B * P, s, "rnn forward (CUDA): h0 copy");
  for (int64_t st = 0; st < T_; ++st) {
    const int64_t t = L.time(st);
    const bool last = st == T_ - 1;
    T* gates = ws + L.gates() + t * B * GH;
    T* aux = ws + L.aux() + t * B * H;
    T* h_prev = ws + L.hprev() + t * B * P;
    T* h_next = last ? a.h_n : ws + L.hprev() + L.time(st + 1) * B * P;
    const int64_t split = a.mode == RnnMode::GRU ? 2 * H : GH;
    gemm::launch<T, false, true>(B, GH, P, Operand<T>{h_prev, P}, Operand<T>{a.w_hh, P},
                                 RecurrentEpilogue<T>{gates, GH, split, aux, H, a.b_hh}, s,
                                 "rnn forward (CUDA): recurrent GEMM launch");
    StepForward<T> p{B, H, P, GH, t, a.lengths, gates, aux, ws + L.tanhc() + t * B * H,
                     st == 0 ? a.c0 : ws + L.aux() + L.time(st - 1) * B * H, h_prev, h_next,
                     a.y + t * B * P, last ? a.c_n : nullptr, proj, a.mode == RnnMode::RNN_RELU};
    dispatch_mode(a.mode, [&](auto m) {
      step_forward_kernel<T, decltype(m)::value><<<blocks_for(B * H), kThreads, 0, s>>>(p);
    });
    check(cudaGetLastError(), "rnn forward (CUDA): step_forward_kernel launch");
    if (proj)
      gemm::launch<T, false, true>(
          B, P, H, Operand<T>{gates + 3 * H, GH, p.tanhc, H}, Operand<T>{a.w_hr, H},
          ProjectionEpilogue<T>{a.lengths, t, P, h_prev, h_next, a.y + t * B * P}, s,
          "rnn forward (CUDA): projection GEMM launch");
  }
}

template <typename T>
void step_backward(const RnnBackwardArgs<T>& g, const Layout& L, T* dgi, T* dgh, cudaStream_t s) {
  const RnnForwardArgs<T>& a = g.fwd;
  const int64_t T_ = L.T, B = L.B, H = L.H, P = L.P, GH = L.GH;
  const T* ws = a.workspace;
  const bool proj = a.mode == RnnMode::LSTM && P != H;
  T* dh_carry = g.scratch + L.dh_carry();
  T* dc_carry = g.scratch + L.dc_carry();
  T* dm = g.scratch + L.dm();
  T* dh_all = g.scratch + L.dh();
  for (int64_t st = T_ - 1; st >= 0; --st) {
    const int64_t t = L.time(st);
    const T* gy = g.grad_y ? g.grad_y + t * B * P : nullptr;
    if (proj) {
      T* dh = dh_all + t * B * P;
      projection_grad_kernel<T><<<blocks_for(B * P), kThreads, 0, s>>>(B, P, t, a.lengths, gy,
                                                                       dh_carry, dh);
      check(cudaGetLastError(), "rnn backward (CUDA): projection_grad_kernel launch");
      gemm::launch<T, false, false>(B, H, P, Operand<T>{dh, P}, Operand<T>{a.w_hr, H},
                                    StoreBias<T>{dm, H, nullptr}, s,
                                    "rnn backward (CUDA): projection GEMM launch");
    }
    StepBackward<T> p{B, H, P, GH, t, a.lengths, ws + L.gates() + t * B * GH,
                      ws + L.aux() + t * B * H, ws + L.tanhc() + t * B * H,
                      st == 0 ? a.c0 : ws + L.aux() + L.time(st - 1) * B * H,
                      ws + L.hprev() + t * B * P, gy, dm, dh_carry, dc_carry, dgi + t * B * GH,
                      dgh + t * B * GH, proj, a.mode == RnnMode::RNN_RELU};
    dispatch_mode(a.mode, [&](auto m) {
      step_backward_kernel<T, decltype(m)::value><<<blocks_for(B * H), kThreads, 0, s>>>(p);
    });
    check(cudaGetLastError(), "rnn backward (CUDA): step_backward_kernel launch");
    // dL/d(state before) = dgh[t] W_hh + its direct part; at the first step that is grad_h0.
    T* out = st > 0 ? dh_carry : g.grad_h0;
    if (out)
      gemm::launch<T, false, false>(B, P, GH, Operand<T>{dgh + t * B * GH, GH},
                                    Operand<T>{a.w_hh, P}, AddTo<T>{dh_carry, out, P}, s,
                                    "rnn backward (CUDA): recurrent GEMM launch");
  }
  if (T_ == 0) copy_or_zero(B * P, dh_carry, g.grad_h0, s, "rnn backward (CUDA): grad_h0 copy");
  if (a.mode == RnnMode::LSTM)
    copy_or_zero(B * H, dc_carry, g.grad_c0, s, "rnn backward (CUDA): grad_c0 copy");
}

// grad_x, the weight gradients and the bias gradients from dgi/dgh/dh over all T*B rows.
template <typename T>
void parameter_gradients(const RnnBackwardArgs<T>& g, const Layout& L, const T* dgi, const T* dgh,
                         cudaStream_t s) {
  const RnnForwardArgs<T>& a = g.fwd;
  const int64_t R = L.T * L.B, I = a.input_size, H = L.H, P = L.P, GH = L.GH;
  const T* ws = a.workspace;
  if (g.grad_x)
    gemm::launch<T, false, false>(R, I, GH, Operand<T>{dgi, GH}, Operand<T>{a.w_ih, I},
                                  StoreBias<T>{g.grad_x, I, nullptr}, s,
                                  "rnn backward (CUDA): grad_x GEMM launch");
  if (g.grad_w_ih)
    gemm::launch<T, true, false>(GH, I, R, Operand<T>{dgi, GH}, Operand<T>{a.x, I},
                                 StoreBias<T>{g.grad_w_ih, I, nullptr}, s,
                                 "rnn backward (CUDA): grad_w_ih GEMM launch");
  if (g.grad_w_hh)
    gemm::launch<T, true, false>(GH, P, R, Operand<T>{dgh, GH}, Operand<T>{ws + L.hprev(), P},
                                 StoreBias<T>{g.grad_w_hh, P, nullptr}, s,
                                 "rnn backward (CUDA): grad_w_hh GEMM launch");
  if (g.grad_w_hr && a.mode == RnnMode::LSTM && P != H)
    // m = o * tanh(c), formed while the tile is loaded.
    gemm::launch<T, true, false>(P, H, R, Operand<T>{g.scratch + L.dh(), P},
                                 Operand<T>{ws + L.gates() + 3 * H, GH, ws + L.tanhc(), H},
                                 StoreBias<T>{g.grad_w_hr, H, nullptr}, s,
                                 "rnn backward (CUDA): grad_w_hr GEMM launch");
  if (g.grad_b_ih)
    gemm::column_sum(R, GH, dgi, g.grad_b_ih, s, "rnn backward (CUDA): grad_b_ih sum launch");
  if (g.grad_b_hh)
    gemm::column_sum(R, GH, dgh, g.grad_b_hh, s, "rnn backward (CUDA): grad_b_hh sum launch");
}

// ---- dispatch ----

enum class Path { Auto, Step, Persistent };

// Read at every call, so that tests can switch paths with the environment.
Path requested_path() {
  const char* v = std::getenv("UNET_RNN_PATH");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return Path::Auto;
  if (std::strcmp(v, "step") == 0) return Path::Step;
  if (std::strcmp(v, "persistent") == 0) return Path::Persistent;
  throw std::invalid_argument(
      std::string("UNET_RNN_PATH must be 'step', 'persistent' or 'auto', got '") + v + "'");
}

template <typename T>
void check_args(const RnnForwardArgs<T>& a, const char* what) {
  const std::string w(what);
  if (a.steps < 0 || a.batch < 0 || a.input_size < 0 || a.hidden_size < 0 || a.proj_size < 0)
    throw std::invalid_argument(w + ": negative size");
  if (a.proj_size != a.hidden_size && (a.mode != RnnMode::LSTM || a.w_hr == nullptr))
    throw std::invalid_argument(w + ": proj_size != hidden_size needs an LSTM and w_hr");
}

}  // namespace
}  // namespace rnn

template <typename T>
void rnn_forward(const RnnForwardArgs<T>& a, uintptr_t stream, int device) {
  using namespace rnn;
  check_args(a, "rnn forward (CUDA)");
  const Path path = requested_path();
  const Layout L(a.mode, a.steps, a.batch, a.hidden_size, a.proj_size, a.reverse);
  if (L.B == 0 || (L.H == 0 && L.P == 0)) return;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  DeviceGuard guard(device);
  if (L.T == 0) {  // no step: the final state is the initial one
    copy_or_zero(L.B * L.P, a.h0, a.h_n, s, "rnn forward (CUDA): h_n copy");
    if (a.mode == RnnMode::LSTM)
      copy_or_zero(L.B * L.H, a.c0, a.c_n, s, "rnn forward (CUDA): c_n copy");
    return;
  }
  rnn_input_projection(a, a.b_ih, a.workspace + L.gates(), s, device,
                       "rnn forward (CUDA): input projection");
  if (path != Path::Step) {
    std::string why;
    if (persistent_forward(a, s, &why)) return;
    if (path == Path::Persistent)
      throw std::runtime_error("rnn forward (CUDA): UNET_RNN_PATH=persistent, but " + why);
  }
  step_forward(a, L, s);
}

template <typename T>
void rnn_backward(const RnnBackwardArgs<T>& g, uintptr_t stream, int device) {
  using namespace rnn;
  const RnnForwardArgs<T>& a = g.fwd;
  check_args(a, "rnn backward (CUDA)");
  const Path path = requested_path();
  const Layout L(a.mode, a.steps, a.batch, a.hidden_size, a.proj_size, a.reverse);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  DeviceGuard guard(device);
  T* dgi = g.scratch + L.dgi();
  T* dgh = a.mode == RnnMode::GRU ? g.scratch + L.dgh() : dgi;
  bool done = false;
  if (path != Path::Step && L.T > 0 && L.B > 0) {
    std::string why;
    done = persistent_backward(g, dgi, dgh, s, &why);
    if (!done && path == Path::Persistent)
      throw std::runtime_error("rnn backward (CUDA): UNET_RNN_PATH=persistent, but " + why);
  }
  if (!done) {
    if (L.B > 0) {
      copy_or_zero(L.B * L.P, g.grad_h_n, g.scratch + L.dh_carry(), s,
                   "rnn backward (CUDA): dh_carry init");
      if (a.mode == RnnMode::LSTM)
        copy_or_zero(L.B * L.H, g.grad_c_n, g.scratch + L.dc_carry(), s,
                     "rnn backward (CUDA): dc_carry init");
    }
    step_backward(g, L, dgi, dgh, s);
  }
  parameter_gradients(g, L, dgi, dgh, s);
}

template void rnn_forward<float>(const RnnForwardArgs<float>&, uintptr_t, int);
template void rnn_forward<double>(const RnnForwardArgs<double>&, uintptr_t, int);
template void rnn_backward<float>(const RnnBackwardArgs<float>&, uintptr_t, int);
template void rnn_backward<double>(const RnnBackwardArgs<double>&, uintptr_t, int);

}  // namespace unet::cuda
