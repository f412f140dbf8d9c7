// Fused optimizer steps: SGD and Adam(W) over every parameter of an optimizer in one pass
// (one OpenMP parallel region on the CPU, a check launch and an update launch on a GPU),
// with gradient unscaling and the inf/NaN check of mixed-precision training folded in.
//
// Each parameter is one entry (SgdTensor, AdamTensor) holding its arrays and its own
// hyper-parameters, so parameter groups with different settings share one pass. The
// per-element math is written once below for both devices, in the order of operations
// of the Python optimizers (python/unet/optim/sgd.py, adam.py) and with one rounding per
// operation (no fused multiply-add), so the fused and the per-parameter paths give
// bitwise the same results, and so do the CPU and the CUDA kernels:
//
//   g = grad * inv_scale, negated when maximize
//   SGD:  g += weight_decay * p
//         buf = g (first step) or buf * momentum + (1 - dampening) * g     (momentum > 0)
//         g = nesterov ? g + momentum * buf : buf
//         p -= lr * g
//   Adam: p *= 1 - lr * weight_decay (decoupled)  or  g += weight_decay * p
//         m += (1 - beta1) * (g - m);   v = v * beta2 + (1 - beta2) * g * g
//         amsgrad: v_max = max(v_max, v), used for v below
//         p -= lr / (1 - beta1^step) * (m / (sqrt(v) / sqrt(1 - beta2^step) + eps))
//
// Scalars are computed in double on the host and rounded once to the arrays' dtype, as
// numpy rounds a Python float combined with an array. Every array is contiguous, of one
// dtype (float32 or float64) and on one device; params and state arrays are updated in
// place and overlap nothing else (the bindings check all of this).
//
// found_inf (a float on the arrays' device) is optional. When given, the step first checks
// every grad * inv_scale and sets *found_inf = 1 if any is inf or NaN; when *found_inf is
// then non-zero (set by this check or before the call, e.g. by unscale_and_check) nothing
// is changed. The CPU result does not depend on the thread count.
#pragma once

#include <float.h>
#include <math.h>
#include <stdint.h>

#include <vector>

#include "unet/activations.h"  // UNET_HD
#include "unet/tensor.h"

