// A 16 x 16 transpose of 32-bit values in AVX-512 registers, for the GEMM packers: float32
// rows that run along k (gemm.cpp) and bfloat16 rows, whose pairs of k are 32-bit units
// (matmul_bf16.cpp).
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

namespace unet::cpu {

// dst[c * dst_stride + i] = src[i * src_stride + c] for 16 rows i and 16 columns c of 32-bit
// values; strides in bytes. Only on a CPU with AVX-512F.
__attribute__((target("avx512f"))) inline void transpose16x16_32bit(const void* src,
                                                                     int64_t src_stride,
                                                                     void* dst,
                                                                     int64_t dst_stride) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  __m512i r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(s + i * src_stride);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Now r[4g + j] holds, in its 128-bit lane L, rows 4g..4g+3 of column 4L + j.
  for (int j = 0; j < 4; ++j) {
    const __m512i g01_even = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88);  // lanes 0, 2 of g0, g1
    const __m512i g01_odd = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xdd);   // lanes 1, 3
    const __m512i g23_even = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88);
    const __m512i g23_odd = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xdd);
    t[j] = _mm512_shuffle_i32x4(g01_even, g23_even, 0x88);
    t[8 + j] = _mm512_shuffle_i32x4(g01_even, g23_even, 0xdd);
    t[4 + j] = _mm512_shuffle_i32x4(g01_odd, g23_odd, 0x88);
    t[12 + j] = _mm512_shuffle_i32x4(g01_odd, g23_odd, 0xdd);
  }
  for (int c = 0; c < 16; ++c) _mm512_storeu_si512(d + c * dst_stride, t[c]);
}

}  // namespace unet::cpu
#endif
