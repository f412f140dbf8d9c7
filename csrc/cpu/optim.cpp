// CPU fused optimizer steps (contract and math in unet/optim.h). All tensors' elements form
// one index range that is cut into equal contiguous pieces, one per thread of a single
// parallel region, so one large tensor is shared by all threads and many small ones cost
// no more than their elements. The inf/NaN check runs over the same pieces, then a barrier,
// then the update. Each element's result depends on that element alone: any thread count
// gives the same bits. Built with -ffp-contract=off (CMakeLists.txt), so every operation is
// rounded on its own, as numpy rounds it.
#include "unet/optim.h"

#include <algorithm>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace unet::cpu {
namespace {

using optim::is_finite_;

// Below this many elements in all, one thread does everything (a parallel region costs
// microseconds).
constexpr int64_t kParallelMin = int64_t(1) << 15;
// Piece boundaries fall on multiples of this many elements (a 64-byte line of doubles
// or better), so two threads rarely write the same cache line.
constexpr int64_t kAlign = 16;

// Calls segment(k, lo, hi) for the part [lo, hi) of tensor k that lies in the global
// element range [begin, end); offsets[k] is the global index of tensor k's first element.
template <typename Segment>
void for_each_segment(const std::vector<int64_t>& offsets, int64_t begin, int64_t end,
                      Segment&& segment) {
  size_t k = std::upper_bound(offsets.begin(), offsets.end(), begin) - offsets.begin() - 1;
  for (; k + 1 < offsets.size() && offsets[k] < end; ++k) {
    const int64_t lo = std::max(begin, offsets[k]), hi = std::min(end, offsets[k + 1]);
    if (lo < hi) segment(k, lo - offsets[k], hi - offsets[k]);
  }
}

// Runs check(k, lo, hi) -> bool ("found a non-finite value") over all elements when
// `checking`, then update(k, lo, hi) over all elements unless a check said true. Returns
// whether one did.
template <typename Check, typename Update>
bool multi_tensor_apply(const std::vector<int64_t>& numel, bool checking, Check&& check,
                        Update&& update) {
  std::vector<int64_t> offsets(numel.size() + 1, 0);
  for (size_t k = 0; k < numel.size(); ++k) offsets[k + 1] = offsets[k] + numel[k];
  const int64_t total = offsets.back();
  int found = 0;
#pragma omp parallel if (total >= kParallelMin)
  {
    int threads = 1, thread = 0;
#ifdef _OPENMP
    threads = omp_get_num_threads();
    thread = omp_get_thread_num();
#endif
    const int64_t piece = (total / threads + kAlign - 1) / kAlign * kAlign;
    const int64_t begin = std::min(total, thread * piece);
    const int64_t end = thread == threads - 1 ? total : std::min(total, begin + piece);
    if (checking) {
      bool bad = false;
      for_each_segment(offsets, begin, end, [&](size_t k, int64_t lo, int64_t hi) {
        bad = check(k, lo, hi) || bad;
      });
      if (bad) {
#pragma omp atomic write
        found = 1;
      }
#pragma omp barrier
    }
    int skip;
#pragma omp atomic read
    skip = found;
    if (!skip) for_each_segment(offsets, begin, end, update);
  }
  return found != 0;
}

template <typename T>
bool any_nonfinite(const T* __restrict g, int64_t n, T scale) {
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad |= !is_finite_(optim::mul_(g[i], scale));
  return bad;
}

// Calls f(std::integral_constant<bool, b>) so that a run-time flag becomes a constant in
// the loops below.
template <typename F>
void with_flag(bool b, F&& f) {
  if (b)
    f(std::true_type{});
  else
    f(std::false_type{});
}

template <typename T>
void sgd_step_typed(const FusedStepArgs<SgdTensor>& a) {
  const size_t n = a.tensors.size();
  std::vector<optim::SgdCoefficients<T>> coef(n);
  std::vector<int64_t> numel(n);
  for (size_t k = 0; k < n; ++k) {
    coef[k] = optim::sgd_coefficients<T>(a.tensors[k], a.inv_scale);
    numel[k] = a.tensors[k].numel;
  }
  auto check = [&](size_t k, int64_t lo, int64_t hi) {
    return any_nonfinite(static_cast<const T*>(a.tensors[k].grad) + lo, hi - lo, coef[k].grad_scale);
  };
  auto update = [&](size_t k, int64_t lo, int64_t hi) {
    const auto& c = coef[k];
    T* __restrict p = static_cast<T*>(a.tensors[k].param) + lo;
    const T* __restrict g = static_cast<const T*>(a.tensors[k].grad) + lo;
    T* __restrict buf = static_cast<T*>(a.tensors[k].momentum_buffer);
    if (buf) buf += lo;
    with_flag(c.l2, [&](auto l2) {
      with_flag(c.momentum_on, [&](auto momentum_on) {
        with_flag(c.first, [&](auto first) {
          with_flag(c.nesterov, [&](auto nesterov) {
            for (int64_t i = 0; i < hi - lo; ++i) {
              T unused = T(0);
              optim::sgd_element(c, l2(), momentum_on(), first(), nesterov(), p[i], g[i],
                                 momentum_on() ? buf[i] : unused);
            }
          });
        });
      });
    });
  };
  if (a.found_inf && *a.found_inf != 0) return;
  if (multi_tensor_apply(numel, a.found_inf != nullptr, check, update)) *a.found_inf = 1.0f;
}

template <typename T>
void adam_step_typed(const FusedStepArgs<AdamTensor>& a) {
  const size_t n = a.tensors.size();
  std::vector<optim::AdamCoefficients<T>> coef(n);
  std::vector<int64_t> numel(n);
  for (size_t k = 0; k < n; ++k) {
    coef[k] = optim::adam_coefficients<T>(a.tensors[k], a.inv_scale);
    numel[k] = a.tensors[k].numel;
  }
  auto check = [&](size_t k, int64_t lo, int64_t hi) {
    return any_nonfinite(static_cast<const T*>(a.tensors[k].grad) + lo, hi - lo, coef[k].grad_scale);
  };
  auto update = [&](size_t k, int64_t lo, int64_t hi) {
    const AdamTensor& t = a.tensors[k];
    const auto& c = coef[k];
    T* __restrict p = static_cast<T*>(t.param) + lo;
    const T* __restrict g = static_cast<const T*>(t.grad) + lo;
    T* __restrict m = static_cast<T*>(t.exp_avg) + lo;
    T* __restrict v = static_cast<T*>(t.exp_avg_sq) + lo;
    T* __restrict v_max = static_cast<T*>(t.max_exp_avg_sq);
    if (v_max) v_max += lo;
    with_flag(c.l2, [&](auto l2) {
      with_flag(c.amsgrad, [&](auto amsgrad) {
        for (int64_t i = 0; i < hi - lo; ++i) {
          T unused = T(0);
          optim::adam_element(c, l2(), amsgrad(), p[i], g[i], m[i], v[i],
                              amsgrad() ? v_max[i] : unused);
        }
      });
    });
  };
  if (a.found_inf && *a.found_inf != 0) return;
  if (multi_tensor_apply(numel, a.found_inf != nullptr, check, update)) *a.found_inf = 1.0f;
}

template <typename T>
bool unscale_segment(void* data, int64_t lo, int64_t hi, double inv_scale, bool in_place) {
  T* __restrict g = static_cast<T*>(data) + lo;
  const T scale = T(inv_scale);
  if (!in_place || inv_scale == 1.0) return any_nonfinite(g, hi - lo, scale);
  bool bad = false;
  for (int64_t i = 0; i < hi - lo; ++i) {
    g[i] = optim::mul_(g[i], scale);
    bad |= !is_finite_(g[i]);
  }
  return bad;
}

}  // namespace

