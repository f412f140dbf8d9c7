// Elementwise activations and their derivatives, written once for the C++ and the CUDA
// kernels so that the two cannot drift. exp and tanh are written out in arithmetic (and
// vectorize on the CPU); erf is the C library's, whose name CUDA provides on the device.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define UNET_HD __host__ __device__ __forceinline__
#else
#define UNET_HD inline
#endif

namespace unet {

enum class Activation : int { None, ReLU, GELU, Tanh, Sigmoid };

namespace detail {

// Bit casts for the exponent arithmetic below (memcpy: well defined, and a register move
// on either side).
template <typename To, typename From>
UNET_HD To bit_cast_(From from) {
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

UNET_HD float erf_(float x) { return erff(x); }
UNET_HD double erf_(double x) { return erf(x); }

// e^x in plain arithmetic, without a library call or a branch, so that the CPU kernels'
// loops over it vectorize: e^x = 2^n e^r with n = round(x / ln 2) (the 1.5 * 2^mantissa
// trick) and r = x - n ln 2 (ln 2 in two parts, n * hi exact), e^r from a polynomial
// (float: Cephes' expf; double: Taylor to r^13, remainder < 5e-18), and 2^n put into the
// exponent bits as two factors, so that subnormal results and those near overflow come out
// right. Within 1 ulp of the exact value (measured: 0.98 float, 0.96 double); 0 and inf
// beyond the range, NaN for NaN. Out-of-range lanes compute garbage that the last select
// drops; the integer steps are kept free of overflow for them.
UNET_HD float exp_(float x) {
  const float big = 12582912.0f;  // 1.5 * 2^23: x / ln 2 + big rounds to an integer
  const float k = x * 1.44269504088896341f + big;
  const float n = k - big;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t ni = static_cast<int32_t>(bit_cast_<uint32_t>(k) - bit_cast_<uint32_t>(big));
  const int32_t n1 = ni / 2, n2 = ni - n1;
  const float e = p * bit_cast_<float>((static_cast<uint32_t>(n1) + 127u) << 23) *
                  bit_cast_<float>((static_cast<uint32_t>(n2) + 127u) << 23);
  return x < -104.0f ? 0.0f : (x > 89.0f ? bit_cast_<float>(0x7f800000u) : e);
}
UNET_HD double exp_(double x) {
  const double big = 6755399441055744.0;  // 1.5 * 2^52
  const double k = x * 1.4426950408889634074 + big;
  const double n = k - big;
  const double r = (x - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6;
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * (r * r) + r + 1.0;
  const int64_t ni = static_cast<int64_t>(bit_cast_<uint64_t>(k) - bit_cast_<uint64_t>(big));
  const int64_t n1 = ni / 2, n2 = ni - n1;
  const double e = p * bit_cast_<double>((static_cast<uint64_t>(n1) + 1023u) << 52) *
                   bit_cast_<double>((static_cast<uint64_t>(n2) + 1023u) << 52);
  return x < -746.0 ? 0.0 : (x > 710.0 ? bit_cast_<double>(0x7ff0000000000000ull) : e);
}

// tanh: for |x| < 0.625 an odd polynomial (float, Cephes' tanhf) or rational function
// (double, Cephes' tanh) in x^2, above it 1 - 2 / (e^(2|x|) + 1), free of cancellation
// there. Both are computed and one is selected, so that loops vectorize. Within 1.4 ulp
// of the exact value (measured: 1.33 float and double; glibc's tanhf: 2.2).
UNET_HD float tanh_(float x) {
  const float a = x < 0.0f ? -x : x, z = x * x;
  const float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                        1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  const float large = 1.0f - 2.0f / (exp_(2.0f * a) + 1.0f);
  return a < 0.625f ? small : (x < 0.0f ? -large : large);
}
UNET_HD double tanh_(double x) {
  const double a = x < 0.0 ? -x : x, z = x * x;
  const double num = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z -
                     1.61468768441708447952e3;
  const double den = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z +
                     4.84406305325125486048e3;
  const double small = x + x * z * (num / den);
  const double large = 1.0 - 2.0 / (exp_(2.0 * a) + 1.0);
  return a < 0.625 ? small : (x < 0.0 ? -large : large);
}

}  // namespace detail

// The logistic sigmoid 1 / (1 + e^-z), from e = e^-|z| <= 1 so that nothing overflows:
// s = 1 / (1 + e) for z >= 0 and e * s for z < 0, which keeps the relative accuracy of the
// smallest results. Within 3 ulp (measured: 2.8 float, 2.9 double).
template <typename T>
UNET_HD T sigmoid(T z) {
  const T e = detail::exp_(z >= T(0) ? -z : z);
  const T s = T(1) / (T(1) + e);
  return z >= T(0) ? s : e * s;
}

// tanh(z) as Activation::Tanh computes it, for kernels that call it by name (the
// recurrent gates).
template <typename T>
UNET_HD T tanh_(T z) {
  return detail::tanh_(z);
}

// act(z). GELU is the exact form z * Phi(z) = z/2 * (1 + erf(z/sqrt(2))), PyTorch's default.
template <typename T>
UNET_HD T activation_forward(Activation act, T z) {
  switch (act) {
    case Activation::ReLU: return z > T(0) ? z : T(0);
    case Activation::GELU: return T(0.5) * z * (T(1) + detail::erf_(z * T(0.70710678118654752440)));
    case Activation::Tanh: return detail::tanh_(z);
    case Activation::Sigmoid: return sigmoid(z);
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
      const T s = sigmoid(z);
      return s * (T(1) - s);
    }
    default: return T(1);
  }
}

}  // namespace unet
