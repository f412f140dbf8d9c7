// CPU recurrent layers (math and contract in unet/rnn.h): LSTM (optionally projected), GRU
// and the tanh/ReLU RNN over a whole sequence, forward and backward through time.
//
//   forward    gates = x W_ih^T + b_ih                  one GEMM over all T*B rows (16-bit
//                                                       inputs with projection_dtype)
//              per step: hg = h W_hh^T + b_hh           GEMM with M = B, W_hh packed once
//                        one fused pass over (b, j)     gate activations, state update,
//                                                       padding mask, saves for backward
//                        LSTM projection: h = m W_hr^T  GEMM + a pass for the mask
//   backward   per step, last to first: one fused pass turns dh (and dc) into dG, the
//              gradient of the gate pre-activations; then dh_prev = dG W_hh (GEMM)
//              then, over all T*B rows at once: dx = dG W_ih, dW_ih = dG^T x,
//              dW_hh = dG^T h_prev, db = column sums of dG (dW_hr = dh^T m)
//
// Rows: at step s sequence b is at time t = time(s, b): t = s forward, t = L_b-1-s in
// reverse. Padded steps (s >= L_b) map to t = s, a time reverse leaves unused, so every
// (s, b) owns one row (t, b) of the [T, B, ...] planes below, and the all-steps GEMMs find
// dG, x and h_prev of one step on the same row.
//
// Workspace (forward -> backward), planes of T*B rows:
//   gates [G*H]  first the input projection, then the activated gates (LSTM i,f,g,o;
//                GRU r,z,n; RNN the new h)
//   aux1  [H]    LSTM c_t; GRU h W_hn^T + b_hn (dr needs it); RNN unused
//   aux2  [H]    LSTM tanh(c_t), or m_t = o*tanh(c_t) with a projection; else unused
//   hprev [P]    the state h the step started from
// Padded rows hold zeros, or the carried state, so that they add nothing to the sums.
// Scratch (backward): dG [T,B,G*H] for W_ih, b_ih and x, then a second plane: GRU's dG for
// W_hh, b_hh and h (its n part is r * dn), or with a projection the dh of every step.
// Buffers of B rows and the packed weights are allocated per call.
//
// Threads: see "threads" below. Every element is computed one fixed way, whichever thread
// computes it, so results do not depend on the thread count.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "gemm.h"
#include "rnn_projection.h"
#include "unet/activations.h"
#include "unet/rnn.h"

namespace unet::cpu {
namespace {

// sums[j] = sum over rows i (in order) of src[i*n + j]. Threads own column blocks.
template <typename T>
void column_sums(int64_t rows, int64_t n, const T* src, T* sums) {
  constexpr int64_t kCols = 64;
#pragma omp parallel for schedule(static) if (rows * n > (int64_t(1) << 16))
  for (int64_t j0 = 0; j0 < n; j0 += kCols) {
    const int64_t m = std::min(kCols, n - j0);
    T acc[kCols] = {};
    for (int64_t i = 0; i < rows; ++i) {
      const T* row = src + i * n + j0;
      for (int64_t j = 0; j < m; ++j) acc[j] += row[j];
    }
    std::copy(acc, acc + m, sums + j0);
  }
}

template <typename T>
void copy_or_zero(const T* src, int64_t n, T* dst) {
  if (src)
    std::copy(src, src + n, dst);
  else
    std::fill(dst, dst + n, T(0));
}

// The shapes, the step -> time map and the workspace planes of one call.
template <typename T>
struct Layer {
  RnnMode mode;
  int64_t steps, B, I, H, P, G, GH;
  bool reverse, proj;
  const int64_t* lengths;
  // Every sequence at one time in each step: forward, or all lengths == T.
  bool aligned;
  T *gates, *aux1, *aux2, *hprev;

  explicit Layer(const RnnForwardArgs<T>& a)
      : mode(a.mode), steps(a.steps), B(a.batch), I(a.input_size), H(a.hidden_size),
        P(a.proj_size), G(rnn_gate_count(a.mode)), GH(G * H), reverse(a.reverse),
        proj(a.mode == RnnMode::LSTM && a.proj_size != a.hidden_size), lengths(a.lengths) {
    aligned = !reverse || !lengths || std::all_of(lengths, lengths + B, [&](int64_t L) {
      return L == steps;
    });
    gates = a.workspace;
    aux1 = gates + steps * B * GH;
    aux2 = aux1 + steps * B * H;
    hprev = aux2 + steps * B * H;
  }

