// CPU LSTM with layer normalization and/or zoneout, GRU with zoneout (math and contract in
// unet/rnn_ln.h). The plain kernels (rnn.cpp) stay as they are; this one is separate so
// that a plain layer runs exactly the code it ran before.
//
//   forward    gates = x W_ih^T (+ b_ih unless normalized)    one GEMM over all T*B rows
//              per step: hg = h W_hh^T (+ b_hh ...)            GEMM with M = B, W_hh packed once
//                        one pass per sequence (rows shared among threads): the layer norms
//                        (each row's mean and variance summed by one thread in a fixed
//                        order), gates, cell, zoneout, saves for backward
//   backward   per step, last to first: one pass per sequence turns dh, dc into dpre (the
//              gradient of the gate pre-activations) and through the norms into dA_ih, dA_hh;
//              then dh_prev += dA_hh W_hh (GEMM); after the loop, over all rows at once:
//              dx = dA_ih W_ih, dW_ih = dA_ih^T x, dW_hh = dA_hh^T h_prev, and column sums
//              for the biases and the norms' gains and biases.
//
// Rows: sequence b at step s sits at time t = s forward, t = L_b-1-s in reverse; padded
// steps (s >= L_b) use row t = s, which reverse leaves unused (as in rnn.cpp).
// Workspace planes of T*B rows: gates [G*H] (activated), hprev [H], aux [H] (LSTM: tanh of
// the (normalized) new cell; GRU: h W_hn^T + b_hn), LSTM cprev [H]; with layer norm
// xhat_ih [4H], xhat_hh [4H], xhat_c [H], rstd [3]. Padded rows hold zeros (the carried
// state in hprev, cprev), so that they add nothing to the sums.
// Scratch planes of T*B rows: dA_ih [G*H], dA_hh [G*H], dpre [G*H], dlc [H] (the gradient
// of LN_c's output); without layer norm the first three are one plane (GRU: two).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gemm.h"
#include "unet/activations.h"
#include "unet/rnn_ln.h"

namespace unet::cpu {
namespace {

#define UNET_ALWAYS_INLINE __attribute__((always_inline)) inline

// Row passes run in parallel over sequences once a step has this much work.
constexpr int64_t kParallelRowWork = 1 << 14;

// out[j] = sum over rows i, in order, of a[i*n + j] (times b[i*ldb + j] when b is given).
template <typename T>
void column_sums(int64_t rows, int64_t n, const T* a, const T* b, int64_t ldb, T* out) {
  constexpr int64_t kCols = 64;
#pragma omp parallel for schedule(static) if (rows * n > (int64_t(1) << 16))
  for (int64_t j0 = 0; j0 < n; j0 += kCols) {
    const int64_t m = std::min(kCols, n - j0);
    T acc[kCols] = {};
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < m; ++j)
        acc[j] += b ? a[i * n + j0 + j] * b[i * ldb + j0 + j] : a[i * n + j0 + j];
    std::copy(acc, acc + m, out + j0);
  }
}

// C = A W^T (+ bias) for the M rows of a step, W packed once per call: A is packed into
// `a_packed` (packed_rows_size(M, K)) and threads take whole column panels, so that a step
// allocates nothing (bit for bit gemm(M, A, W, ...)).
template <typename T>
void step_gemm(int64_t M, const T* A, const PackedOperand<T>& W, T* a_packed, T* C, int64_t ldc,
               const T* bias) {
  pack_rows<T>(M, W.K, {A, W.K, 1}, a_packed);
  const int64_t panel = gemm_panel_width<T>(), panels = (W.N + panel - 1) / panel;
#pragma omp parallel for schedule(static) if (M * W.N * W.K >= (int64_t(1) << 18))
  for (int64_t p = 0; p < panels; ++p)
    gemm_packed_columns<T>(M, a_packed, W, p * panel, std::min(W.N, (p + 1) * panel), C, ldc,
                           {bias});
}

// xhat = (a - mean(a)) / sqrt(var(a) + eps) over n values; returns 1 / sqrt(var + eps).
template <typename T>
UNET_ALWAYS_INLINE T normalize(const T* a, int64_t n, T eps, T* xhat) {
  T mean = 0, var = 0;
#pragma omp simd reduction(+ : mean)
  for (int64_t j = 0; j < n; ++j) mean += a[j];
  mean /= T(n);
#pragma omp simd reduction(+ : var)
  for (int64_t j = 0; j < n; ++j) var += (a[j] - mean) * (a[j] - mean);
  const T rstd = T(1) / std::sqrt(var / T(n) + eps);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) xhat[j] = (a[j] - mean) * rstd;
  return rstd;
}

