// CPU LSTM with layer normalization and/or zoneout, GRU with zoneout (math and contract in
// unet/rnn_ln.h). The plain kernels (rnn.cpp) stay as they are; this one is separate so
// that a plain layer runs exactly the code it ran before.
//
//   forward    gates = x W_ih^T (+ b_ih unless normalized)    one GEMM over all T*B rows
//              (16-bit inputs with projection_dtype, rnn_projection.h)
//              per step and sequence: hg = h W_hh^T (+ b_hh ...), then one fused row pass:
//              the layer norms (each row's mean and variance summed in a fixed order),
//              gates, cell, zoneout, saves for backward
//   backward   per step, last to first, per sequence: one row pass turns dh, dc into the
//              gradient of the gate pre-activations (dpre, a row buffer) and through the norms
//              into dA_ih, dA_hh, adding the row's share of the norms' gain and bias
//              gradients to the sequence's own sums; then dh_prev += dA_hh W_hh (GEMM).
//              After the loop, over all rows at once: dx = dA_ih W_ih, dW_ih = dA_ih^T x,
//              dW_hh = dA_hh^T h_prev, and the bias gradients.
//
// Threads: the sequences of a batch are independent through time, so each thread takes a
// contiguous block of them and runs them through every step alone (its rows of the
// recurrent GEMMs, then their row passes): no barrier per step. A GEMM gives every element
// the same value whatever rows it is computed with, and every other value is computed for
// one sequence by one thread in one fixed order, so results do not depend on the thread
// count. Too few sequences to share: one thread runs them, its GEMMs split by columns.
//
// Rows: sequence b at step s sits at time t = s forward, t = L_b-1-s in reverse; padded
// steps (s >= L_b) use row t = s, which reverse leaves unused (as in rnn.cpp).
// Workspace planes of T*B rows: gates [G*H] (activated), hprev [H], aux [H] (LSTM: tanh of
// the (normalized) new cell; GRU: h W_hn^T + b_hn), LSTM cprev [H]; with layer norm
// xhat_ih [4H], xhat_hh [4H], xhat_c [H], rstd [3]. Padded rows hold zeros (the carried
// state in hprev, cprev), so that they add nothing to the sums.
// Scratch planes of T*B rows: dA_ih [G*H], dA_hh [G*H]; for an LSTM without layer norm the
// two are one plane (also its dpre).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "gemm.h"
#include "rnn_projection.h"
#include "unet/activations.h"
#include "unet/rnn_ln.h"