  int64_t length(int64_t b) const { return lengths ? lengths[b] : steps; }
  int64_t time(int64_t s, int64_t b) const {
    const int64_t L = length(b);
    return reverse && s < L ? L - 1 - s : s;
  }
  // Row (t, b) of a plane `width` wide.
  int64_t row(int64_t s, int64_t b, int64_t width) const { return (time(s, b) * B + b) * width; }
};

// ------------------------------------------------------------------ row kernels -----
//
// The fused passes' inner loops: columns [j0, j1) of one row (one sequence at one step).
// The activations are plain arithmetic (unet/activations.h), so these loops vectorize;
// they are compiled once per instruction set, like the GEMM's micro-kernel, and the one
// the GEMM runs with (UNET_CPU_ISA) is used. State arrays are updated in place, element by
// element, so some pointers of a row may alias: `omp simd` (no dependence between
// iterations) rather than restrict.

#define UNET_ALWAYS_INLINE __attribute__((always_inline)) inline

template <typename T>
struct LstmForwardRow {
  T* gates;       // [4H] in: x W_ih^T + b_ih; out: i, f, g, o
  const T* hg;    // [4H] h W_hh^T + b_hh
  T* c;           // [H] the cell state, updated
  T* c_saved;     // [H] c_t
  T* aux;         // [H] tanh(c_t), or m_t with a projection
  const T* h_in;  // [H] without a projection: the state ...
  T* h_out;       // ... the new state
  T* hprev;       // ... the old one kept for backward
  T* y;           // ... and the output
  T* m;           // [H] with a projection: m_t for this step's h = m W_hr^T (else null)
  int64_t H;
};

template <typename T, bool kProj>
UNET_ALWAYS_INLINE void lstm_forward_cols(const LstmForwardRow<T>& r, int64_t j0, int64_t j1) {
  const int64_t H = r.H;
  T *g = r.gates, *c = r.c, *c_saved = r.c_saved, *aux = r.aux, *h_out = r.h_out,
    *hprev = r.hprev, *y = r.y, *m = r.m;
  const T *q = r.hg, *h_in = r.h_in;
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    const T i = sigmoid(g[j] + q[j]);
    const T f = sigmoid(g[H + j] + q[H + j]);
    const T z = tanh_(g[2 * H + j] + q[2 * H + j]);
    const T o = sigmoid(g[3 * H + j] + q[3 * H + j]);
    const T cn = f * c[j] + i * z;
    const T tc = tanh_(cn);
    g[j] = i, g[H + j] = f, g[2 * H + j] = z, g[3 * H + j] = o;
    c[j] = c_saved[j] = cn;
    if constexpr (kProj) {
      aux[j] = m[j] = o * tc;
    } else {
      aux[j] = tc;
      hprev[j] = h_in[j];
      h_out[j] = y[j] = o * tc;
    }
  }
}

template <typename T>
UNET_ALWAYS_INLINE void run_row(const LstmForwardRow<T>& r, int64_t j0, int64_t j1) {
  if (r.m)
    lstm_forward_cols<T, true>(r, j0, j1);
  else
    lstm_forward_cols<T, false>(r, j0, j1);
}

template <typename T>
struct GruForwardRow {
  T* gates;       // [3H] in: x W_ih^T + b_ih; out: r, z, n
  const T* hg;    // [3H] h W_hh^T + b_hh
  T* hn_saved;    // [H] h W_hn^T + b_hn
  const T* h_in;  // [H] the state ...
  T* h_out;       // ... the new state
  T* hprev;       // ... the old one kept for backward
  T* y;           // ... and the output
  int64_t H;
};

template <typename T>
UNET_ALWAYS_INLINE void run_row(const GruForwardRow<T>& w, int64_t j0, int64_t j1) {
  const int64_t H = w.H;
  T *g = w.gates, *hn_saved = w.hn_saved, *h_out = w.h_out, *hprev = w.hprev, *y = w.y;
  const T *q = w.hg, *h_in = w.h_in;
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    const T r = sigmoid(g[j] + q[j]);
    const T z = sigmoid(g[H + j] + q[H + j]);
    const T hn = q[2 * H + j];
    const T n = tanh_(g[2 * H + j] + r * hn);
    const T hp = h_in[j];
    g[j] = r, g[H + j] = z, g[2 * H + j] = n;
    hn_saved[j] = hn;
    hprev[j] = hp;
    h_out[j] = y[j] = n + z * (hp - n);  // (1 - z) n + z h
  }
}

template <typename T>
struct RnnForwardRow {
  T* gates;       // [H] in: x W_ih^T + b_ih; out: the new h
  const T* hg;    // [H] h W_hh^T + b_hh
  const T* h_in;  // [H] the state ...
  T* h_out;       // ... the new state
  T* hprev;       // ... the old one kept for backward
  T* y;           // ... and the output
  bool relu;
};

template <typename T, bool kRelu>
UNET_ALWAYS_INLINE void rnn_forward_cols(const RnnForwardRow<T>& r, int64_t j0, int64_t j1) {
  T *g = r.gates, *h_out = r.h_out, *hprev = r.hprev, *y = r.y;
  const T *q = r.hg, *h_in = r.h_in;
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    const T z = g[j] + q[j];
    const T hn = kRelu ? (z > T(0) ? z : T(0)) : tanh_(z);
    hprev[j] = h_in[j];
    g[j] = h_out[j] = y[j] = hn;
  }
}

template <typename T>
UNET_ALWAYS_INLINE void run_row(const RnnForwardRow<T>& r, int64_t j0, int64_t j1) {
  if (r.relu)
    rnn_forward_cols<T, true>(r, j0, j1);
  else
    rnn_forward_cols<T, false>(r, j0, j1);
}

