// The bfloat16 product of the CPU matmul on AVX-512 BF16 (vdpbf16ps): bfloat16 pairs
// multiplied exactly and summed in float32, so it agrees with the portable path (exact
// float32 copies and the float32 GEMM) up to the order of the float32 sums, except that
// the instruction flushes subnormal inputs, products and partial sums to zero.
#pragma once

#include <cstdint>

namespace unet::cpu {

// Whether this CPU has AVX-512 BF16 (and F, BW, VL) and UNET_CPU_ISA (read once) does not
// ask for a narrower ISA ("avx2" or "generic" select the portable path).
bool bf16_kernel_available();
// "avx512bf16" or "generic": what bfloat16 matmul inputs run on.
const char* bf16_kernel_isa();

// C (M x N, row-major, leading dimension ldc, float32, overwritten) = op(A) op(B) from
// bfloat16 bit patterns: op(A) is M x K, stored [M, K] or, with trans_a, [K, M] (leading
// dimension lda); op(B) is K x N, stored [K, N] or [N, K]. K == 0 gives zeros. The same
// result for any thread count. Only when bf16_kernel_available().
void bf16_gemm(int64_t M, int64_t N, int64_t K, const uint16_t* a, int64_t lda, bool trans_a,
               const uint16_t* b, int64_t ldb, bool trans_b, float* c, int64_t ldc);

}  // namespace unet::cpu
