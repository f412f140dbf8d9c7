// CPU CTC loss and gradient (math in unet/ctc.h): one sequence per OpenMP thread, log-space
// alpha over the whole input, then beta backwards two rows at a time, each step's gradient
// row formed as soon as its beta row is known. The recursions are branch-free over s, with
// exp and ln written out in arithmetic, so that they vectorize. The per-class sums run over
// s in ascending order within one thread, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gemm.h"
#include "unet/activations.h"
#include "unet/ctc.h"

namespace unet::cpu {
namespace {

using detail::bit_cast_;
using detail::exp_;

// Inlined into each instruction set's entry point below, so that each compiles for its own.
#define UNET_CTC_INLINE __attribute__((always_inline)) inline

template <typename T>
constexpr T kNegInf = -std::numeric_limits<T>::infinity();

// ln x for a positive normal x, in arithmetic so that the loops calling it vectorize:
// x = 2^e f with f in [sqrt(1/2), sqrt(2)), ln f = 2 atanh(z) = 2 (z + z^3/3 + ...) with
// z = (f - 1) / (f + 1), |z| < 0.172 (series to z^13 for float, z^25 for double). Here x
// is a sum of exps in [1, 3]: within 3 ulp of ln x, far below an ulp of the log-probabilities
// it is added to.
UNET_CTC_INLINE float log_(float x) {
  const uint32_t bits = bit_cast_<uint32_t>(x), mantissa = bits & 0x007fffffu;
  const bool big = mantissa > 0x003504f3u;  // f above sqrt(2): halve it
  const float f = bit_cast_<float>(mantissa | (big ? 0x3f000000u : 0x3f800000u));
  const float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 127 + big);
  const float z = (f - 1.0f) / (f + 1.0f), z2 = z * z;
  float p = 2.0f / 13;
  for (int k = 11; k >= 1; k -= 2) p = p * z2 + 2.0f / static_cast<float>(k);
  return p * z + e * 0.693147182f;
}
UNET_CTC_INLINE double log_(double x) {
  const uint64_t bits = bit_cast_<uint64_t>(x), mantissa = bits & 0x000fffffffffffffull;
  const bool big = mantissa > 0x0006a09e667f3bcdull;
  const double f = bit_cast_<double>(mantissa | (big ? 0x3fe0000000000000ull : 0x3ff0000000000000ull));
  const double e = static_cast<double>(static_cast<int64_t>(bits >> 52) - 1023 + big);
  const double z = (f - 1.0) / (f + 1.0), z2 = z * z;
  double p = 2.0 / 25;
  for (int k = 23; k >= 1; k -= 2) p = p * z2 + 2.0 / k;
  return p * z + e * 0.6931471805599453094;
}

// ln(e^a + e^b + e^c) without branches (-inf when all three are).
template <typename T>
UNET_CTC_INLINE T log_add3(T a, T b, T c) {
  const T m = std::max(a, std::max(b, c));
  const T sum = exp_(a - m) + exp_(b - m) + exp_(c - m);  // in [1, 3]; NaN when m = -inf
  return m == kNegInf<T> ? m : m + log_(sum);
}
template <typename T>
UNET_CTC_INLINE T log_add(T a, T b) {
  return log_add3(a, b, kNegInf<T>);
}

// The loops over s of one step, for every s the same arithmetic (so they vectorize):
//   Alpha      out = cur alpha row from x = the previous one, s >= 2
//   Beta       out = cur beta row from x = the next one, s < L - 2
//   Occupancy  out[s] = exp(x[s] + y[s] + nll - lp[s]) from x = alpha, y = beta (0 where
//              x + y = -inf: no path passes there, and lp may be -inf)
enum class Row { Alpha, Beta, Occupancy };

template <typename T>
UNET_CTC_INLINE void run_row(Row kind, const T* x, const T* y, const T* lp, const T* skip, T nll,
                             T* out, int64_t L) {
  switch (kind) {
    case Row::Alpha:
      for (int64_t s = 2; s < L; ++s) out[s] = log_add3(x[s], x[s - 1], x[s - 2] + skip[s]) + lp[s];
      break;
    case Row::Beta:
      for (int64_t s = 0; s + 2 < L; ++s)
        out[s] = log_add3(x[s], x[s + 1], x[s + 2] + skip[s + 2]) + lp[s];
      break;
    case Row::Occupancy:
      for (int64_t s = 0; s < L; ++s) {
        const T both = x[s] + y[s];
        const T e = exp_(both + nll - lp[s]);
        out[s] = both == kNegInf<T> ? T(0) : e;
      }
      break;
  }
}

// One entry point per instruction set; row_kernel<T>() the one the GEMM chose for this CPU.
#if defined(__x86_64__) || defined(__i386__)
template <typename T>
__attribute__((target("avx512f,fma"))) void run_row_avx512(Row kind, const T* x, const T* y,
                                                            const T* lp, const T* skip, T nll,
                                                            T* out, int64_t L) {
  run_row(kind, x, y, lp, skip, nll, out, L);
}
template <typename T>
__attribute__((target("avx2,fma"))) void run_row_avx2(Row kind, const T* x, const T* y,
                                                      const T* lp, const T* skip, T nll, T* out,
                                                      int64_t L) {
  run_row(kind, x, y, lp, skip, nll, out, L);
}
#endif
template <typename T>
void run_row_generic(Row kind, const T* x, const T* y, const T* lp, const T* skip, T nll, T* out,
                     int64_t L) {
  run_row(kind, x, y, lp, skip, nll, out, L);
}

template <typename T>
using RowFn = void (*)(Row, const T*, const T*, const T*, const T*, T, T*, int64_t);

template <typename T>
RowFn<T> row_kernel() {
  static const RowFn<T> fn = [] {
    const std::string isa = gemm_kernel_isa();
#if defined(__x86_64__) || defined(__i386__)
    if (isa == "avx512") return &run_row_avx512<T>;
    if (isa == "avx2") return &run_row_avx2<T>;
#endif
    return &run_row_generic<T>;
  }();
  return fn;
}

// One sequence: its extended labels, and per step the log-probabilities gathered along them.
template <typename T>
struct Sequence {
  const CtcArgs<T>& a;
  int64_t n, steps, length;  // length: L = 2S + 1 extended labels
  std::vector<int64_t> label;
  std::vector<T> skip;  // 0 where the step from s - 2 over a blank is allowed (two labels that
                        // differ), -inf elsewhere: added, it masks without a branch
  std::vector<T> lp;    // lp(t, label[s]) of the step being computed

