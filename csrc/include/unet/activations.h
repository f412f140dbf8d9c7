// Elementwise activations and their derivatives, written once for the C++ and the CUDA
// kernels so that the two cannot drift. Only C math functions (erff/erf, expf/exp, ...)
// are used: CUDA provides the same names on the device.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define UNET_HD __host__ __device__ __forceinline__
#else
#define UNET_HD inline
#endif

namespace unet {

enum class Activation : int { None, ReLU, GELU, Tanh, Sigmoid };

namespace detail {
UNET_HD float erf_(float x) { return erff(x); }
UNET_HD double erf_(double x) { return erf(x); }
UNET_HD float exp_(float x) { return expf(x); }
UNET_HD double exp_(double x) { return exp(x); }
UNET_HD float tanh_(float x) { return tanhf(x); }
UNET_HD double tanh_(double x) { return tanh(x); }
}  // namespace detail

// act(z). GELU is the exact form z * Phi(z) = z/2 * (1 + erf(z/sqrt(2))), PyTorch's default.
template <typename T>
UNET_HD T activation_forward(Activation act, T z) {
  switch (act) {
    case Activation::ReLU: return z > T(0) ? z : T(0);
    case Activation::GELU: return T(0.5) * z * (T(1) + detail::erf_(z * T(0.70710678118654752440)));
    case Activation::Tanh: return detail::tanh_(z);
    case Activation::Sigmoid: return T(1) / (T(1) + detail::exp_(-z));
    default: return z;
  }
}

// d act / dz at z (the pre-activation). ReLU's derivative at 0 is taken as 0, like PyTorch.
template <typename T>
UNET_HD T activation_derivative(Activation act, T z) {
  switch (act) {
    case Activation::ReLU: return z > T(0) ? T(1) : T(0);
    case Activation::GELU: {
      // Phi(z) + z * phi(z), phi the standard normal density.
      const T cdf = T(0.5) * (T(1) + detail::erf_(z * T(0.70710678118654752440)));
      const T pdf = T(0.39894228040143267794) * detail::exp_(T(-0.5) * z * z);
      return cdf + z * pdf;
    }
    case Activation::Tanh: {
      const T t = detail::tanh_(z);
      return T(1) - t * t;
    }
    case Activation::Sigmoid: {
      const T s = T(1) / (T(1) + detail::exp_(-z));
      return s * (T(1) - s);
    }
    default: return T(1);
  }
}

}  // namespace unet
