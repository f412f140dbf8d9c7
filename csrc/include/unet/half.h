// float <-> float16 (IEEE binary16) and float <-> bfloat16 conversions on the raw 16-bit
// patterns, for the C++ and the CUDA kernels alike. Narrowing rounds to nearest, ties to
// even, with subnormal results, overflow to infinity, and NaN kept NaN (quiet, sign kept);
// widening is exact. Integer arithmetic only, so neither the rounding mode nor
// flush-to-zero settings change a result.
#pragma once

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define UNET_HD __host__ __device__ __forceinline__
#else
#define UNET_HD inline
#endif

namespace unet {

namespace detail {
UNET_HD uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
UNET_HD float bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace detail

UNET_HD float bfloat16_to_float(uint16_t b) { return detail::bits_float(uint32_t(b) << 16); }

UNET_HD uint16_t float_to_bfloat16(float f) {
  const uint32_t x = detail::float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet NaN
  // Adding 0x7fff plus the lowest kept bit rounds to nearest even; a carry into the
  // exponent is right, up to infinity.
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

UNET_HD float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return detail::bits_float(sign | 0x7f800000u | (m << 13));  // inf, NaN
  if (e == 0) {  // zero or subnormal: m * 2^-24, exact and a normal float
    const float v = float(m) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return detail::bits_float(sign | ((e + 112u) << 23) | (m << 13));  // rebias 15 -> 127
}

UNET_HD uint16_t float_to_half(float f) {
  const uint32_t u = detail::float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u, x = u & 0x7fffffffu;
  if (x > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((x >> 13) & 0x3ffu));  // quiet NaN
  if (x >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to infinity
  if (x >= 0x38800000u) {  // a normal half: rebias 127 -> 15, keep 10 of 23 mantissa bits
    const uint32_t r = x - 0x38000000u;
    return uint16_t(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
  }
  if (x <= 0x33000000u) return uint16_t(sign);  // <= 2^-25 (a tie) rounds to zero
  // Subnormal: the value in units of 2^-24 is the 24-bit significand shifted right.
  const uint32_t shift = 126u - (x >> 23);  // 14 .. 24
  const uint32_t m = (x & 0x7fffffu) | 0x800000u;
  const uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
  return uint16_t(sign | (q + (rem > halfway || (rem == halfway && (q & 1u)))));
}

}  // namespace unet