// da = gradient of the normalization's input, given dy for its output γ xhat + β:
// rstd * (dx - mean(dx) - xhat * mean(dx * xhat)) with dx = dy * γ. da may be dy.
template <typename T>
UNET_ALWAYS_INLINE void normalize_backward(const T* dy, const T* gamma, const T* xhat, T rstd, int64_t n, T* da) {
  T s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < n; ++j) {
    s1 += dy[j] * gamma[j];
    s2 += dy[j] * gamma[j] * xhat[j];
  }
  s1 /= T(n), s2 /= T(n);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) da[j] = rstd * (dy[j] * gamma[j] - s1 - xhat[j] * s2);
}

template <typename T>
using Layer = RnnLnLayout<T>;

// Zoneout: the new value where keep == 0, the old where 1, the blend in between.
template <typename T>
UNET_ALWAYS_INLINE T zone(const T* keep, int64_t j, T old_value, T new_value) {
  return keep ? keep[j] * old_value + (T(1) - keep[j]) * new_value : new_value;
}

template <typename T>
UNET_ALWAYS_INLINE void lstm_forward_row(const Layer<T>& L, const RnnForwardArgs<T>& a, const RnnLnArgs<T>& e,
                      const T* bias, const T* hg, int64_t r, T* h, T* c) {
  const int64_t H = L.H, GH = L.GH;
  T* g = L.gates + r * GH;
  T *hp = L.hprev + r * H, *cp = L.cprev + r * H, *tl = L.aux + r * H, *y = a.y + r * H;
  const T* kh = e.keep_h ? e.keep_h + r * H : nullptr;
  const T* kc = e.keep_c ? e.keep_c + r * H : nullptr;
  std::copy(h, h + H, hp);
  std::copy(c, c + H, cp);
  if (L.ln) {
    T *xih = L.xih + r * GH, *xhh = L.xhh + r * GH, *rstd = L.rstd + r * 3;
    rstd[0] = normalize(g, GH, e.eps, xih);
    rstd[1] = normalize(hg, GH, e.eps, xhh);
#pragma omp simd
    for (int64_t j = 0; j < GH; ++j)
      g[j] = e.ln_ih_weight[j] * xih[j] + e.ln_ih_bias[j] + e.ln_hh_weight[j] * xhh[j] +
             e.ln_hh_bias[j] + (bias ? bias[j] : T(0));
  } else {
#pragma omp simd
    for (int64_t j = 0; j < GH; ++j) g[j] += hg[j];
  }
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T i = sigmoid(g[j]), f = sigmoid(g[H + j]), z = tanh_(g[2 * H + j]),
            o = sigmoid(g[3 * H + j]);
    g[j] = i, g[H + j] = f, g[2 * H + j] = z, g[3 * H + j] = o;
    tl[j] = f * cp[j] + i * z;  // the new cell, for now
  }
  const T* xc = nullptr;
  if (L.ln) {
    T* xc_row = L.xc + r * H;
    L.rstd[r * 3 + 2] = normalize(tl, H, e.eps, xc_row);
    xc = xc_row;
  }
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T cn = tl[j];
    c[j] = zone(kc, j, cp[j], cn);
    tl[j] = tanh_(xc ? e.ln_c_weight[j] * xc[j] + e.ln_c_bias[j] : cn);
    h[j] = y[j] = zone(kh, j, hp[j], g[3 * H + j] * tl[j]);
  }
}