// In backward, `dh_later` is the gradient that reaches the step's output state from later
// steps (dh_prev of the step after, grad_h_n, or zeros), and likewise dc_later.
template <typename T>
struct LstmBackwardRow {
  const T* dh_later;  // [H] without a projection (with one, dm carries dh)
  const T* gy;        // [H] without a projection: grad_y at this step
  const T* dm;        // [H] with a projection: dh W_hr (else null)
  const T* dc_later;  // [H]
  const T* gates;     // [4H] i, f, g, o
  const T* c;         // [H] c_t
  const T* tc;        // [H] tanh(c_t); null with a projection (then recomputed)
  const T* c_prev;    // [H] c_{t-1}
  T* dg;              // [4H] out: the gates' pre-activation gradients
  T* dc;              // [H] out: dc_{t-1} (may be dc_later)
  int64_t H;
};

template <typename T, bool kProj>
UNET_ALWAYS_INLINE void lstm_backward_cols(const LstmBackwardRow<T>& r, int64_t j0, int64_t j1) {
  const int64_t H = r.H;
  const T *dh_later = r.dh_later, *gy = r.gy, *dm = r.dm, *dc_later = r.dc_later, *g = r.gates,
          *c = r.c, *tc_saved = r.tc, *c_prev = r.c_prev;
  T *dg = r.dg, *dc = r.dc;
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    const T dh = kProj ? dm[j] : dh_later[j] + gy[j];
    const T i = g[j], f = g[H + j], z = g[2 * H + j], o = g[3 * H + j];
    const T tc = kProj ? tanh_(c[j]) : tc_saved[j];
    const T dct = dc_later[j] + dh * o * (T(1) - tc * tc);
    dg[j] = dct * z * i * (T(1) - i);
    dg[H + j] = dct * c_prev[j] * f * (T(1) - f);
    dg[2 * H + j] = dct * i * (T(1) - z * z);
    dg[3 * H + j] = dh * tc * o * (T(1) - o);
    dc[j] = dct * f;
  }
}

template <typename T>
UNET_ALWAYS_INLINE void run_row(const LstmBackwardRow<T>& r, int64_t j0, int64_t j1) {
  if (r.dm)
    lstm_backward_cols<T, true>(r, j0, j1);
  else
    lstm_backward_cols<T, false>(r, j0, j1);
}

template <typename T>
struct GruBackwardRow {
  const T* dh_later;      // [H]
  const T* direct_later;  // [H] the z * dh part of dh_later (zeros where there is none)
  const T* gy;            // [H]
  const T* gates;         // [3H] r, z, n
  const T* hn;            // [H] h W_hn^T + b_hn
  const T* hprev;         // [H]
  T* di;                  // [3H] out: dG for W_ih, b_ih, x
  T* dh_side;             // [3H] out: dG for W_hh, b_hh, h (n part: r * dn)
  T* direct;              // [H] out: z * dh for the step before (may be direct_later)
  int64_t H;
};

template <typename T>
UNET_ALWAYS_INLINE void run_row(const GruBackwardRow<T>& w, int64_t j0, int64_t j1) {
  const int64_t H = w.H;
  const T *dh_later = w.dh_later, *direct_later = w.direct_later, *gy = w.gy, *g = w.gates,
          *hn = w.hn, *hprev = w.hprev;
  T *di = w.di, *dh_side = w.dh_side, *direct = w.direct;
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    const T dh = dh_later[j] + direct_later[j] + gy[j];
    const T r = g[j], z = g[H + j], n = g[2 * H + j];
    const T dn = dh * (T(1) - z) * (T(1) - n * n);
    const T dz = dh * (hprev[j] - n) * z * (T(1) - z);
    const T dr = dn * hn[j] * r * (T(1) - r);
    di[j] = dh_side[j] = dr;
    di[H + j] = dh_side[H + j] = dz;
    di[2 * H + j] = dn;
    dh_side[2 * H + j] = dn * r;
    direct[j] = dh * z;
  }
}

template <typename T>
struct RnnBackwardRow {
  const T* dh_later;  // [H]
  const T* gy;        // [H]
  const T* h;         // [H] the step's output act(z)
  T* dg;              // [H] out
  bool relu;
};

template <typename T>
UNET_ALWAYS_INLINE void run_row(const RnnBackwardRow<T>& r, int64_t j0, int64_t j1) {
  const T *dh_later = r.dh_later, *gy = r.gy, *h = r.h;
  T* dg = r.dg;
  if (r.relu) {
#pragma omp simd
    for (int64_t j = j0; j < j1; ++j) dg[j] = h[j] > T(0) ? dh_later[j] + gy[j] : T(0);
  } else {
#pragma omp simd
    for (int64_t j = j0; j < j1; ++j) dg[j] = (dh_later[j] + gy[j]) * (T(1) - h[j] * h[j]);
  }
}