namespace unet::cpu {
namespace {

#define UNET_ALWAYS_INLINE __attribute__((always_inline)) inline

// Below this many multiply-adds per recurrent GEMM one thread beats a team.
constexpr double kParallelStepWork = 1 << 18;
// Fewest sequences a thread takes, so that its GEMM rows still fill a micro-kernel tile.
constexpr int64_t kMinSequencesPerThread = 4;

// out[j] = sum over rows i, in order, of a[i*n + j].
template <typename T>
void column_sums(int64_t rows, int64_t n, const T* a, T* out) {
  constexpr int64_t kCols = 64;
#pragma omp parallel for schedule(static) if (rows * n > (int64_t(1) << 16))
  for (int64_t j0 = 0; j0 < n; j0 += kCols) {
    const int64_t m = std::min(kCols, n - j0);
    T acc[kCols] = {};
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < m; ++j) acc[j] += a[i * n + j0 + j];
    std::copy(acc, acc + m, out + j0);
  }
}

template <typename T>
using Layer = RnnLnLayout<T>;

// What every row pass of a call reads besides its rows: the layer-norm parameters, the
// biases summed once (LN: β_ih + β_hh + b_ih + b_hh, added after the norms), and H zeros
// that stand for absent keep factors (keep 0: the new value, exactly).
template <typename T>
struct RowConstants {
  const T *gamma_ih, *gamma_hh, *gamma_c, *beta_c, *bias;
  T eps;
  const T *keep_h, *keep_c, *zeros;
  RowConstants(const Layer<T>& L, const RnnForwardArgs<T>& a, const RnnLnArgs<T>& e,
               std::vector<T>& storage)
      : gamma_ih(e.ln_ih_weight), gamma_hh(e.ln_hh_weight), gamma_c(e.ln_c_weight),
        beta_c(e.ln_c_bias), bias(nullptr), eps(e.eps), keep_h(e.keep_h), keep_c(e.keep_c) {
    storage.assign(L.H + (L.ln ? L.GH : 0), T(0));
    zeros = storage.data();
    if (L.ln) {
      T* sum = storage.data() + L.H;
      for (int64_t j = 0; j < L.GH; ++j)
        sum[j] = e.ln_ih_bias[j] + e.ln_hh_bias[j] + (a.b_ih ? a.b_ih[j] + a.b_hh[j] : T(0));
      bias = sum;
    }
  }
  const T* kh(int64_t r, int64_t H) const { return keep_h ? keep_h + r * H : zeros; }
  const T* kc(int64_t r, int64_t H) const { return keep_c ? keep_c + r * H : zeros; }
};

// rstd = 1 / sqrt(var + eps) of the n values of a and of b (two-pass: mean, then the
// squared deviations), their means in mean[0..1].
template <typename T>
UNET_ALWAYS_INLINE void moments2(const T* a, const T* b, int64_t n, T eps, T* mean, T* rstd) {
  T sa = 0, sb = 0;
#pragma omp simd reduction(+ : sa, sb)
  for (int64_t j = 0; j < n; ++j) sa += a[j], sb += b[j];
  const T ma = sa / T(n), mb = sb / T(n);
  T va = 0, vb = 0;
#pragma omp simd reduction(+ : va, vb)
  for (int64_t j = 0; j < n; ++j) {
    const T da = a[j] - ma, db = b[j] - mb;
    va += da * da, vb += db * db;
  }
  mean[0] = ma, mean[1] = mb;
  rstd[0] = T(1) / std::sqrt(va / T(n) + eps);
  rstd[1] = T(1) / std::sqrt(vb / T(n) + eps);
}

// The state of sequence b after the step: h, c (LSTM) updated in place.
template <typename T, bool kLN>
UNET_ALWAYS_INLINE void lstm_forward_row(const Layer<T>& L, const RnnForwardArgs<T>& a,
                                         const RowConstants<T>& k, const T* hg, int64_t r, T* h,
                                         T* c) {
  const int64_t H = L.H;
  T* g = L.gates + r * L.GH;
  T *hp = L.hprev + r * H, *cp = L.cprev + r * H, *tl = L.aux + r * H, *y = a.y + r * H;
  const T *kh = k.kh(r, H), *kc = k.kc(r, H);
  if constexpr (kLN) {
    T *xih = L.xih + r * L.GH, *xhh = L.xhh + r * L.GH, *rs = L.rstd + r * 3;
    T mean[2];
    moments2(g, hg, L.GH, k.eps, mean, rs);
    const T m_ih = mean[0], m_hh = mean[1], r_ih = rs[0], r_hh = rs[1];
    const T *gi = k.gamma_ih, *gh = k.gamma_hh, *bias = k.bias;
    T sc = 0;
    // pre = γ_ih xhat_ih + γ_hh xhat_hh + the biases, gate by gate; the new cell into tl.
#pragma omp simd reduction(+ : sc)
    for (int64_t j = 0; j < H; ++j) {
      T pre[4];
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        const int64_t u = q * H + j;
        const T xi = (g[u] - m_ih) * r_ih, xh = (hg[u] - m_hh) * r_hh;
        xih[u] = xi, xhh[u] = xh;
        pre[q] = gi[u] * xi + gh[u] * xh + bias[u];
      }
      const T i = sigmoid(pre[0]), f = sigmoid(pre[1]), z = tanh_(pre[2]), o = sigmoid(pre[3]);
      g[j] = i, g[H + j] = f, g[2 * H + j] = z, g[3 * H + j] = o;
      const T c_old = c[j];
      cp[j] = c_old;
      const T cn = f * c_old + i * z;
      tl[j] = cn;
      sc += cn;
    }
    const T mc = sc / T(H);
    T vc = 0;
#pragma omp simd reduction(+ : vc)
    for (int64_t j = 0; j < H; ++j) vc += (tl[j] - mc) * (tl[j] - mc);
    const T rc = T(1) / std::sqrt(vc / T(H) + k.eps);
    rs[2] = rc;
    T* xc = L.xc + r * H;
    const T *gc = k.gamma_c, *bc = k.beta_c;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T cn = tl[j], x = (cn - mc) * rc, t = tanh_(gc[j] * x + bc[j]), h_old = h[j];
      xc[j] = x;
      tl[j] = t;
      hp[j] = h_old;
      c[j] = kc[j] * cp[j] + (T(1) - kc[j]) * cn;
      h[j] = y[j] = kh[j] * h_old + (T(1) - kh[j]) * (g[3 * H + j] * t);
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T i = sigmoid(g[j] + hg[j]), f = sigmoid(g[H + j] + hg[H + j]),
              z = tanh_(g[2 * H + j] + hg[2 * H + j]), o = sigmoid(g[3 * H + j] + hg[3 * H + j]);
      g[j] = i, g[H + j] = f, g[2 * H + j] = z, g[3 * H + j] = o;
      const T c_old = c[j], h_old = h[j], cn = f * c_old + i * z, t = tanh_(cn);
      cp[j] = c_old, hp[j] = h_old, tl[j] = t;
      c[j] = kc[j] * c_old + (T(1) - kc[j]) * cn;
      h[j] = y[j] = kh[j] * h_old + (T(1) - kh[j]) * (o * t);
    }
  }
}