template <typename T>
UNET_ALWAYS_INLINE void gru_forward_row(const Layer<T>& L, const RnnForwardArgs<T>& a, const RnnLnArgs<T>& e,
                     const T* hg, int64_t r, T* h) {
  const int64_t H = L.H;
  T *g = L.gates + r * L.GH, *hp = L.hprev + r * H, *hn_saved = L.aux + r * H, *y = a.y + r * H;
  const T* kh = e.keep_h ? e.keep_h + r * H : nullptr;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T rg = sigmoid(g[j] + hg[j]), z = sigmoid(g[H + j] + hg[H + j]), hn = hg[2 * H + j];
    const T n = tanh_(g[2 * H + j] + rg * hn), old = h[j];
    g[j] = rg, g[H + j] = z, g[2 * H + j] = n;
    hn_saved[j] = hn;
    hp[j] = old;
    h[j] = y[j] = zone(kh, j, old, n + z * (old - n));
  }
}

// A padded step: the state stays, y = 0, and the row's saves are zeros (hprev, cprev the
// carried state) so that they add nothing to backward's sums.
template <typename T>
UNET_ALWAYS_INLINE void padded_forward_row(const Layer<T>& L, const RnnForwardArgs<T>& a, int64_t r, const T* h,
                        const T* c) {
  const int64_t H = L.H, GH = L.GH;
  std::fill(L.gates + r * GH, L.gates + (r + 1) * GH, T(0));
  std::fill(L.aux + r * H, L.aux + (r + 1) * H, T(0));
  std::fill(a.y + r * H, a.y + (r + 1) * H, T(0));
  std::copy(h, h + H, L.hprev + r * H);
  if (L.lstm) std::copy(c, c + H, L.cprev + r * H);
  if (L.ln) {
    std::fill(L.xih + r * GH, L.xih + (r + 1) * GH, T(0));
    std::fill(L.xhh + r * GH, L.xhh + (r + 1) * GH, T(0));
    std::fill(L.xc + r * H, L.xc + (r + 1) * H, T(0));
    std::fill(L.rstd + r * 3, L.rstd + (r + 1) * 3, T(0));
  }
}

// Backward's planes in scratch and its running state gradients.
template <typename T>
struct Grads {
  T *dA_ih, *dA_hh, *dpre, *dlc;
  T* dh;      // [B, H] the gradient reaching h after the step (before: its direct part)
  T* dc;      // [B, H] the same for c (LSTM)
  T* dA_step; // [B, GH] this step's dA_hh rows, contiguous for the recurrent GEMM
};

template <typename T>
UNET_ALWAYS_INLINE void lstm_backward_row(const Layer<T>& L, const RnnBackwardArgs<T>& a, const RnnLnArgs<T>& e,
                       const Grads<T>& d, int64_t r, int64_t b) {
  const int64_t H = L.H, GH = L.GH;
  const T *g = L.gates + r * GH, *tl = L.aux + r * H, *cp = L.cprev + r * H,
          *gy = a.grad_y + r * H;
  const T* kh = e.keep_h ? e.keep_h + r * H : nullptr;
  const T* kc = e.keep_c ? e.keep_c + r * H : nullptr;
  T *dh = d.dh + b * H, *dc = d.dc + b * H, *dpre = d.dpre + r * GH;
  // dpre[0, H) first holds the gradient reaching the new cell through h.
  T* dl = L.ln ? d.dlc + r * H : dpre;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T dht = dh[j] + gy[j];
    const T dhn = kh ? (T(1) - kh[j]) * dht : dht;
    const T o = g[3 * H + j], t = tl[j];
    dpre[3 * H + j] = dhn * t * o * (T(1) - o);
    dl[j] = dhn * o * (T(1) - t * t);
    dh[j] = kh ? kh[j] * dht : T(0);
  }
  if (L.ln)
    normalize_backward(dl, e.ln_c_weight, L.xc + r * H, L.rstd[r * 3 + 2], H, dpre);
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T dct = dc[j];
    const T dcn = (kc ? (T(1) - kc[j]) * dct : dct) + dpre[j];
    const T i = g[j], f = g[H + j], z = g[2 * H + j];
    dpre[j] = dcn * z * i * (T(1) - i);
    dpre[H + j] = dcn * cp[j] * f * (T(1) - f);
    dpre[2 * H + j] = dcn * i * (T(1) - z * z);
    dc[j] = (kc ? kc[j] * dct : T(0)) + dcn * f;
  }
  if (L.ln) {
    normalize_backward(dpre, e.ln_ih_weight, L.xih + r * GH, L.rstd[r * 3], GH, d.dA_ih + r * GH);
    normalize_backward(dpre, e.ln_hh_weight, L.xhh + r * GH, L.rstd[r * 3 + 1], GH,
                       d.dA_hh + r * GH);
  }
  std::copy(d.dA_hh + r * GH, d.dA_hh + (r + 1) * GH, d.dA_step + b * GH);
}

