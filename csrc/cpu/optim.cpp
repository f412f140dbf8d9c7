// CPU fused optimizer steps (contract and math in unet/optim.h). All tensors' elements form
// one index range that is cut into equal contiguous pieces, one per thread of a single
// parallel region, so one large tensor is shared by all threads and many small ones cost
// no more than their elements. The inf/NaN check runs over the same pieces, then a barrier,
// then the update. Each element's result depends on that element alone: any thread count
// gives the same bits. Built with -ffp-contract=off (CMakeLists.txt), so every operation is
// rounded on its own, as numpy rounds it.
#include "unet/optim.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
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

// ---- the loops over one tensor's piece, with every option a compile-time constant ----

#define UNET_ALWAYS_INLINE inline __attribute__((always_inline))

// The "found a non-finite value" flags are ORed in an integer as wide as T: a bool
// accumulator keeps GCC from vectorizing these loops.
template <typename T>
using FlagInt = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

template <typename T>
UNET_ALWAYS_INLINE bool check_loop(const T* __restrict g, int64_t n, T scale) {
  FlagInt<T> bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= FlagInt<T>(!is_finite_(optim::mul_(g[i], scale)));
  return bad != 0;
}

template <typename T>
UNET_ALWAYS_INLINE bool unscale_loop(T* __restrict g, int64_t n, T scale) {
  FlagInt<T> bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    g[i] = optim::mul_(g[i], scale);
    bad |= FlagInt<T>(!is_finite_(g[i]));
  }
  return bad != 0;
}

template <typename T, bool L2, bool MomentumOn, bool First, bool Nesterov>
UNET_ALWAYS_INLINE void sgd_loop(const optim::SgdCoefficients<T>& c, T* __restrict p,
                                 const T* __restrict g, T* __restrict buf, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T unused = T(0);
    optim::sgd_element(c, L2, MomentumOn, First, Nesterov, p[i], g[i], MomentumOn ? buf[i] : unused);
  }
}

template <typename T, bool L2, bool Amsgrad>
UNET_ALWAYS_INLINE void adam_loop(const optim::AdamCoefficients<T>& c, T* __restrict p,
                                  const T* __restrict g, T* __restrict m, T* __restrict v,
                                  T* __restrict v_max, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T unused = T(0);
    optim::adam_element(c, L2, Amsgrad, p[i], g[i], m[i], v[i], Amsgrad ? v_max[i] : unused);
  }
}

// The loops compiled once per instruction set: the build targets plain x86-64 (SSE2), and
// Adam's divisions and square root keep SSE2 vectors busy. Every instruction set rounds
// each operation the same (IEEE), so all give the same bits.
#define UNET_OPTIM_LOOPS(Name, target)                                                        \
  struct Name {                                                                               \
    template <typename T>                                                                     \
    target static bool check(const T* g, int64_t n, T scale) { return check_loop(g, n, scale); } \
    template <typename T>                                                                     \
    target static bool unscale(T* g, int64_t n, T scale) { return unscale_loop(g, n, scale); } \
    template <typename T, bool L2, bool MomentumOn, bool First, bool Nesterov>                \
    target static void sgd(const optim::SgdCoefficients<T>& c, T* p, const T* g, T* buf,      \
                           int64_t n) {                                                       \
      sgd_loop<T, L2, MomentumOn, First, Nesterov>(c, p, g, buf, n);                          \
    }                                                                                         \
    template <typename T, bool L2, bool Amsgrad>                                              \
    target static void adam(const optim::AdamCoefficients<T>& c, T* p, const T* g, T* m, T* v, \
                            T* v_max, int64_t n) {                                            \
      adam_loop<T, L2, Amsgrad>(c, p, g, m, v, v_max, n);                                     \
    }                                                                                         \
  };
UNET_OPTIM_LOOPS(Generic, )
#if defined(__x86_64__) || defined(__i386__)
UNET_OPTIM_LOOPS(Avx2, __attribute__((target("avx2"))))
UNET_OPTIM_LOOPS(Avx512, __attribute__((target("avx512f"))))
#endif
#undef UNET_OPTIM_LOOPS

enum class Isa { Generic, Avx2, Avx512 };

// The widest this CPU runs; UNET_CPU_ISA=avx2 or =generic (as for the GEMM) picks a
// narrower one, so that tests can compare them on one machine.
Isa isa_for_this_cpu() {
  static const Isa isa = [] {
    const char* env = std::getenv("UNET_CPU_ISA");
    const std::string want = env ? env : "";
#if defined(__x86_64__) || defined(__i386__)
    if (want != "avx2" && want != "generic" && __builtin_cpu_supports("avx512f")) return Isa::Avx512;
    if (want != "generic" && __builtin_cpu_supports("avx2")) return Isa::Avx2;
#endif
    return Isa::Generic;
  }();
  return isa;
}

// Calls f(Loops{}) with the loops of this CPU's instruction set.
template <typename F>
void with_loops(F&& f) {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa_for_this_cpu()) {
    case Isa::Avx512: return f(Avx512{});
    case Isa::Avx2: return f(Avx2{});
    default: break;
  }
#endif
  f(Generic{});
}

// Calls f(std::integral_constant<bool, b>) so that a run-time flag becomes a constant.
template <typename F>
void with_flag(bool b, F&& f) {
  if (b)
    f(std::true_type{});
  else
    f(std::false_type{});
}