template <typename T>
UNET_ALWAYS_INLINE void gru_forward_row(const Layer<T>& L, const RnnForwardArgs<T>& a,
                                        const RowConstants<T>& k, const T* hg, int64_t r, T* h) {
  const int64_t H = L.H;
  T *g = L.gates + r * L.GH, *hp = L.hprev + r * H, *hn_saved = L.aux + r * H, *y = a.y + r * H;
  const T* kh = k.kh(r, H);
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T rg = sigmoid(g[j] + hg[j]), z = sigmoid(g[H + j] + hg[H + j]), hn = hg[2 * H + j];
    const T n = tanh_(g[2 * H + j] + rg * hn), old = h[j];
    g[j] = rg, g[H + j] = z, g[2 * H + j] = n;
    hn_saved[j] = hn;
    hp[j] = old;
    h[j] = y[j] = kh[j] * old + (T(1) - kh[j]) * (n + z * (old - n));
  }
}

// A padded step: the state stays, y = 0, and the row's saves are zeros (hprev, cprev the
// carried state) so that they add nothing to backward's sums.
template <typename T>
UNET_ALWAYS_INLINE void padded_forward_row(const Layer<T>& L, const RnnForwardArgs<T>& a,
                                           int64_t r, const T* h, const T* c) {
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

// Backward's planes in scratch, its running state gradients, and with layer norm each
// sequence's sums for the norms' gains and biases.
template <typename T>
struct Grads {
  T *dA_ih, *dA_hh;
  T* dh;       // [B, H] the gradient reaching h after the step (before: its direct part)
  T* dc;       // [B, H] the same for c (LSTM)
  T* dA_step;  // [B, GH] this step's dA_hh rows, contiguous for the recurrent GEMM, when
               // the rows of a step are not (else null)
  T* sums;     // [B, sums_width] per sequence: Σ dpre, Σ dpre xhat_ih, Σ dpre xhat_hh,
               // Σ dl_c xhat_c, Σ dl_c (dl_c: the gradient of LN_c's output)
};

int64_t sums_width(int64_t GH, int64_t H) { return 3 * GH + 2 * H; }

template <typename T, bool kLN>
UNET_ALWAYS_INLINE void lstm_backward_row(const Layer<T>& L, const RnnBackwardArgs<T>& a,
                                          const RowConstants<T>& k, const Grads<T>& d,
                                          T* buf /* [GH + H] */, int64_t r, int64_t b) {
  const int64_t H = L.H, GH = L.GH;
  const T *g = L.gates + r * GH, *tl = L.aux + r * H, *cp = L.cprev + r * H,
          *gy = a.grad_y + r * H;
  const T *kh = k.kh(r, H), *kc = k.kc(r, H);
  T *dh = d.dh + b * H, *dc = d.dc + b * H;
  if constexpr (kLN) {
    const T *xih = L.xih + r * GH, *xhh = L.xhh + r * GH, *xc = L.xc + r * H,
            *rs = L.rstd + r * 3;
    const T *gi = k.gamma_ih, *gh = k.gamma_hh, *gc = k.gamma_c;
    T *dpre = buf, *dl = buf + GH;
    T* acc = d.sums + b * sums_width(GH, H);
    T *acc_b = acc, *acc_gi = acc + GH, *acc_gh = acc + 2 * GH, *acc_gc = acc + 3 * GH,
      *acc_bc = acc_gc + H;
    // Through h: the output gate, and dl_c with LN_c's sums.
    T s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t j = 0; j < H; ++j) {
      const T dht = dh[j] + gy[j], dhn = (T(1) - kh[j]) * dht;
      dh[j] = kh[j] * dht;
      const T o = g[3 * H + j], t = tl[j];
      dpre[3 * H + j] = dhn * t * o * (T(1) - o);
      const T dlj = dhn * o * (T(1) - t * t), x = xc[j], dx = dlj * gc[j];
      dl[j] = dlj;
      s1 += dx, s2 += dx * x;
      acc_gc[j] += dlj * x, acc_bc[j] += dlj;
    }
    const T m1 = s1 / T(H), m2 = s2 / T(H), rc = rs[2];
    // Through the cell: the other gates.
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T dct = dc[j];
      const T dcn = (T(1) - kc[j]) * dct + rc * (dl[j] * gc[j] - m1 - xc[j] * m2);
      const T i = g[j], f = g[H + j], z = g[2 * H + j];
      dpre[j] = dcn * z * i * (T(1) - i);
      dpre[H + j] = dcn * cp[j] * f * (T(1) - f);
      dpre[2 * H + j] = dcn * i * (T(1) - z * z);
      dc[j] = kc[j] * dct + dcn * f;
    }
    // LN_ih's and LN_hh's sums over all four gates, and the sequence's gain and bias sums.
    T si1 = 0, si2 = 0, sh1 = 0, sh2 = 0;
#pragma omp simd reduction(+ : si1, si2, sh1, sh2)
    for (int64_t u = 0; u < GH; ++u) {
      const T dq = dpre[u], xi = xih[u], xh = xhh[u], di = dq * gi[u], dhh = dq * gh[u];
      acc_b[u] += dq, acc_gi[u] += dq * xi, acc_gh[u] += dq * xh;
      si1 += di, si2 += di * xi, sh1 += dhh, sh2 += dhh * xh;
    }
    const T mi1 = si1 / T(GH), mi2 = si2 / T(GH), mh1 = sh1 / T(GH), mh2 = sh2 / T(GH);
    const T ri = rs[0], rh = rs[1];
    T *dai = d.dA_ih + r * GH, *dah = d.dA_hh + r * GH;
#pragma omp simd
    for (int64_t u = 0; u < GH; ++u) {
      dai[u] = ri * (dpre[u] * gi[u] - mi1 - xih[u] * mi2);
      dah[u] = rh * (dpre[u] * gh[u] - mh1 - xhh[u] * mh2);
    }
  } else {
    T* dpre = d.dA_ih + r * GH;  // the one plane
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T dht = dh[j] + gy[j], dhn = (T(1) - kh[j]) * dht;
      dh[j] = kh[j] * dht;
      const T o = g[3 * H + j], t = tl[j], dct = dc[j];
      const T dcn = (T(1) - kc[j]) * dct + dhn * o * (T(1) - t * t);
      const T i = g[j], f = g[H + j], z = g[2 * H + j];
      dpre[j] = dcn * z * i * (T(1) - i);
      dpre[H + j] = dcn * cp[j] * f * (T(1) - f);
      dpre[2 * H + j] = dcn * i * (T(1) - z * z);
      dpre[3 * H + j] = dhn * t * o * (T(1) - o);
      dc[j] = kc[j] * dct + dcn * f;
    }
  }
  if (d.dA_step) std::copy(d.dA_hh + r * GH, d.dA_hh + (r + 1) * GH, d.dA_step + b * GH);
}