template <typename T>
UNET_ALWAYS_INLINE void gru_backward_row(const Layer<T>& L, const RnnBackwardArgs<T>& a, const RnnLnArgs<T>& e,
                      const Grads<T>& d, int64_t r, int64_t b) {
  const int64_t H = L.H, GH = L.GH;
  const T *g = L.gates + r * GH, *hn = L.aux + r * H, *hp = L.hprev + r * H,
          *gy = a.grad_y + r * H;
  const T* kh = e.keep_h ? e.keep_h + r * H : nullptr;
  T *dh = d.dh + b * H, *di = d.dA_ih + r * GH, *ds = d.dA_hh + r * GH;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T dht = dh[j] + gy[j];
    const T dhn = kh ? (T(1) - kh[j]) * dht : dht;
    const T rg = g[j], z = g[H + j], n = g[2 * H + j];
    const T dn = dhn * (T(1) - z) * (T(1) - n * n);
    const T dz = dhn * (hp[j] - n) * z * (T(1) - z);
    const T dr = dn * hn[j] * rg * (T(1) - rg);
    di[j] = ds[j] = dr;
    di[H + j] = ds[H + j] = dz;
    di[2 * H + j] = dn;
    ds[2 * H + j] = dn * rg;
    dh[j] = (kh ? kh[j] * dht : T(0)) + dhn * z;
  }
  std::copy(ds, ds + GH, d.dA_step + b * GH);
}

template <typename T>
UNET_ALWAYS_INLINE void padded_backward_row(const Layer<T>& L, const Grads<T>& d, int64_t r, int64_t b) {
  const int64_t GH = L.GH;
  for (T* plane : {d.dA_ih, d.dA_hh, d.dpre}) std::fill(plane + r * GH, plane + (r + 1) * GH, T(0));
  if (L.ln) std::fill(d.dlc + r * L.H, d.dlc + (r + 1) * L.H, T(0));
  std::fill(d.dA_step + b * GH, d.dA_step + (b + 1) * GH, T(0));
}

// One step's row pass over the sequences [b0, b1), compiled once per instruction set like
// rnn.cpp's row kernels (the one the GEMM runs with, UNET_CPU_ISA, is used), so that the
// gate loops vectorize as wide as the machine allows.
template <typename T>
struct ForwardStep {
  const Layer<T>& L;
  const RnnForwardArgs<T>& a;
  const RnnLnArgs<T>& e;
  const T* bias;
  const T* hg;
  int64_t s;
  UNET_ALWAYS_INLINE void operator()(int64_t b0, int64_t b1) const {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r = L.row(s, b);
      T *h = a.h_n + b * L.H, *c = L.lstm ? a.c_n + b * L.H : nullptr;
      if (s >= L.length(b))
        padded_forward_row(L, a, r, h, c);
      else if (L.lstm)
        lstm_forward_row(L, a, e, bias, hg + b * L.GH, r, h, c);
      else
        gru_forward_row(L, a, e, hg + b * L.GH, r, h);
    }
  }
};