// One entry point per instruction set for each row type; RowKernel<Row>::get() the one in use.
#if defined(__x86_64__) || defined(__i386__)
template <typename Row>
__attribute__((target("avx512f,fma"))) void run_row_avx512(const Row& r, int64_t j0, int64_t j1) {
  run_row(r, j0, j1);
}
template <typename Row>
__attribute__((target("avx2,fma"))) void run_row_avx2(const Row& r, int64_t j0, int64_t j1) {
  run_row(r, j0, j1);
}
#endif
template <typename Row>
void run_row_generic(const Row& r, int64_t j0, int64_t j1) {
  run_row(r, j0, j1);
}

template <typename Row>
using RowFn = void (*)(const Row&, int64_t, int64_t);

template <typename Row>
RowFn<Row> row_kernel() {
  static const RowFn<Row> fn = [] {
    const std::string isa = gemm_kernel_isa();
#if defined(__x86_64__) || defined(__i386__)
    if (isa == "avx512") return &run_row_avx512<Row>;
    if (isa == "avx2") return &run_row_avx2<Row>;
#endif
    return &run_row_generic<Row>;
  }();
  return fn;
}

// ------------------------------------------------------------------ threads ---------
//
// The time loop runs in one parallel region. Each thread owns a slice of the hidden units
// (whole GEMM panels, the same slice every step): it computes their columns of h W_hh^T
// for every gate, then their gate pass, and in backward the same columns of dh_prev. So
// a step needs one barrier (two with a projection), where it would otherwise fork and join
// a team per GEMM and per pass: that matters most when waiting threads sleep
// (OMP_WAIT_POLICY=PASSIVE). The state h is double-buffered so that no thread overwrites
// the rows another still reads.
//
// A single step is the exception: the step products then call gemm(), which reads the
// weights in place with its own threads (the loop runs on one thread, outside any active
// parallel region), because packing all the weights first would cost more than the one
// product they serve.

int team_size(double work_per_step) {
#ifdef _OPENMP
  // Below this many multiply-adds per step one thread beats a team.
  return work_per_step < double(1 << 18) ? 1 : omp_get_max_threads();
#else
  (void)work_per_step;
  return 1;
#endif
}

struct Team {
  int id = 0, size = 1;
  // Columns [first, second) of n for this thread: whole panels, shared out evenly.
  std::pair<int64_t, int64_t> columns(int64_t n, int64_t panel) const {
    const int64_t panels = (n + panel - 1) / panel;
    return {std::min(n, panels * id / size * panel), std::min(n, panels * (id + 1) / size * panel)};
  }
};

Team this_team() {
#ifdef _OPENMP
  return {omp_get_thread_num(), omp_get_num_threads()};
#else
  return {};
#endif
}

// ------------------------------------------------------------------ forward ---------

// The state buffers of one step: h_in is read by every thread's GEMM, h_out written.
template <typename T>
struct StepState {
  const T* h_in;
  T* h_out;
};

template <typename T>
void lstm_forward_columns(const Layer<T>& L, const RnnForwardArgs<T>& a, int64_t s, const T* hg,
                          StepState<T> st, T* mstep, int64_t j0, int64_t j1) {
  const int64_t H = L.H, GH = L.GH;
  const RowFn<LstmForwardRow<T>> kernel = row_kernel<LstmForwardRow<T>>();
  for (int64_t b = 0; b < L.B; ++b) {
    // Without a projection P == H: h, y and hprev share the column index j. With one, m
    // goes to mstep, and lstm_projection_columns writes those.
    const LstmForwardRow<T> r{L.gates + L.row(s, b, GH),
                              hg + b * GH,
                              a.c_n + b * H,
                              L.aux1 + L.row(s, b, H),
                              L.aux2 + L.row(s, b, H),
                              L.proj ? nullptr : st.h_in + b * H,
                              L.proj ? nullptr : st.h_out + b * H,
                              L.proj ? nullptr : L.hprev + L.row(s, b, H),
                              L.proj ? nullptr : a.y + L.row(s, b, H),
                              L.proj ? mstep + b * H : nullptr,
                              H};
    if (s < L.length(b)) {
      kernel(r, j0, j1);
      continue;
    }
    // A padded step: the state stays, nothing flows.
    for (int64_t k = 0; k < 4; ++k) std::fill(r.gates + k * H + j0, r.gates + k * H + j1, T(0));
    std::copy(r.c + j0, r.c + j1, r.c_saved + j0);
    std::fill(r.aux + j0, r.aux + j1, T(0));
    if (L.proj) {
      std::fill(r.m + j0, r.m + j1, T(0));
    } else {
      std::copy(r.h_in + j0, r.h_in + j1, r.hprev + j0);
      std::copy(r.h_in + j0, r.h_in + j1, r.h_out + j0);
      std::fill(r.y + j0, r.y + j1, T(0));
    }
  }
}

// h = m W_hr^T is in hnew [B, P]: the state and y take it where the sequence is active.
template <typename T>
void lstm_projection_columns(const Layer<T>& L, const RnnForwardArgs<T>& a, int64_t s,
                             const T* hnew, StepState<T> st, int64_t p0, int64_t p1) {
  const int64_t P = L.P;
  for (int64_t b = 0; b < L.B; ++b) {
    const T* h_in = st.h_in + b * P;
    T* y = a.y + L.row(s, b, P);
    const T* src = s < L.length(b) ? hnew + b * P : h_in;
    std::copy(h_in + p0, h_in + p1, L.hprev + L.row(s, b, P) + p0);
    std::copy(src + p0, src + p1, st.h_out + b * P + p0);
    if (s < L.length(b))
      std::copy(src + p0, src + p1, y + p0);
    else
      std::fill(y + p0, y + p1, T(0));
  }
}