template <typename Loops, typename T>
void sgd_step_typed(const FusedStepArgs<SgdTensor>& a) {
  const size_t n = a.tensors.size();
  std::vector<optim::SgdCoefficients<T>> coef(n);
  std::vector<int64_t> numel(n);
  for (size_t k = 0; k < n; ++k) {
    coef[k] = optim::sgd_coefficients<T>(a.tensors[k], a.inv_scale);
    numel[k] = a.tensors[k].numel;
  }
  auto check = [&](size_t k, int64_t lo, int64_t hi) {
    return Loops::check(static_cast<const T*>(a.tensors[k].grad) + lo, hi - lo, coef[k].grad_scale);
  };
  auto update = [&](size_t k, int64_t lo, int64_t hi) {
    const auto& c = coef[k];
    T* p = static_cast<T*>(a.tensors[k].param) + lo;
    const T* g = static_cast<const T*>(a.tensors[k].grad) + lo;
    T* buf = static_cast<T*>(a.tensors[k].momentum_buffer);
    if (buf) buf += lo;
    with_flag(c.l2, [&](auto l2) {
      with_flag(c.momentum_on, [&](auto momentum_on) {
        with_flag(c.first, [&](auto first) {
          with_flag(c.nesterov, [&](auto nesterov) {
            Loops::template sgd<T, l2(), momentum_on(), first(), nesterov()>(c, p, g, buf, hi - lo);
          });
        });
      });
    });
  };
  if (a.found_inf && *a.found_inf != 0) return;
  if (multi_tensor_apply(numel, a.found_inf != nullptr, check, update)) *a.found_inf = 1.0f;
}

template <typename Loops, typename T>
void adam_step_typed(const FusedStepArgs<AdamTensor>& a) {
  const size_t n = a.tensors.size();
  std::vector<optim::AdamCoefficients<T>> coef(n);
  std::vector<int64_t> numel(n);
  for (size_t k = 0; k < n; ++k) {
    coef[k] = optim::adam_coefficients<T>(a.tensors[k], a.inv_scale);
    numel[k] = a.tensors[k].numel;
  }
  auto check = [&](size_t k, int64_t lo, int64_t hi) {
    return Loops::check(static_cast<const T*>(a.tensors[k].grad) + lo, hi - lo, coef[k].grad_scale);
  };
  auto update = [&](size_t k, int64_t lo, int64_t hi) {
    const AdamTensor& t = a.tensors[k];
    const auto& c = coef[k];
    T* v_max = static_cast<T*>(t.max_exp_avg_sq);
    if (v_max) v_max += lo;
    with_flag(c.l2, [&](auto l2) {
      with_flag(c.amsgrad, [&](auto amsgrad) {
        Loops::template adam<T, l2(), amsgrad()>(
            c, static_cast<T*>(t.param) + lo, static_cast<const T*>(t.grad) + lo,
            static_cast<T*>(t.exp_avg) + lo, static_cast<T*>(t.exp_avg_sq) + lo, v_max, hi - lo);
      });
    });
  };
  if (a.found_inf && *a.found_inf != 0) return;
  if (multi_tensor_apply(numel, a.found_inf != nullptr, check, update)) *a.found_inf = 1.0f;
}

template <typename Loops, typename T>
bool unscale_segment(void* data, int64_t lo, int64_t hi, double inv_scale, bool in_place) {
  T* g = static_cast<T*>(data) + lo;
  const T scale = T(inv_scale);
  if (!in_place || inv_scale == 1.0) return Loops::check(static_cast<const T*>(g), hi - lo, scale);
  return Loops::unscale(g, hi - lo, scale);
}

}  // namespace

void sgd_step(const FusedStepArgs<SgdTensor>& args) {
  with_loops([&](auto loops) {
    using Loops = decltype(loops);
    if (args.dtype == DType::Float64)
      sgd_step_typed<Loops, double>(args);
    else
      sgd_step_typed<Loops, float>(args);
  });
}

void adam_step(const FusedStepArgs<AdamTensor>& args) {
  with_loops([&](auto loops) {
    using Loops = decltype(loops);
    if (args.dtype == DType::Float64)
      adam_step_typed<Loops, double>(args);
    else
      adam_step_typed<Loops, float>(args);
  });
}

// One pass: each piece is multiplied and checked together (nothing is skipped here).
bool unscale_and_check(const UnscaleArgs& args) {
  std::vector<int64_t> numel;
  for (const UnscaleTensor& t : args.tensors) numel.push_back(t.numel);
  int found = 0;
  auto no_check = [](size_t, int64_t, int64_t) { return false; };
  with_loops([&](auto loops) {
    using Loops = decltype(loops);
    multi_tensor_apply(numel, false, no_check, [&](size_t k, int64_t lo, int64_t hi) {
      const UnscaleTensor& t = args.tensors[k];
      const bool bad =
          t.dtype == DType::Float64
              ? unscale_segment<Loops, double>(t.grad, lo, hi, args.inv_scale, args.in_place)
              : unscale_segment<Loops, float>(t.grad, lo, hi, args.inv_scale, args.in_place);
      if (bad) {
#pragma omp atomic write
        found = 1;
      }
    });
  });
  return found != 0;
}

}  // namespace unet::cpu