template <typename T>
struct BackwardStep {
  const Layer<T>& L;
  const RnnBackwardArgs<T>& a;
  const RnnLnArgs<T>& e;
  const Grads<T>& d;
  int64_t s;
  UNET_ALWAYS_INLINE void operator()(int64_t b0, int64_t b1) const {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r = L.row(s, b);
      if (s >= L.length(b))
        padded_backward_row(L, d, r, b);
      else if (L.lstm)
        lstm_backward_row(L, a, e, d, r, b);
      else
        gru_backward_row(L, a, e, d, r, b);
    }
  }
};

#if defined(__x86_64__) || defined(__i386__)
template <typename Step>
__attribute__((target("avx512f,fma"))) void run_avx512(const Step& step, int64_t b0, int64_t b1) {
  step(b0, b1);
}
template <typename Step>
__attribute__((target("avx2,fma"))) void run_avx2(const Step& step, int64_t b0, int64_t b1) {
  step(b0, b1);
}
#endif
template <typename Step>
void run_generic(const Step& step, int64_t b0, int64_t b1) {
  step(b0, b1);
}

// Runs `step` over all B sequences, shared among threads in contiguous blocks when the step
// is big enough (each sequence's row is computed whole by one thread).
template <typename Step>
void run_step(const Step& step, int64_t B, bool parallel) {
  using Fn = void (*)(const Step&, int64_t, int64_t);
  static const Fn fn = [] {
    const std::string isa = gemm_kernel_isa();
#if defined(__x86_64__) || defined(__i386__)
    if (isa == "avx512") return &run_avx512<Step>;
    if (isa == "avx2") return &run_avx2<Step>;
#endif
    return &run_generic<Step>;
  }();
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < B; ++b) fn(step, b, b + 1);
}

}  // namespace

template <typename T>
void rnn_ln_forward(const RnnForwardArgs<T>& a, const RnnLnArgs<T>& e) {
  const Layer<T> L(a, e);
  const int64_t B = L.B, H = L.H, GH = L.GH;
  std::copy(a.h0, a.h0 + B * H, a.h_n);
  if (L.lstm) std::copy(a.c0, a.c0 + B * H, a.c_n);
  if (L.TB == 0) return;
  // With layer norm the biases come after the normalizations, as one sum.
  gemm<T>(L.TB, GH, L.I, {a.x, L.I, 1}, {a.w_ih, L.I, 1}, L.gates, GH, {L.ln ? nullptr : a.b_ih});
  std::vector<T> bias;
  if (L.ln && a.b_ih) {
    bias.resize(GH);
    for (int64_t j = 0; j < GH; ++j) bias[j] = a.b_ih[j] + a.b_hh[j];
  }
  const PackedOperand<T> w_hh = pack_operand<T>(GH, H, {a.w_hh, H, 1});
  std::vector<T> hg(B * GH);
  AlignedArray<T> a_packed = aligned_array<T>(packed_rows_size<T>(B, H));
  for (int64_t s = 0; s < L.steps; ++s) {
    step_gemm<T>(B, a.h_n, w_hh, a_packed.get(), hg.data(), GH, L.ln ? nullptr : a.b_hh);
    run_step(ForwardStep<T>{L, a, e, bias.empty() ? nullptr : bias.data(), hg.data(), s}, B,
             B * GH >= kParallelRowWork);
  }
}