template <typename T>
UNET_ALWAYS_INLINE void gru_backward_row(const Layer<T>& L, const RnnBackwardArgs<T>& a,
                                         const RowConstants<T>& k, const Grads<T>& d, int64_t r,
                                         int64_t b) {
  const int64_t H = L.H, GH = L.GH;
  const T *g = L.gates + r * GH, *hn = L.aux + r * H, *hp = L.hprev + r * H,
          *gy = a.grad_y + r * H;
  const T* kh = k.kh(r, H);
  T *dh = d.dh + b * H, *di = d.dA_ih + r * GH, *ds = d.dA_hh + r * GH;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T dht = dh[j] + gy[j], dhn = (T(1) - kh[j]) * dht;
    const T rg = g[j], z = g[H + j], n = g[2 * H + j];
    const T dn = dhn * (T(1) - z) * (T(1) - n * n);
    const T dz = dhn * (hp[j] - n) * z * (T(1) - z);
    const T dr = dn * hn[j] * rg * (T(1) - rg);
    di[j] = ds[j] = dr;
    di[H + j] = ds[H + j] = dz;
    di[2 * H + j] = dn;
    ds[2 * H + j] = dn * rg;
    dh[j] = kh[j] * dht + dhn * z;
  }
  if (d.dA_step) std::copy(ds, ds + GH, d.dA_step + b * GH);
}