template <typename T>
void gru_forward_columns(const Layer<T>& L, const RnnForwardArgs<T>& a, int64_t s, const T* hg,
                         StepState<T> st, int64_t j0, int64_t j1) {
  const int64_t H = L.H, GH = L.GH;
  const RowFn<GruForwardRow<T>> kernel = row_kernel<GruForwardRow<T>>();
  for (int64_t b = 0; b < L.B; ++b) {
    const GruForwardRow<T> r{L.gates + L.row(s, b, GH), hg + b * GH,
                             L.aux1 + L.row(s, b, H),   st.h_in + b * H,
                             st.h_out + b * H,          L.hprev + L.row(s, b, H),
                             a.y + L.row(s, b, H),      H};
    if (s < L.length(b)) {
      kernel(r, j0, j1);
      continue;
    }
    for (int64_t k = 0; k < 3; ++k) std::fill(r.gates + k * H + j0, r.gates + k * H + j1, T(0));
    std::fill(r.hn_saved + j0, r.hn_saved + j1, T(0));
    std::copy(r.h_in + j0, r.h_in + j1, r.hprev + j0);
    std::copy(r.h_in + j0, r.h_in + j1, r.h_out + j0);
    std::fill(r.y + j0, r.y + j1, T(0));
  }
}

template <typename T>
void rnn_forward_columns(const Layer<T>& L, const RnnForwardArgs<T>& a, int64_t s, const T* hg,
                         StepState<T> st, int64_t j0, int64_t j1) {
  const int64_t H = L.H;
  const RowFn<RnnForwardRow<T>> kernel = row_kernel<RnnForwardRow<T>>();
  for (int64_t b = 0; b < L.B; ++b) {
    const RnnForwardRow<T> r{L.gates + L.row(s, b, H), hg + b * H,
                             st.h_in + b * H,          st.h_out + b * H,
                             L.hprev + L.row(s, b, H), a.y + L.row(s, b, H),
                             L.mode == RnnMode::RNN_RELU};
    if (s < L.length(b)) {
      kernel(r, j0, j1);
      continue;
    }
    std::fill(r.gates + j0, r.gates + j1, T(0));
    std::copy(r.h_in + j0, r.h_in + j1, r.hprev + j0);
    std::copy(r.h_in + j0, r.h_in + j1, r.h_out + j0);
    std::fill(r.y + j0, r.y + j1, T(0));
  }
}

// ------------------------------------------------------------------ backward --------

template <typename T>
struct BackwardPlanes {
  T* dgi;     // [T,B,G*H] dG, input side
  T* dgh;     // [T,B,G*H] dG, hidden side (== dgi but for GRU)
  T* dhtot;   // [T,B,P] dh of every step (LSTM with projection)
};

// Where the gradient reaching sequence b's state after step s comes from: dh_prev of step
// s+1 (`rec`, and for GRU `direct`) where the sequence goes on, else grad_h_n or zeros.
template <typename T>
struct LaterGrad {
  const T* rec;     // [B, P] dG(s+1) W_hh
  const T* direct;  // [B, H] GRU: z * dh of step s+1; else null
  const T* h_n;     // [B, P] grad_h_n, or null
  const T* zeros;   // at least max(H, P) zeros
  int64_t P;
  const T* dh(bool continues, int64_t b) const {
    return continues ? rec + b * P : h_n ? h_n + b * P : zeros;
  }
  const T* direct_part(bool continues, int64_t b) const {
    return continues ? direct + b * P : zeros;
  }
};

// Zeroes a padded row's dG (and its contiguous copy), so that it adds nothing to the sums.
template <typename T>
void zero_gates(T* dg, T* dst, int64_t G, int64_t H, int64_t j0, int64_t j1) {
  for (int64_t k = 0; k < G; ++k) {
    std::fill(dg + k * H + j0, dg + k * H + j1, T(0));
    if (dst) std::fill(dst + k * H + j0, dst + k * H + j1, T(0));
  }
}

template <typename T>
void copy_gates(const T* dg, T* dst, int64_t G, int64_t H, int64_t j0, int64_t j1) {
  if (dst)
    for (int64_t k = 0; k < G; ++k) std::copy(dg + k * H + j0, dg + k * H + j1, dst + k * H + j0);
}