void sgd_step(const FusedStepArgs<SgdTensor>& args) {
  if (args.dtype == DType::Float64)
    sgd_step_typed<double>(args);
  else
    sgd_step_typed<float>(args);
}

void adam_step(const FusedStepArgs<AdamTensor>& args) {
  if (args.dtype == DType::Float64)
    adam_step_typed<double>(args);
  else
    adam_step_typed<float>(args);
}

// One pass: each piece is multiplied and checked together (nothing is skipped here).
bool unscale_and_check(const UnscaleArgs& args) {
  std::vector<int64_t> numel;
  for (const UnscaleTensor& t : args.tensors) numel.push_back(t.numel);
  int found = 0;
  auto no_check = [](size_t, int64_t, int64_t) { return false; };
  multi_tensor_apply(numel, false, no_check, [&](size_t k, int64_t lo, int64_t hi) {
    const UnscaleTensor& t = args.tensors[k];
    const bool bad = t.dtype == DType::Float64
                         ? unscale_segment<double>(t.grad, lo, hi, args.inv_scale, args.in_place)
                         : unscale_segment<float>(t.grad, lo, hi, args.inv_scale, args.in_place);
    if (bad) {
#pragma omp atomic write
      found = 1;
    }
  });
  return found != 0;
}

}  // namespace unet::cpu
