// The Ampere (sm_80 and later) tensor-core building blocks shared by the matmul's sm80
// path (cuda/matmul_sm80.cu) and the mixed-precision convolutions (cuda/conv_mma.cu):
// cp.async copies, ldmatrix fragment loads and mma.sync.m16n8k16 with fp32 accumulation,
// and the padded shared-memory operand tile they read. An operand whose stored rows run
// along K ("K-major") is kept [rows][k] in shared memory and read with ldmatrix, one whose
// rows run along M or N is kept [k][rows] and read with ldmatrix.trans. Rows are padded by
// 16 bytes, which puts the eight 16-byte rows of every ldmatrix in distinct banks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace unet::cuda::mma {
// Internal linkage: each .cu that includes this gets its own copies (no -rdc needed).
namespace {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes from src to shared dst, of which the first `bytes` are read and the rest zeroed.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  if constexpr (TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// d += a b for one 16x8x16 step (a: row-major 16x16, b: 16x8 "col", i.e. k-contiguous).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The shared-memory tile of one operand for one k tile: R rows of op (M for A, N for B)
// by BK. K-major: [R][BK + 8]; otherwise [BK][R + 8] (elements).
template <int R, int BK, bool KMAJOR>
struct OperandTile {
  static constexpr int kRows = KMAJOR ? R : BK, kCols = KMAJOR ? BK : R;
  static constexpr int kPitch = kCols + 8;
  static constexpr int kElems = kRows * kPitch;

  // Copies the tile at op rows r0.., k0.. of the stored matrix g (leading dimension ld;
  // op has `rows` rows, K columns) into s, in 16-byte pieces spread over the block.
  template <int THREADS, typename T>
  __device__ __forceinline__ static void load(T* s, const T* g, int64_t ld, int64_t r0, int64_t rows,
                                              int64_t k0, int64_t K, int tid) {
    constexpr int kChunksPerRow = kCols / 8, kChunks = kRows * kChunksPerRow;
    static_assert(kChunks % THREADS == 0, "tile copies must divide evenly");
    const int64_t row0 = KMAJOR ? r0 : k0, col0 = KMAJOR ? k0 : r0;
    const int64_t row_end = KMAJOR ? rows : K, col_end = KMAJOR ? K : rows;
#pragma unroll
    for (int l = 0; l < kChunks / THREADS; ++l) {
      const int c = tid + l * THREADS;
      const int row = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
      const int64_t gr = row0 + row, gc = col0 + col;
      const T* src = g;  // a valid address even when nothing is read
      int bytes = 0;
      if (gr < row_end && gc < col_end) {
        src = g + gr * ld + gc;
        bytes = col_end - gc < 8 ? static_cast<int>(col_end - gc) * 2 : 16;
      }
      cp_async_16(smem_addr(s + row * kPitch + col), src, bytes);
    }
  }
};

// The A fragment (16 rows from r, k16 step at k) of mma.m16n8k16 via one ldmatrix.x4:
// matrices (rows +0, k +0), (+8, +0), (+0, +8), (+8, +8) are a0..a3.
template <int R, int BK, bool KMAJOR, typename T>
__device__ __forceinline__ void a_fragment(uint32_t (&a)[4], const T* s, int r, int k, int lane) {
  using Tile = OperandTile<R, BK, KMAJOR>;
  if constexpr (KMAJOR)
    ldmatrix_x4<false>(a, smem_addr(s + (r + lane % 16) * Tile::kPitch + k + (lane / 16) * 8));
  else
    ldmatrix_x4<true>(a, smem_addr(s + (k + lane % 8 + (lane / 16) * 8) * Tile::kPitch + r +
                                   ((lane / 8) % 2) * 8));
}

// The B fragments of two adjacent n8 tiles (rows r..r+15 of op(B)^T, k16 step at k) via
// one ldmatrix.x4: b0 = {x[0], x[1]} for rows r.., b1 = {x[2], x[3]} for rows r+8...
template <int R, int BK, bool KMAJOR, typename T>
__device__ __forceinline__ void b_fragments(uint32_t (&b0)[2], uint32_t (&b1)[2], const T* s, int r,
                                            int k, int lane) {
  using Tile = OperandTile<R, BK, KMAJOR>;
  uint32_t x[4];
  if constexpr (KMAJOR)
    ldmatrix_x4<false>(x, smem_addr(s + (r + lane % 8 + (lane / 16) * 8) * Tile::kPitch + k +
                                    ((lane / 8) % 2) * 8));
  else
    ldmatrix_x4<true>(x, smem_addr(s + (k + lane % 8 + ((lane / 8) % 2) * 8) * Tile::kPitch + r +
                                   (lane / 16) * 8));
  b0[0] = x[0];
  b0[1] = x[1];
  b1[0] = x[2];
  b1[1] = x[3];
}

}  // namespace
}  // namespace unet::cuda::mma