// `dgstep`: where this step's hidden-side dG rows go contiguously when the rows of a step
// lie at different times (reverse with lengths), else null.
template <typename T>
void lstm_backward_columns(const Layer<T>& L, const RnnBackwardArgs<T>& a,
                           const BackwardPlanes<T>& d, int64_t s, const LaterGrad<T>& later,
                           const T* dm, T* dc, T* dgstep, int64_t j0, int64_t j1) {
  const int64_t H = L.H, B = L.B, GH = L.GH;
  const RnnForwardArgs<T>& f = a.fwd;
  const RowFn<LstmBackwardRow<T>> kernel = row_kernel<LstmBackwardRow<T>>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = L.length(b);
    T* dg = d.dgi + L.row(s, b, GH);
    T* dst = dgstep ? dgstep + b * GH : nullptr;
    if (s >= len) {
      zero_gates(dg, dst, 4, H, j0, j1);
      continue;
    }
    const bool continues = s + 1 < len;
    const T* dc_later = continues ? dc + b * H : a.grad_c_n ? a.grad_c_n + b * H : later.zeros;
    // c_{t-1}: the cell state the previous step of this sequence left, or c0.
    const T* c_prev = s == 0 ? f.c0 + b * H : L.aux1 + (L.time(s - 1, b) * B + b) * H;
    const LstmBackwardRow<T> r{L.proj ? nullptr : later.dh(continues, b),
                               L.proj ? nullptr : a.grad_y + L.row(s, b, H),
                               L.proj ? dm + b * H : nullptr,
                               dc_later,
                               L.gates + L.row(s, b, GH),
                               L.aux1 + L.row(s, b, H),
                               L.proj ? nullptr : L.aux2 + L.row(s, b, H),
                               c_prev,
                               dg,
                               dc + b * H,
                               H};
    kernel(r, j0, j1);
    copy_gates(dg, dst, 4, H, j0, j1);
  }
}

// With a projection, h = m W_hr^T: dh (the later gradient plus grad_y) is kept for dW_hr
// and copied to dhstep for this step's dm = dh W_hr.
template <typename T>
void lstm_projection_backward_columns(const Layer<T>& L, const RnnBackwardArgs<T>& a,
                                      const BackwardPlanes<T>& d, int64_t s,
                                      const LaterGrad<T>& later, T* dhstep, int64_t p0,
                                      int64_t p1) {
  const int64_t P = L.P;
  for (int64_t b = 0; b < L.B; ++b) {
    const int64_t len = L.length(b);
    T* dh = d.dhtot + L.row(s, b, P);
    T* step = dhstep + b * P;
    if (s >= len) {
      std::fill(dh + p0, dh + p1, T(0));
      std::fill(step + p0, step + p1, T(0));
      continue;
    }
    const T* dh_later = later.dh(s + 1 < len, b);
    const T* gy = a.grad_y + L.row(s, b, P);
    for (int64_t j = p0; j < p1; ++j) dh[j] = step[j] = dh_later[j] + gy[j];
  }
}

template <typename T>
void gru_backward_columns(const Layer<T>& L, const RnnBackwardArgs<T>& a,
                          const BackwardPlanes<T>& d, int64_t s, const LaterGrad<T>& later,
                          T* direct, T* dgstep, int64_t j0, int64_t j1) {
  const int64_t H = L.H, GH = L.GH;
  const RowFn<GruBackwardRow<T>> kernel = row_kernel<GruBackwardRow<T>>();
  for (int64_t b = 0; b < L.B; ++b) {
    const int64_t len = L.length(b);
    T* di = d.dgi + L.row(s, b, GH);
    T* dh_side = d.dgh + L.row(s, b, GH);
    T* dst = dgstep ? dgstep + b * GH : nullptr;
    if (s >= len) {
      zero_gates(di, dst, 3, H, j0, j1);
      zero_gates(dh_side, static_cast<T*>(nullptr), 3, H, j0, j1);
      continue;
    }
    const bool continues = s + 1 < len;
    const GruBackwardRow<T> r{later.dh(continues, b),     later.direct_part(continues, b),
                              a.grad_y + L.row(s, b, H),  L.gates + L.row(s, b, GH),
                              L.aux1 + L.row(s, b, H),    L.hprev + L.row(s, b, H),
                              di,                         dh_side,
                              direct + b * H,             H};
    kernel(r, j0, j1);
    copy_gates(dh_side, dst, 3, H, j0, j1);
  }
}

template <typename T>
void rnn_backward_columns(const Layer<T>& L, const RnnBackwardArgs<T>& a,
                          const BackwardPlanes<T>& d, int64_t s, const LaterGrad<T>& later,
                          T* dgstep, int64_t j0, int64_t j1) {
  const int64_t H = L.H;
  const RowFn<RnnBackwardRow<T>> kernel = row_kernel<RnnBackwardRow<T>>();
  for (int64_t b = 0; b < L.B; ++b) {
    const int64_t len = L.length(b);
    T* dg = d.dgi + L.row(s, b, H);
    T* dst = dgstep ? dgstep + b * H : nullptr;
    if (s >= len) {
      zero_gates(dg, dst, 1, H, j0, j1);
      continue;
    }
    const RnnBackwardRow<T> r{later.dh(s + 1 < len, b), a.grad_y + L.row(s, b, H),
                              L.gates + L.row(s, b, H), dg, L.mode == RnnMode::RNN_RELU};
    kernel(r, j0, j1);
    copy_gates(dg, dst, 1, H, j0, j1);
  }
}

}  // namespace