template <typename T>
UNET_ALWAYS_INLINE void padded_backward_row(const Layer<T>& L, const Grads<T>& d, int64_t r,
                                            int64_t b) {
  const int64_t GH = L.GH;
  std::fill(d.dA_ih + r * GH, d.dA_ih + (r + 1) * GH, T(0));
  std::fill(d.dA_hh + r * GH, d.dA_hh + (r + 1) * GH, T(0));
  if (d.dA_step) std::fill(d.dA_step + b * GH, d.dA_step + (b + 1) * GH, T(0));
}

// One step's row passes over the sequences [b0, b1), compiled once per instruction set like
// rnn.cpp's row kernels (the one the GEMM runs with, UNET_CPU_ISA, is used), so that the
// gate loops vectorize as wide as the machine allows.
template <typename T>
struct ForwardStep {
  const Layer<T>& L;
  const RnnForwardArgs<T>& a;
  const RowConstants<T>& k;
  const T* hg;  // [B, GH] row b at hg + b * GH
  int64_t s;
  UNET_ALWAYS_INLINE void operator()(int64_t b0, int64_t b1) const {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r = L.row(s, b);
      T *h = a.h_n + b * L.H, *c = L.lstm ? a.c_n + b * L.H : nullptr;
      if (s >= L.length(b))
        padded_forward_row(L, a, r, h, c);
      else if (L.ln)
        lstm_forward_row<T, true>(L, a, k, hg + b * L.GH, r, h, c);
      else if (L.lstm)
        lstm_forward_row<T, false>(L, a, k, hg + b * L.GH, r, h, c);
      else
        gru_forward_row(L, a, k, hg + b * L.GH, r, h);
    }
  }
};