  Sequence(const CtcArgs<T>& args, int64_t n_, const int64_t* target)
      : a(args), n(n_), steps(args.input_lengths[n_]), length(2 * args.target_lengths[n_] + 1),
        label(length, args.blank), skip(length, kNegInf<T>), lp(length) {
    for (int64_t s = 1; s < length; s += 2) {
      label[s] = target[s / 2];
      if (s >= 3 && label[s] != label[s - 2]) skip[s] = T(0);
    }
  }
  const T* row(int64_t t) const { return a.log_probs + (t * a.batch + n) * a.classes; }
  T* grad_row(int64_t t) const { return a.grad + (t * a.batch + n) * a.classes; }
  void gather(int64_t t) {
    const T* r = row(t);
    for (int64_t s = 0; s < length; ++s) lp[s] = r[label[s]];
  }
};

template <typename T>
T forward_alpha(Sequence<T>& q, T* alpha, int64_t ld) {
  const RowFn<T> row = row_kernel<T>();
  const int64_t L = q.length;
  q.gather(0);
  std::fill(alpha, alpha + L, kNegInf<T>);
  alpha[0] = q.lp[0];
  if (L > 1) alpha[1] = q.lp[1];
  for (int64_t t = 1; t < q.steps; ++t) {
    q.gather(t);
    const T* prev = alpha + (t - 1) * ld;
    T* cur = alpha + t * ld;
    const T* lp = q.lp.data();
    cur[0] = prev[0] + lp[0];
    if (L > 1) cur[1] = log_add(prev[1], prev[0]) + lp[1];
    row(Row::Alpha, prev, nullptr, lp, q.skip.data(), T(0), cur, L);
  }
  const T* last = alpha + (q.steps - 1) * ld;
  return -(L > 1 ? log_add(last[L - 1], last[L - 2]) : last[0]);
}

// Beta from the last step back to the first; at each step the gradient row: minus the sum,
// over the positions s of each class, of the occupancy exp(alpha + beta - lp + nll).
template <typename T>
void backward_beta(Sequence<T>& q, const T* alpha, int64_t ld, T* next, T* cur, T nll) {
  const RowFn<T> row = row_kernel<T>();
  const int64_t L = q.length;
  std::vector<T> occupancy(L);
  for (int64_t t = q.steps - 1; t >= 0; --t) {
    q.gather(t);
    const T* lp = q.lp.data();
    if (t == q.steps - 1) {
      std::fill(cur, cur + L, kNegInf<T>);
      cur[L - 1] = lp[L - 1];
      if (L > 1) cur[L - 2] = lp[L - 2];
    } else {
      row(Row::Beta, next, nullptr, lp, q.skip.data(), T(0), cur, L);
      if (L > 1) cur[L - 2] = log_add(next[L - 2], next[L - 1]) + lp[L - 2];
      cur[L - 1] = next[L - 1] + lp[L - 1];
    }
    row(Row::Occupancy, alpha + t * ld, cur, lp, nullptr, nll, occupancy.data(), L);
    T* g = q.grad_row(t);
    std::fill_n(g, q.a.classes, T(0));
    for (int64_t s = 0; s < L; ++s) g[q.label[s]] -= occupancy[s];
    std::swap(next, cur);
  }
}

template <typename T>
void one_sequence(const CtcArgs<T>& a, int64_t n, int64_t offset) {
  Sequence<T> q(a, n, a.targets + offset);
  const int64_t steps = q.steps, S = a.target_lengths[n];
  const int64_t ld = 2 * a.max_target_length + 1;
  T* alpha = a.workspace + n * (a.steps + 2) * ld;
  const T inf = std::numeric_limits<T>::infinity();
  const T nll = steps == 0 ? (S == 0 ? T(0) : inf) : forward_alpha(q, alpha, ld);
  const bool impossible = nll == inf;
  a.loss[n] = impossible && a.zero_infinity ? T(0) : nll;
  if (!a.grad) return;
  for (int64_t t = steps; t < a.steps; ++t) std::fill_n(q.grad_row(t), a.classes, T(0));
  if (steps == 0) return;
  if (impossible) {
    const T fill = a.zero_infinity ? T(0) : std::numeric_limits<T>::quiet_NaN();
    for (int64_t t = 0; t < steps; ++t) std::fill_n(q.grad_row(t), a.classes, fill);
    return;
  }
  T* beta = alpha + a.steps * ld;
  backward_beta(q, alpha, ld, beta, beta + ld, nll);
}

}  // namespace

template <typename T>
void ctc_loss(const CtcArgs<T>& a) {
  std::vector<int64_t> offsets(a.batch);
  for (int64_t n = 0, sum = 0; n < a.batch; ++n) {
    offsets[n] = a.target_stride >= 0 ? n * a.target_stride : sum;
    sum += a.target_lengths[n];
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t n = 0; n < a.batch; ++n) one_sequence(a, n, offsets[n]);
}

template void ctc_loss<float>(const CtcArgs<float>&);
template void ctc_loss<double>(const CtcArgs<double>&);

}  // namespace unet::cpu