template <typename T>
void rnn_forward(const RnnForwardArgs<T>& a) {
  const Layer<T> L(a);
  const int64_t B = L.B, H = L.H, P = L.P, G = L.G, GH = L.GH, TB = L.steps * B;
  std::copy(a.h0, a.h0 + B * P, a.h_n);
  if (a.mode == RnnMode::LSTM) std::copy(a.c0, a.c0 + B * H, a.c_n);
  if (TB == 0) return;

  rnn_input_projection(a, a.b_ih, L.gates);
  const bool one_step = L.steps == 1;
  // W_hh packed gate by gate, so that a thread's hidden units are whole panels of each.
  std::vector<PackedOperand<T>> w_hh;
  PackedOperand<T> w_hr;
  if (!one_step) {
    for (int64_t g = 0; g < G; ++g) w_hh.push_back(pack_operand<T>(H, P, {a.w_hh + g * H * P, P, 1}));
    if (L.proj) w_hr = pack_operand<T>(P, H, {a.w_hr, H, 1});
  }

  const int nt = one_step ? 1 : team_size(double(B) * double(GH) * double(P));
  const int64_t panel = gemm_panel_width<T>();
  const int64_t a_size =
      one_step ? 0
               : std::max(packed_rows_size<T>(B, P), L.proj ? packed_rows_size<T>(B, H) : int64_t(0));
  AlignedArray<T> a_packs = aligned_array<T>(nt * a_size), hg = aligned_array<T>(B * GH),
                  h_other = aligned_array<T>(B * P), mstep, hnew;
  if (L.proj) {
    mstep = aligned_array<T>(B * H);
    hnew = aligned_array<T>(B * P);
  }
  T* const h_buf[2] = {a.h_n, h_other.get()};

#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const Team team = this_team();
    const auto [j0, j1] = team.columns(H, panel);
    const auto [p0, p1] = team.columns(P, panel);
    T* a_mine = a_packs.get() + team.id * a_size;
    for (int64_t s = 0; s < L.steps; ++s) {
      const StepState<T> st{h_buf[s % 2], h_buf[(s + 1) % 2]};
      if (one_step) {
        gemm<T>(B, GH, P, {st.h_in, P, 1}, {a.w_hh, P, 1}, hg.get(), GH, {a.b_hh});
      } else {
        pack_rows<T>(B, P, {st.h_in, P, 1}, a_mine);
        for (int64_t g = 0; g < G; ++g)
          gemm_packed_columns<T>(B, a_mine, w_hh[g], j0, j1, hg.get() + g * H, GH,
                                 {a.b_hh ? a.b_hh + g * H : nullptr});
      }
      switch (a.mode) {
        case RnnMode::LSTM: lstm_forward_columns(L, a, s, hg.get(), st, mstep.get(), j0, j1); break;
        case RnnMode::GRU: gru_forward_columns(L, a, s, hg.get(), st, j0, j1); break;
        default: rnn_forward_columns(L, a, s, hg.get(), st, j0, j1); break;
      }
      if (L.proj) {
#pragma omp barrier
        if (one_step) {
          gemm<T>(B, P, H, {mstep.get(), H, 1}, {a.w_hr, H, 1}, hnew.get(), P);
        } else {
          pack_rows<T>(B, H, {mstep.get(), H, 1}, a_mine);
          gemm_packed_columns<T>(B, a_mine, w_hr, p0, p1, hnew.get(), P);
        }
        lstm_projection_columns(L, a, s, hnew.get(), st, p0, p1);
      }
#pragma omp barrier
    }
  }
  if (h_buf[L.steps % 2] != a.h_n) std::copy(h_other.get(), h_other.get() + B * P, a.h_n);
}

