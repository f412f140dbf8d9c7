// CPU CTC loss and gradient (math in unet/ctc.h): one sequence per OpenMP thread, log-space
// alpha over the whole input, then beta backwards two rows at a time, each step's gradient
// row formed as soon as its beta row is known. The per-class sums run over s in ascending
// order within one thread, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "unet/ctc.h"

namespace unet::cpu {
namespace {

template <typename T>
constexpr T kNegInf = -std::numeric_limits<T>::infinity();

template <typename T>
inline T log_add(T a, T b) {
  const T m = std::max(a, b);
  if (m == kNegInf<T>) return m;
  return m + std::log1p(std::exp(std::min(a, b) - m));
}

template <typename T>
inline T log_add3(T a, T b, T c) {
  const T m = std::max(a, std::max(b, c));
  if (m == kNegInf<T>) return m;
  return m + std::log(std::exp(a - m) + std::exp(b - m) + std::exp(c - m));
}

// One sequence's view of the arguments.
template <typename T>
struct Sequence {
  const CtcArgs<T>& a;
  int64_t n, steps, length;  // length: L = 2S + 1 extended labels
  const int64_t* target;

  int64_t label(int64_t s) const { return s % 2 == 0 ? a.blank : target[s / 2]; }
  T lp(int64_t t, int64_t c) const { return a.log_probs[(t * a.batch + n) * a.classes + c]; }
  T* grad_row(int64_t t) const { return a.grad + (t * a.batch + n) * a.classes; }
  // The skip from s - 2 (or to s + 2, backwards) over a blank, allowed between two labels
  // that differ.
  bool can_skip(int64_t s) const { return s % 2 == 1 && s >= 2 && target[s / 2] != target[s / 2 - 1]; }
};

template <typename T>
T forward_alpha(const Sequence<T>& q, T* alpha, int64_t ld) {
  const int64_t L = q.length;
  std::fill(alpha, alpha + L, kNegInf<T>);
  alpha[0] = q.lp(0, q.a.blank);
  if (L > 1) alpha[1] = q.lp(0, q.label(1));
  for (int64_t t = 1; t < q.steps; ++t) {
    const T* prev = alpha + (t - 1) * ld;
    T* cur = alpha + t * ld;
    cur[0] = prev[0] + q.lp(t, q.a.blank);
    for (int64_t s = 1; s < L; ++s) {
      const T skip = q.can_skip(s) ? prev[s - 2] : kNegInf<T>;
      cur[s] = log_add3(prev[s], prev[s - 1], skip) + q.lp(t, q.label(s));
    }
  }
  const T* last = alpha + (q.steps - 1) * ld;
  return -(L > 1 ? log_add(last[L - 1], last[L - 2]) : last[0]);
}

// Beta from the last step back to the first; at each step the gradient row from alpha + beta.
template <typename T>
void backward_beta(const Sequence<T>& q, const T* alpha, int64_t ld, T* next, T* cur, T nll,
                   std::vector<T>& occupancy) {
  const int64_t L = q.length, C = q.a.classes;
  for (int64_t t = q.steps - 1; t >= 0; --t) {
    if (t == q.steps - 1) {
      std::fill(cur, cur + L, kNegInf<T>);
      cur[L - 1] = q.lp(t, q.a.blank);
      if (L > 1) cur[L - 2] = q.lp(t, q.label(L - 2));
    } else {
      for (int64_t s = 0; s < L; ++s) {
        const T step = s + 1 < L ? next[s + 1] : kNegInf<T>;
        const T skip = s + 2 < L && q.can_skip(s + 2) ? next[s + 2] : kNegInf<T>;
        cur[s] = log_add3(next[s], step, skip) + q.lp(t, q.label(s));
      }
    }
    std::fill(occupancy.begin(), occupancy.end(), kNegInf<T>);
    const T* at = alpha + t * ld;
    for (int64_t s = 0; s < L; ++s) {
      T& o = occupancy[q.label(s)];
      o = log_add(o, at[s] + cur[s]);
    }
    T* g = q.grad_row(t);
    for (int64_t c = 0; c < C; ++c)
      g[c] = occupancy[c] == kNegInf<T> ? T(0) : -std::exp(occupancy[c] + nll - q.lp(t, c));
    std::swap(next, cur);
  }
}

template <typename T>
void one_sequence(const CtcArgs<T>& a, int64_t n, int64_t offset, std::vector<T>& occupancy) {
  const int64_t steps = a.input_lengths[n], S = a.target_lengths[n];
  const int64_t ld = 2 * a.max_target_length + 1;
  const Sequence<T> q{a, n, steps, 2 * S + 1, a.targets + offset};
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
  backward_beta(q, alpha, ld, beta, beta + ld, nll, occupancy);
}

}  // namespace

template <typename T>
void ctc_loss(const CtcArgs<T>& a) {
  std::vector<int64_t> offsets(a.batch);
  for (int64_t n = 0, sum = 0; n < a.batch; ++n) {
    offsets[n] = a.target_stride >= 0 ? n * a.target_stride : sum;
    sum += a.target_lengths[n];
  }
#pragma omp parallel
  {
    std::vector<T> occupancy(a.grad ? a.classes : 0);  // per-class lse of alpha + beta
#pragma omp for schedule(dynamic, 1)
    for (int64_t n = 0; n < a.batch; ++n) one_sequence(a, n, offsets[n], occupancy);
  }
}

template void ctc_loss<float>(const CtcArgs<float>&);
template void ctc_loss<double>(const CtcArgs<double>&);

}  // namespace unet::cpu
