// Whole arrays between the 16-bit dtypes and float32, for the CPU mixed-precision kernels
// (matmul, the convolutions): widening is exact, narrowing rounds to nearest even
// (unet/half.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "unet/half.h"
#include "unet/tensor.h"

namespace unet::cpu {

// n values of dtype t at src, exactly as float32.
inline void widen(DType t, const void* src, int64_t n, float* dst) {
  const auto* h = static_cast<const uint16_t*>(src);
  if (t == DType::Float16)
    for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(h[i]);
  else if (t == DType::BFloat16)
    for (int64_t i = 0; i < n; ++i) dst[i] = bfloat16_to_float(h[i]);
  else
    std::memcpy(dst, src, n * sizeof(float));
}

// n float32 values rounded (to nearest even) to dtype t at dst.
inline void narrow(DType t, const float* src, int64_t n, void* dst) {
  auto* h = static_cast<uint16_t*>(dst);
  if (t == DType::Float16)
    for (int64_t i = 0; i < n; ++i) h[i] = float_to_half(src[i]);
  else if (t == DType::BFloat16)
    for (int64_t i = 0; i < n; ++i) h[i] = float_to_bfloat16(src[i]);
  else
    std::memcpy(dst, src, n * sizeof(float));
}

// v rounded (to nearest even) to the 16-bit dtype t, as float32 (exactly representable).
inline float round_to(DType t, float v) {
  return t == DType::Float16 ? half_to_float(float_to_half(v)) : bfloat16_to_float(float_to_bfloat16(v));
}

}  // namespace unet::cpu