namespace unet {

struct SgdTensor {
  void* param = nullptr;
  const void* grad = nullptr;
  void* momentum_buffer = nullptr;  // required when momentum > 0, else null
  int64_t numel = 0;
  double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false;
  bool is_first_step = false;  // the buffer holds no history yet: it becomes the gradient
};

struct AdamTensor {
  void* param = nullptr;
  const void* grad = nullptr;
  void* exp_avg = nullptr;
  void* exp_avg_sq = nullptr;
  void* max_exp_avg_sq = nullptr;  // amsgrad when given
  int64_t numel = 0;
  int64_t step = 1;  // the count of this step, from 1 (bias corrections)
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  bool decoupled_weight_decay = false, maximize = false;
};

template <typename Tensor>
struct FusedStepArgs {
  DType dtype = DType::Float32;  // of every array but found_inf (float32)
  std::vector<Tensor> tensors;
  double inv_scale = 1.0;       // the gradients are used as grad * inv_scale
  float* found_inf = nullptr;   // null: no check
};

// Multiplies each gradient by inv_scale in place (when in_place; else only checks) and
// says whether any product is inf or NaN. The arrays may mix float32 and float64.
struct UnscaleTensor {
  void* grad = nullptr;
  DType dtype = DType::Float32;
  int64_t numel = 0;
};
struct UnscaleArgs {
  std::vector<UnscaleTensor> tensors;
  double inv_scale = 1.0;
  bool in_place = true;
};

namespace cpu {
void sgd_step(const FusedStepArgs<SgdTensor>& args);
void adam_step(const FusedStepArgs<AdamTensor>& args);
bool unscale_and_check(const UnscaleArgs& args);
}  // namespace cpu

// Asynchronous on `stream` (a cudaStream_t as an integer) of CUDA device `device`, except
// unscale_and_check, which waits for the stream to return its answer. Errors at launch
// throw std::runtime_error.
namespace cuda {
void sgd_step(const FusedStepArgs<SgdTensor>& args, uintptr_t stream, int device);
void adam_step(const FusedStepArgs<AdamTensor>& args, uintptr_t stream, int device);
bool unscale_and_check(const UnscaleArgs& args, uintptr_t stream, int device);
}  // namespace cuda

// ---- the per-element math, shared by cpu/optim.cpp and cuda/optim.cu ----
namespace optim {

// One rounding per operation: nvcc would contract a * b + c into an fma, so the device
// side spells the roundings out; cpu/optim.cpp is compiled with -ffp-contract=off.
// The body, not the declaration, depends on the compilation pass (nvcc's rule).
#if defined(__CUDA_ARCH__)
#define UNET_OPTIM_OPS(T, f)                                               \
  UNET_HD T mul_(T a, T b) { return __##f##mul_rn(a, b); }                 \
  UNET_HD T add_(T a, T b) { return __##f##add_rn(a, b); }                \
  UNET_HD T sub_(T a, T b) { return __##f##sub_rn(a, b); }                 \
  UNET_HD T div_(T a, T b) { return __##f##div_rn(a, b); }                 \
  UNET_HD T sqrt_(T a) { return __##f##sqrt_rn(a); }
#else
#define UNET_OPTIM_OPS(T, f)                          \
  UNET_HD T mul_(T a, T b) { return a * b; }          \
  UNET_HD T add_(T a, T b) { return a + b; }          \
  UNET_HD T sub_(T a, T b) { return a - b; }          \
  UNET_HD T div_(T a, T b) { return a / b; }          \
  UNET_HD T sqrt_(T a) { return sqrt(a); }
#endif
UNET_OPTIM_OPS(float, f)
UNET_OPTIM_OPS(double, d)
#undef UNET_OPTIM_OPS

// False for inf and NaN; a comparison, so the CPU check loops vectorize.
UNET_HD bool is_finite_(float x) { return fabsf(x) <= FLT_MAX; }
UNET_HD bool is_finite_(double x) { return fabs(x) <= DBL_MAX; }

// numpy.maximum: NaN when either is NaN.
template <typename T>
UNET_HD T maximum_(T a, T b) { return (a > b || a != a) ? a : b; }

template <typename T>
struct SgdCoefficients {
  T grad_scale;  // inv_scale, negative when maximize (exact: only the sign changes)
  T weight_decay, momentum, one_minus_dampening, lr;
  bool l2, momentum_on, first, nesterov;
};

template <typename T>
inline SgdCoefficients<T> sgd_coefficients(const SgdTensor& t, double inv_scale) {
  return {T(t.maximize ? -inv_scale : inv_scale), T(t.weight_decay), T(t.momentum),
          T(1 - t.dampening), T(t.lr), t.weight_decay != 0, t.momentum != 0, t.is_first_step,
          t.nesterov};
}

// The flags come as arguments so that the CPU loops can pass them as constants.
template <typename T>
UNET_HD void sgd_element(const SgdCoefficients<T>& c, bool l2, bool momentum_on, bool first,
                         bool nesterov, T& p, T grad, T& buf) {
  T g = mul_(grad, c.grad_scale);
  if (l2) g = add_(g, mul_(c.weight_decay, p));
  if (momentum_on) {
    buf = first ? g : add_(mul_(buf, c.momentum), mul_(c.one_minus_dampening, g));
    g = nesterov ? add_(g, mul_(c.momentum, buf)) : buf;
  }
  p = sub_(p, mul_(c.lr, g));
}

template <typename T>
struct AdamCoefficients {
  T grad_scale;        // inv_scale, negative when maximize
  T weight_decay;      // the L2 term (when l2)
  T decay;             // 1 - lr * weight_decay when decoupled, else 1 (p * 1 == p exactly)
  T one_minus_beta1, beta2, one_minus_beta2;
  T bias_correction2_sqrt, eps, step_size;
  bool l2, amsgrad;
};

template <typename T>
inline AdamCoefficients<T> adam_coefficients(const AdamTensor& t, double inv_scale) {
  // Python's float ** int is C's pow on doubles: the same bias corrections as adam.py.
  const double step = static_cast<double>(t.step);
  const bool decoupled = t.decoupled_weight_decay && t.weight_decay != 0;
  return {T(t.maximize ? -inv_scale : inv_scale),
          T(t.weight_decay),
          T(decoupled ? 1 - t.lr * t.weight_decay : 1.0),
          T(1 - t.beta1),
          T(t.beta2),
          T(1 - t.beta2),
          T(sqrt(1 - pow(t.beta2, step))),
          T(t.eps),
          T(t.lr / (1 - pow(t.beta1, step))),
          t.weight_decay != 0 && !t.decoupled_weight_decay,
          t.max_exp_avg_sq != nullptr};
}

template <typename T>
UNET_HD void adam_element(const AdamCoefficients<T>& c, bool l2, bool amsgrad, T& p, T grad,
                          T& m, T& v, T& v_max) {
  T g = mul_(grad, c.grad_scale);
  if (l2)
    g = add_(g, mul_(c.weight_decay, p));
  else
    p = mul_(p, c.decay);
  m = add_(m, mul_(c.one_minus_beta1, sub_(g, m)));
  v = add_(mul_(v, c.beta2), mul_(mul_(c.one_minus_beta2, g), g));
  T second = v;
  if (amsgrad) {
    v_max = maximum_(v_max, v);
    second = v_max;
  }
  const T denom = add_(div_(sqrt_(second), c.bias_correction2_sqrt), c.eps);
  p = sub_(p, mul_(c.step_size, div_(m, denom)));
}

}  // namespace optim
}  // namespace unet