template <typename T>
void rnn_ln_backward(const RnnBackwardArgs<T>& a, const RnnLnArgs<T>& e, const RnnLnGrads<T>& gr) {
  const RnnForwardArgs<T>& f = a.fwd;
  const Layer<T> L(f, e);
  const int64_t B = L.B, H = L.H, GH = L.GH, TB = L.TB, I = L.I;
  std::vector<T> dh(B * H), dc(L.lstm ? B * H : 0), dA_step(B * GH), rec(B * H);
  if (a.grad_h_n) std::copy(a.grad_h_n, a.grad_h_n + B * H, dh.begin());
  if (L.lstm && a.grad_c_n) std::copy(a.grad_c_n, a.grad_c_n + B * H, dc.begin());
  Grads<T> d{a.scratch, a.scratch, a.scratch, a.scratch + 3 * TB * GH, dh.data(), dc.data(),
             dA_step.data()};
  if (L.ln) d.dA_hh = d.dA_ih + TB * GH, d.dpre = d.dA_hh + TB * GH;
  if (!L.lstm) d.dA_hh = d.dA_ih + TB * GH;  // GRU: the hidden side differs in n

  if (TB > 0) {
    const PackedOperand<T> w_hh = pack_operand<T>(H, GH, {f.w_hh, 1, H});
    AlignedArray<T> a_packed = aligned_array<T>(packed_rows_size<T>(B, GH));
    for (int64_t s = L.steps - 1; s >= 0; --s) {
      run_step(BackwardStep<T>{L, a, e, d, s}, B, B * GH >= kParallelRowWork);
      if (s == 0 && !a.grad_h0) break;
      // dh_prev += dA_hh W_hh; padded rows add zeros, so their carried gradient stays.
      step_gemm<T>(B, dA_step.data(), w_hh, a_packed.get(), rec.data(), H, nullptr);
      for (int64_t k = 0; k < B * H; ++k) dh[k] += rec[k];
    }
  }
  if (a.grad_h0) std::copy(dh.begin(), dh.end(), a.grad_h0);
  if (a.grad_c0) std::copy(dc.begin(), dc.end(), a.grad_c0);

  if (a.grad_x) gemm<T>(TB, I, GH, {d.dA_ih, GH, 1}, {f.w_ih, 1, I}, a.grad_x, I);
  if (a.grad_w_ih) gemm<T>(GH, I, TB, {d.dA_ih, 1, GH}, {f.x, 1, I}, a.grad_w_ih, I);
  if (a.grad_w_hh) gemm<T>(GH, H, TB, {d.dA_hh, 1, GH}, {L.hprev, 1, H}, a.grad_w_hh, H);
  const T* none = nullptr;
  if (!L.lstm) {
    if (a.grad_b_ih) column_sums(TB, GH, d.dA_ih, none, 0, a.grad_b_ih);
    if (a.grad_b_hh) column_sums(TB, GH, d.dA_hh, none, 0, a.grad_b_hh);
    return;
  }
  // LSTM: pre = ... + b_ih + b_hh (+ β_ih + β_hh): all four get the column sums of dpre,
  // summed once.
  T* first = nullptr;
  for (T* out : {a.grad_b_ih, a.grad_b_hh, gr.ln_ih_bias, gr.ln_hh_bias}) {
    if (!out) continue;
    if (first)
      std::copy(first, first + GH, out);
    else
      column_sums(TB, GH, d.dpre, none, 0, first = out);
  }
  if (!L.ln) return;
  if (gr.ln_ih_weight) column_sums(TB, GH, d.dpre, L.xih, GH, gr.ln_ih_weight);
  if (gr.ln_hh_weight) column_sums(TB, GH, d.dpre, L.xhh, GH, gr.ln_hh_weight);
  if (gr.ln_c_weight) column_sums(TB, H, d.dlc, L.xc, H, gr.ln_c_weight);
  if (gr.ln_c_bias) column_sums(TB, H, d.dlc, none, 0, gr.ln_c_bias);
}

template void rnn_ln_forward<float>(const RnnForwardArgs<float>&, const RnnLnArgs<float>&);
template void rnn_ln_forward<double>(const RnnForwardArgs<double>&, const RnnLnArgs<double>&);
template void rnn_ln_backward<float>(const RnnBackwardArgs<float>&, const RnnLnArgs<float>&,
                                     const RnnLnGrads<float>&);
template void rnn_ln_backward<double>(const RnnBackwardArgs<double>&, const RnnLnArgs<double>&,
                                      const RnnLnGrads<double>&);

}  // namespace unet::cpu