template <typename T>
struct BackwardStep {
  const Layer<T>& L;
  const RnnBackwardArgs<T>& a;
  const RowConstants<T>& k;
  const Grads<T>& d;
  T* buf;  // this thread's row buffer
  int64_t s;
  UNET_ALWAYS_INLINE void operator()(int64_t b0, int64_t b1) const {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r = L.row(s, b);
      if (s >= L.length(b))
        padded_backward_row(L, d, r, b);
      else if (L.ln)
        lstm_backward_row<T, true>(L, a, k, d, buf, r, b);
      else if (L.lstm)
        lstm_backward_row<T, false>(L, a, k, d, buf, r, b);
      else
        gru_backward_row(L, a, k, d, r, b);
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

// Runs `step` over the sequences [b0, b1) with the row code of the instruction set in use.
template <typename Step>
void run_rows(const Step& step, int64_t b0, int64_t b1) {
  using Fn = void (*)(const Step&, int64_t, int64_t);
  static const Fn fn = [] {
    const std::string isa = gemm_kernel_isa();
#if defined(__x86_64__) || defined(__i386__)
    if (isa == "avx512") return &run_avx512<Step>;
    if (isa == "avx2") return &run_avx2<Step>;
#endif
    return &run_generic<Step>;
  }();
  fn(step, b0, b1);
}

// C = A W^T for the M rows of a step, W packed once per call: A is packed into `a_packed`
// (packed_rows_size(M, K)); with `share`, threads take whole column panels.
template <typename T>
void step_gemm(int64_t M, const T* A, const PackedOperand<T>& W, T* a_packed, T* C, int64_t ldc,
               const T* bias, bool share) {
  pack_rows<T>(M, W.K, {A, W.K, 1}, a_packed);
  if (!share) {
    gemm_packed_columns<T>(M, a_packed, W, 0, W.N, C, ldc, {bias});
    return;
  }
  const int64_t panel = gemm_panel_width<T>(), panels = (W.N + panel - 1) / panel;
#pragma omp parallel for schedule(static) if (double(M) * W.N * W.K >= kParallelStepWork)
  for (int64_t p = 0; p < panels; ++p)
    gemm_packed_columns<T>(M, a_packed, W, p * panel, std::min(W.N, (p + 1) * panel), C, ldc,
                           {bias});
}

// How the sequences are shared: `size` threads, thread i taking [first(i), first(i + 1)).
struct SequenceTeam {
  int size = 1;
  int64_t B = 0;
  int64_t first(int i) const { return B * i / size; }
  // The largest packed_rows_size over the threads' blocks.
  template <typename T>
  int64_t packed_size(int64_t K) const {
    int64_t most = 0;
    for (int i = 0; i < size; ++i)
      most = std::max(most, packed_rows_size<T>(first(i + 1) - first(i), K));
    return most;
  }
};

SequenceTeam sequence_team(int64_t B, double step_work) {
  SequenceTeam team{1, B};
#ifdef _OPENMP
  if (step_work >= kParallelStepWork)
    team.size = int(std::clamp<int64_t>(B / kMinSequencesPerThread, 1, omp_get_max_threads()));
#else
  (void)step_work;
#endif
  return team;
}

// Runs body(thread, b0, b1) on every thread of the team; a team of one runs it here.
template <typename Body>
void for_each_thread(const SequenceTeam& team, const Body& body) {
  if (team.size == 1) {
    body(0, int64_t(0), team.B);
    return;
  }
#pragma omp parallel num_threads(team.size)
  {
#ifdef _OPENMP
    const int i = omp_get_thread_num();
#else
    const int i = 0;
#endif
    body(i, team.first(i), team.first(i + 1));
  }
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
  rnn_input_projection(a, L.ln ? nullptr : a.b_ih, L.gates);
  std::vector<T> storage;
  const RowConstants<T> k(L, a, e, storage);
  const PackedOperand<T> w_hh = pack_operand<T>(GH, H, {a.w_hh, H, 1});
  const SequenceTeam team = sequence_team(B, double(B) * GH * H);
  const int64_t a_size = team.packed_size<T>(H);
  AlignedArray<T> hg = aligned_array<T>(B * GH), a_packs = aligned_array<T>(team.size * a_size);
  const T* b_hh = L.ln ? nullptr : a.b_hh;
  for_each_thread(team, [&](int i, int64_t b0, int64_t b1) {
    T* a_packed = a_packs.get() + i * a_size;
    for (int64_t s = 0; s < L.steps; ++s) {
      step_gemm<T>(b1 - b0, a.h_n + b0 * H, w_hh, a_packed, hg.get() + b0 * GH, GH, b_hh,
                   team.size == 1);
      run_rows(ForwardStep<T>{L, a, k, hg.get(), s}, b0, b1);
    }
  });
}

template <typename T>
void rnn_ln_backward(const RnnBackwardArgs<T>& a, const RnnLnArgs<T>& e, const RnnLnGrads<T>& gr) {
  const RnnForwardArgs<T>& f = a.fwd;
  const Layer<T> L(f, e);
  const int64_t B = L.B, H = L.H, GH = L.GH, TB = L.TB, I = L.I;
  std::vector<T> dh(B * H), dc(L.lstm ? B * H : 0), rec(B * H);
  if (a.grad_h_n) std::copy(a.grad_h_n, a.grad_h_n + B * H, dh.begin());
  if (L.lstm && a.grad_c_n) std::copy(a.grad_c_n, a.grad_c_n + B * H, dc.begin());
  // Every sequence at one time in each step: forward, or all lengths == T.
  const bool aligned = !L.reverse || !L.lengths ||
                       std::all_of(L.lengths, L.lengths + B, [&](int64_t n) { return n == L.steps; });
  const SequenceTeam team = sequence_team(B, double(B) * GH * H);
  // rows: a row buffer per thread (dpre, dl_c).
  std::vector<T> dA_step(aligned ? 0 : B * GH), sums(L.ln ? B * sums_width(GH, H) : 0),
      rows(L.ln ? team.size * (GH + H) : 0);
  Grads<T> d{a.scratch, a.scratch, dh.data(), dc.data(), aligned ? nullptr : dA_step.data(),
             sums.data()};
  if (L.ln || !L.lstm) d.dA_hh = d.dA_ih + TB * GH;  // GRU: the hidden side differs in n
  std::vector<T> storage;
  const RowConstants<T> k(L, f, e, storage);

  if (TB > 0) {
    const PackedOperand<T> w_hh = pack_operand<T>(H, GH, {f.w_hh, 1, H});
    const int64_t a_size = team.packed_size<T>(GH);
    AlignedArray<T> a_packs = aligned_array<T>(team.size * a_size);
    for_each_thread(team, [&](int i, int64_t b0, int64_t b1) {
      T* a_packed = a_packs.get() + i * a_size;
      T* buf = L.ln ? rows.data() + i * (GH + H) : nullptr;
      for (int64_t s = L.steps - 1; s >= 0; --s) {
        run_rows(BackwardStep<T>{L, a, k, d, buf, s}, b0, b1);
        if (s == 0 && !a.grad_h0) break;
        // dh_prev += dA_hh W_hh; padded rows add zeros, so their carried gradient stays.
        const T* dA = aligned ? d.dA_hh + L.row(s, b0) * GH : d.dA_step + b0 * GH;
        step_gemm<T>(b1 - b0, dA, w_hh, a_packed, rec.data() + b0 * H, H, nullptr,
                     team.size == 1);
        for (int64_t q = b0 * H; q < b1 * H; ++q) dh[q] += rec[q];
      }
    });
  }
  if (a.grad_h0) std::copy(dh.begin(), dh.end(), a.grad_h0);
  if (a.grad_c0) std::copy(dc.begin(), dc.end(), a.grad_c0);

  if (a.grad_x) gemm<T>(TB, I, GH, {d.dA_ih, GH, 1}, {f.w_ih, 1, I}, a.grad_x, I);
  if (a.grad_w_ih) gemm<T>(GH, I, TB, {d.dA_ih, 1, GH}, {f.x, 1, I}, a.grad_w_ih, I);
  if (a.grad_w_hh) gemm<T>(GH, H, TB, {d.dA_hh, 1, GH}, {L.hprev, 1, H}, a.grad_w_hh, H);
  if (!L.lstm) {
    if (a.grad_b_ih) column_sums(TB, GH, d.dA_ih, a.grad_b_ih);
    if (a.grad_b_hh) column_sums(TB, GH, d.dA_hh, a.grad_b_hh);
    return;
  }
  // LSTM: pre = ... + b_ih + b_hh (+ β_ih + β_hh): all four get the column sums of dpre,
  // summed once (with layer norm: over the sequences' sums, in order).
  std::vector<T> total;
  if (L.ln) {
    const int64_t width = sums_width(GH, H);
    total.assign(width, T(0));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < width; ++j) total[j] += sums[b * width + j];
  }
  T* first = nullptr;
  for (T* out : {a.grad_b_ih, a.grad_b_hh, gr.ln_ih_bias, gr.ln_hh_bias}) {
    if (!out) continue;
    if (first)
      std::copy(first, first + GH, out);
    else if (L.ln)
      std::copy(total.begin(), total.begin() + GH, first = out);
    else
      column_sums(TB, GH, d.dA_ih, first = out);
  }
  if (!L.ln) return;
  const T* sum = total.data();
  if (gr.ln_ih_weight) std::copy(sum + GH, sum + 2 * GH, gr.ln_ih_weight);
  if (gr.ln_hh_weight) std::copy(sum + 2 * GH, sum + 3 * GH, gr.ln_hh_weight);
  if (gr.ln_c_weight) std::copy(sum + 3 * GH, sum + 3 * GH + H, gr.ln_c_weight);
  if (gr.ln_c_bias) std::copy(sum + 3 * GH + H, sum + 3 * GH + 2 * H, gr.ln_c_bias);
}

template void rnn_ln_forward<float>(const RnnForwardArgs<float>&, const RnnLnArgs<float>&);
template void rnn_ln_forward<double>(const RnnForwardArgs<double>&, const RnnLnArgs<double>&);
template void rnn_ln_backward<float>(const RnnBackwardArgs<float>&, const RnnLnArgs<float>&,
                                     const RnnLnGrads<float>&);
template void rnn_ln_backward<double>(const RnnBackwardArgs<double>&, const RnnLnArgs<double>&,
                                      const RnnLnGrads<double>&);

}  // namespace unet::cpu