template <typename T>
void rnn_backward(const RnnBackwardArgs<T>& a) {
  const RnnForwardArgs<T>& f = a.fwd;
  const Layer<T> L(f);
  const int64_t B = L.B, I = L.I, H = L.H, P = L.P, GH = L.GH, TB = L.steps * B;
  const bool lstm = f.mode == RnnMode::LSTM, gru = f.mode == RnnMode::GRU;

  BackwardPlanes<T> d{a.scratch, a.scratch, nullptr};
  if (gru) d.dgh = a.scratch + TB * GH;
  if (L.proj) d.dhtot = a.scratch + TB * GH;

  if (TB == 0) {  // no step, or no sequence: the state gradients pass straight through
    if (a.grad_h0) copy_or_zero(a.grad_h_n, B * P, a.grad_h0);
    if (a.grad_c0) copy_or_zero(a.grad_c_n, B * H, a.grad_c0);
  } else {
    const bool one_step = L.steps == 1;
    PackedOperand<T> w_hh, w_hr;
    if (!one_step) {
      w_hh = pack_operand<T>(P, GH, {f.w_hh, 1, P});
      if (L.proj) w_hr = pack_operand<T>(H, P, {f.w_hr, 1, H});
    }
    const int nt = one_step ? 1 : team_size(double(B) * double(GH) * double(P));
    const int64_t panel = gemm_panel_width<T>();
    const int64_t a_size =
        one_step ? 0
                 : std::max(packed_rows_size<T>(B, GH), L.proj ? packed_rows_size<T>(B, P) : int64_t(0));
    AlignedArray<T> a_packs = aligned_array<T>(nt * a_size), rec = aligned_array<T>(B * P),
                    dgsteps, dc, direct, dhstep, dm;
    // Two step buffers, alternating: a thread may write the next step's rows while another
    // still reads this step's.
    if (!L.aligned) dgsteps = aligned_array<T>(2 * B * GH);
    // dc runs backwards through the cell states and ends as grad_c0.
    T* dc_run = nullptr;
    if (lstm) {
      if (!a.grad_c0) dc = aligned_array<T>(B * H);
      dc_run = a.grad_c0 ? a.grad_c0 : dc.get();
    }
    if (gru) direct = aligned_array<T>(B * H);
    if (L.proj) {
      dhstep = aligned_array<T>(B * P);
      dm = aligned_array<T>(B * H);
    }
    AlignedArray<T> zeros = aligned_array<T>(std::max(H, P));
    std::fill(zeros.get(), zeros.get() + std::max(H, P), T(0));
    const LaterGrad<T> later{rec.get(), direct.get(), a.grad_h_n, zeros.get(), P};

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      // Without a projection P == H, and a thread's columns of dh_prev are the hidden units
      // its gate pass reads in the step before: no barrier between the two.
      const Team team = this_team();
      const auto [j0, j1] = team.columns(H, panel);
      const auto [p0, p1] = team.columns(P, panel);
      T* a_mine = a_packs.get() + team.id * a_size;
      for (int64_t s = L.steps - 1; s >= 0; --s) {
        T* dgstep = L.aligned ? nullptr : dgsteps.get() + s % 2 * B * GH;
        switch (f.mode) {
          case RnnMode::LSTM:
            if (L.proj) {
              lstm_projection_backward_columns(L, a, d, s, later, dhstep.get(), p0, p1);
#pragma omp barrier
              if (one_step) {
                gemm<T>(B, H, P, {dhstep.get(), P, 1}, {f.w_hr, 1, H}, dm.get(), H);
              } else {
                pack_rows<T>(B, P, {dhstep.get(), P, 1}, a_mine);
                gemm_packed_columns<T>(B, a_mine, w_hr, j0, j1, dm.get(), H);
              }
            }
            lstm_backward_columns(L, a, d, s, later, dm.get(), dc_run, dgstep, j0, j1);
            break;
          case RnnMode::GRU:
            gru_backward_columns(L, a, d, s, later, direct.get(), dgstep, j0, j1);
            break;
          default: rnn_backward_columns(L, a, d, s, later, dgstep, j0, j1); break;
        }
#pragma omp barrier
        // dh_prev = dG W_hh: for the step before, or (s == 0) grad_h0.
        if (s == 0 && !a.grad_h0) break;
        const T* dg = L.aligned ? d.dgh + L.row(s, 0, GH) : dgstep;
        T* dh_prev = s > 0 ? rec.get() : a.grad_h0;
        if (one_step) {
          gemm<T>(B, P, GH, {dg, GH, 1}, {f.w_hh, 1, P}, dh_prev, P);
        } else {
          pack_rows<T>(B, GH, {dg, GH, 1}, a_mine);
          gemm_packed_columns<T>(B, a_mine, w_hh, p0, p1, dh_prev, P);
        }
      }
      if (a.grad_h0 && gru)  // + the z * dh part, on the columns this thread wrote
        for (int64_t b = 0; b < B; ++b)
          for (int64_t j = j0; j < j1; ++j) a.grad_h0[b * H + j] += direct[b * H + j];
    }
  }

  if (a.grad_x) gemm<T>(TB, I, GH, {d.dgi, GH, 1}, {f.w_ih, 1, I}, a.grad_x, I);
  if (a.grad_w_ih) gemm<T>(GH, I, TB, {d.dgi, 1, GH}, {f.x, 1, I}, a.grad_w_ih, I);
  if (a.grad_w_hh) gemm<T>(GH, P, TB, {d.dgh, 1, GH}, {L.hprev, 1, P}, a.grad_w_hh, P);
  if (a.grad_w_hr) gemm<T>(P, H, TB, {d.dhtot, 1, P}, {L.aux2, 1, H}, a.grad_w_hr, H);
  if (a.grad_b_ih) column_sums(TB, GH, d.dgi, a.grad_b_ih);
  if (a.grad_b_hh && a.grad_b_ih && d.dgh == d.dgi)  // LSTM, RNN: one dG, one bias gradient
    std::copy(a.grad_b_ih, a.grad_b_ih + GH, a.grad_b_hh);
  else if (a.grad_b_hh)
    column_sums(TB, GH, d.dgh, a.grad_b_hh);
}

template void rnn_forward<float>(const RnnForwardArgs<float>&);
template void rnn_forward<double>(const RnnForwardArgs<double>&);
template void rnn_backward<float>(const RnnBackwardArgs<float>&);
template void rnn_backward<double>(const RnnBackwardArgs<double>&);

}  // namespace unet::cpu
