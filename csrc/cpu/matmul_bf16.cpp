// bfloat16 GEMM on AVX-512 BF16, blocked like gemm.cpp (Goto's algorithm):
//
//   for each NC-wide column block          B block packed once, shared by the threads
//     for each KC-deep slice of k          A block (MC rows) packed per thread
//       for each MR x NR tile of C         micro-kernel: MR x 2 zmm accumulators
//
// and a C of few rows, as there, cut by columns, each thread packing its own B panels. A C of
// at most 16 rows times B stored [K, N] (h W for weights W [in, out]) is not packed at all:
// see direct_gemm.
//
// Packing stores each operand as pairs of consecutive k (two bfloat16 in 32 bits), the unit
// vdpbf16ps multiplies: acc[j] += a(i,k) b(k,j) + a(i,k+1) b(k+1,j) for 16 columns j at a
// time, with the A pair broadcast. An odd K is padded with a zero. Every C element is summed
// slice by slice, pair by pair, whatever the thread count.
#include "matmul_bf16.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "gemm.h"
#include "gemm_split.h"
#include "threads.h"
#include "transpose16.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace unet::cpu {
namespace {

constexpr int64_t KC = 512;   // k per slice (256 pairs): the B micro-panel, 32 KiB, in L1
constexpr int64_t NC = 4096;  // columns per shared B block (4 MiB per slice)
constexpr int64_t MC = 192;   // rows per A block (192 KiB per slice, in L2)
// Tiles of MR x NR: 24 accumulators + 2 B vectors of the 32 zmm; 8-row tiles for a C of
// few rows that they pad less (M = 16: no padding instead of 8 rows); 4-row ones for M <= 4
// (a decoder step), half the multiply-adds of an 8-row tile.
constexpr int MR = 12, SHORT_MR = 8, TINY_MR = 4, NR = 32;
// A C of at most this many rows times B stored [K, N] reads B where it lies (direct_gemm),
// asking for its rows this many columns ahead.
constexpr int DIRECT_MAX_M = 16;
constexpr int64_t kDirectAhead = 64;
// B panels a thread packs at a time for itself (C of one row block): 256 KiB, in L2.
constexpr int64_t kPrivatePanels = 8;
// How many pairs of k ahead the packer asks for the rows of B stored [K, N].
constexpr int64_t kPrefetchPairs = 8;

int tile_rows_for(int64_t M) {
  if (M <= TINY_MR) return TINY_MR;
  return M <= MC && round_up(M, SHORT_MR) < round_up(M, MR) ? SHORT_MR : MR;
}
constexpr double kParallelMinWork = 1 << 18;

// op(X)(r, k) = data[r * row_stride + k * k_stride], as in gemm.h.
struct Operand {
  const uint16_t* data;
  int64_t row_stride, k_stride;
};

#if defined(__x86_64__) || defined(__i386__)
// dst[c] = the pair (even[c], odd[c]) for 32 columns c: two rows of k interleaved. The qword
// permute puts columns 4L..4L+3 and 16+4L..16+4L+3 in lane L, where the 16-bit unpacks,
// which work within lanes, then find them.
__attribute__((target("avx512f,avx512bw"))) inline void interleave_pairs32(const uint16_t* even,
                                                                            const uint16_t* odd,
                                                                            uint32_t* dst) {
  const __m512i lanes = _mm512_setr_epi64(0, 4, 1, 5, 2, 6, 3, 7);
  const __m512i e = _mm512_permutexvar_epi64(lanes, _mm512_loadu_si512(even));
  const __m512i o = _mm512_permutexvar_epi64(lanes, _mm512_loadu_si512(odd));
  _mm512_storeu_si512(dst, _mm512_unpacklo_epi16(e, o));
  _mm512_storeu_si512(dst + 16, _mm512_unpackhi_epi16(e, o));
}

// pack_pairs where k runs across rows (k_stride != 1): each pair of k rows is read along
// all n columns before the next, one stream the prefetcher follows, and scattered to the
// panels (panel by panel, every k would be a short stream of its own).
__attribute__((target("avx512f,avx512bw"))) void pack_pairs_across(const Operand& s, int64_t r0,
                                                                    int64_t n, int64_t k0,
                                                                    int64_t kc, int R,
                                                                    uint32_t* dst) {
  const int64_t pairs = ceil_div(kc, 2), full = kc / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    const uint16_t* even = s.data + r0 * s.row_stride + (k0 + 2 * p) * s.k_stride;
    const uint16_t* odd = even + s.k_stride;
    const bool has_odd = p < full;
    if (s.row_stride == 1 && p + kPrefetchPairs < full) {
      // The rows are short (one thread's few panels): ask for them well ahead, line by line,
      // as the prefetcher would not start such streams in time on its own.
      const char* ahead = reinterpret_cast<const char*>(even + 2 * kPrefetchPairs * s.k_stride);
      const int64_t stride = s.k_stride * int64_t(sizeof(uint16_t));
      for (int64_t line = 0; line < n * int64_t(sizeof(uint16_t)); line += 64) {
        _mm_prefetch(ahead + line, _MM_HINT_T0);
        _mm_prefetch(ahead + stride + line, _MM_HINT_T0);
      }
    }
    for (int64_t q = 0; q < n; q += R) {
      const int64_t rows = std::min<int64_t>(R, n - q);
      uint32_t* d = dst + q * pairs + p * R;  // panel q / R starts at q * pairs
      if (has_odd && rows == 32 && R == 32 && s.row_stride == 1) {
        interleave_pairs32(even + q, odd + q, d);
        continue;
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t off = (q + r) * s.row_stride;
        d[r] = even[off] | (has_odd ? uint32_t(odd[off]) << 16 : 0u);
      }
    }
  }
}
#endif

// Rows [r0, r0 + n) by k in [k0, k0 + kc) into panels of R rows, each panel pair-major:
// dst[p * R + r] holds (k0 + 2p, k0 + 2p + 1) of row r, the first in the low half. Rows
// past n and the pair past an odd kc are zero.
void pack_pairs(const Operand& s, int64_t r0, int64_t n, int64_t k0, int64_t kc, int R,
                uint32_t* dst) {
  const int64_t pairs = ceil_div(kc, 2), full = kc / 2;
  if (n % R) {  // the last panel's missing rows
    uint32_t* last = dst + n / R * R * pairs;
    std::fill(last, last + R * pairs, 0u);
  }
  if (s.k_stride != 1) {
#if defined(__x86_64__) || defined(__i386__)
    pack_pairs_across(s, r0, n, k0, kc, R, dst);
#endif
    return;
  }
  for (int64_t q = 0; q < n; q += R, dst += R * pairs) {  // rows run along k: a pair is 32 contiguous bits
    const int64_t rows = std::min<int64_t>(R, n - q);
    const uint16_t* base = s.data + (r0 + q) * s.row_stride + k0;
    int64_t done = 0;  // pairs packed by whole 16 x 16 blocks (full panels of B)
#if defined(__x86_64__) || defined(__i386__)
    if (rows == R && R % 16 == 0) {
      for (; done + 16 <= full; done += 16)
        for (int i0 = 0; i0 < R; i0 += 16)
          transpose16x16_32bit(base + i0 * s.row_stride + 2 * done, 2 * s.row_stride,
                               dst + done * R + i0, 4 * R);
    }
#endif
    for (int64_t r = 0; r < rows; ++r) {
      const uint16_t* row = base + r * s.row_stride;
      for (int64_t p = done; p < full; ++p) dst[p * R + r] = row[2 * p] | uint32_t(row[2 * p + 1]) << 16;
      if (full < pairs) dst[full * R + r] = row[2 * full];
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
// C[R x NR] (row stride ldc) = the sum over `pairs` of a's broadcast pairs times b's pairs,
// added to C's old values when `accumulate`.
template <int R>
__attribute__((target("avx512f,avx512bf16"))) void microkernel(int64_t pairs, const uint32_t* a,
                                                                const uint32_t* b, float* c,
                                                                int64_t ldc, bool accumulate) {
  __m512 acc[R][2];
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p, a += R, b += NR) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + 16);
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(int(a[i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) {
    float* row = c + i * ldc;
    if (accumulate) {
      acc[i][0] = _mm512_add_ps(_mm512_loadu_ps(row), acc[i][0]);
      acc[i][1] = _mm512_add_ps(_mm512_loadu_ps(row + 16), acc[i][1]);
    }
    _mm512_storeu_ps(row, acc[i][0]);
    _mm512_storeu_ps(row + 16, acc[i][1]);
  }
}
#endif

bool detect() {
  const char* env = std::getenv("UNET_CPU_ISA");
  const std::string want = env ? env : "";
  if (want == "avx2" || want == "generic") return false;
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

// One k slice for rows [i0, i0 + m) and the panels [q0, q1) of the column block at jc:
// tiles of the packed A block (panels of R rows) times packed B panels (b_panels: panel q0,
// then the next ones), into C (added unless `first`).
template <int R>
void multiply_panels(int64_t pairs, const uint32_t* a, int64_t m, const uint32_t* b_panels,
                     int64_t q0, int64_t q1, int64_t nc, float* C, int64_t ldc, int64_t i0,
                     int64_t jc, bool first) {
#if defined(__x86_64__) || defined(__i386__)
  alignas(64) float edge[R * NR];  // a whole tile where C's edge cuts one
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t j0 = q * NR, n = std::min<int64_t>(NR, nc - j0);
    const uint32_t* b = b_panels + (q - q0) * NR * pairs;
    for (int64_t ir = 0; ir < m; ir += R) {
      const int64_t mr = std::min<int64_t>(R, m - ir);
      float* c = C + (i0 + ir) * ldc + jc + j0;
      if (mr == R && n == NR) {
        microkernel<R>(pairs, a + ir * pairs, b, c, ldc, !first);
        continue;
      }
      microkernel<R>(pairs, a + ir * pairs, b, edge, NR, false);
      for (int64_t r = 0; r < mr; ++r)
        for (int64_t j = 0; j < n; ++j)
          c[r * ldc + j] = first ? edge[r * NR + j] : c[r * ldc + j] + edge[r * NR + j];
    }
  }
#else
  (void)pairs, (void)a, (void)m, (void)b_panels, (void)q0, (void)q1, (void)nc, (void)C, (void)ldc,
      (void)i0, (void)jc, (void)first;
#endif
}

#if defined(__x86_64__) || defined(__i386__)
// C[R x 16] (row stride ldc; its first m rows and n <= 16 columns, the rest neither read nor
// written) = the sum over `pairs` of a's broadcast pairs (packed as by pack_pairs, R rows)
// times the pairs of B's rows 2p and 2p + 1 (row stride ldb, from b), added to C's old
// values when `accumulate`. The two rows of B are interleaved in a register by one word
// permute; `odd_tail`: the last pair has its even row only. The same sums in the same order
// as microkernel on packed B: both paths give the same bits.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void direct_tile(
    int64_t pairs, bool odd_tail, const uint32_t* a, const uint16_t* b, int64_t ldb, int64_t n,
    int64_t m, float* c, int64_t ldc, bool accumulate) {
  // word 2j: column j of the even row (first table), word 2j + 1: of the odd row (second)
  const __m512i interleave = _mm512_set_epi16(
      47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
      39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __mmask16 cols = __mmask16((1u << std::min<int64_t>(n, 16)) - 1);
  __m512 acc[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  const int64_t full = odd_tail ? pairs - 1 : pairs;
  for (int64_t p = 0; p < pairs; ++p, a += R) {
    const uint16_t* even = b + 2 * p * ldb;
    const uint16_t* odd = even + ldb;
    // Both rows two 64-byte lines further on (four tiles on), into L2: B comes from memory
    // in rows' short segments, which the hardware does not ask for soon enough.
    _mm_prefetch(reinterpret_cast<const char*>(even + kDirectAhead), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(odd + kDirectAhead), _MM_HINT_T1);
    const __m256i e = _mm256_maskz_loadu_epi16(cols, even);
    const __m256i o = p < full ? _mm256_maskz_loadu_epi16(cols, odd) : _mm256_setzero_si256();
    const __m512bh bp = (__m512bh)_mm512_permutex2var_epi16(_mm512_zextsi256_si512(e), interleave,
                                                            _mm512_zextsi256_si512(o));
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i)
      acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_set1_epi32(int(a[i])), bp);
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    if (i == m) break;
    float* row = c + i * ldc;
    if (accumulate) acc[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(cols, row), acc[i]);
    _mm512_mask_storeu_ps(row, cols, acc[i]);
  }
}
#endif

// C = A B for M <= R and B stored [K, N] (b, row stride ldb). With so few rows each B
// value serves M products only: packing B (reading and writing all of it once more) would
// take as long as the products, so each thread reads its own columns of B straight from
// B's rows instead, 16 at a time. Each thread packs A (R rows) per k slice for itself.
// Slices of KC, each summed pair by pair and then added to C, as in the packed path.
template <int R>
void direct_gemm(int64_t M, int64_t N, int64_t K, const Operand& A, const uint16_t* b,
                 int64_t ldb, float* C, int64_t ldc, int nt) {
#if defined(__x86_64__) || defined(__i386__)
  const int64_t kp_max = ceil_div(std::min(K, KC), 2), n_tiles = ceil_div(N, 16);
  // Allocate before the parallel region: nothing may throw inside it.
  auto a_pack = aligned_array<uint32_t>(nt * R * kp_max);
#pragma omp parallel num_threads(nt)
  {
    uint32_t* a_mine = a_pack.get() + thread_id() * R * kp_max;
    // Which thread computes a tile changes no result.
    const int64_t t0 = n_tiles * thread_id() / nt, t1 = n_tiles * (thread_id() + 1) / nt;
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      pack_pairs(A, 0, M, pc, kc, R, a_mine);
      for (int64_t tile = t0; tile < t1; ++tile) {
        const int64_t j0 = tile * 16;
        direct_tile<R>(ceil_div(kc, 2), kc % 2 != 0, a_mine, b + pc * ldb + j0, ldb, N - j0, M,
                       C + j0, ldc, pc != 0);
      }
    }
  }
#else
  (void)M, (void)N, (void)K, (void)A, (void)b, (void)ldb, (void)C, (void)ldc, (void)nt;
#endif
}

}  // namespace

bool bf16_kernel_available() {
  static const bool available = detect();
  return available;
}

const char* bf16_kernel_isa() { return bf16_kernel_available() ? "avx512bf16" : "generic"; }

void bf16_gemm(int64_t M, int64_t N, int64_t K, const uint16_t* a, int64_t lda, bool trans_a,
               const uint16_t* b, int64_t ldb, bool trans_b, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  // gemm.h's addressing: A(i,k) and B(j,k).
  const Operand A = trans_a ? Operand{a, 1, lda} : Operand{a, lda, 1};
  const Operand B = trans_b ? Operand{b, ldb, 1} : Operand{b, 1, ldb};

  const double flops = double(M) * double(N) * double(K);
  const int nt = flops < kParallelMinWork ? 1 : max_threads();
  if (!trans_b && M <= DIRECT_MAX_M) {  // B stored [K, N]: see direct_gemm
    if (M <= TINY_MR)
      direct_gemm<TINY_MR>(M, N, K, A, b, ldb, C, ldc, nt);
    else if (M <= SHORT_MR)
      direct_gemm<SHORT_MR>(M, N, K, A, b, ldb, C, ldc, nt);
    else
      direct_gemm<DIRECT_MAX_M>(M, N, K, A, b, ldb, C, ldc, nt);
    return;
  }
  const int tile_rows = tile_rows_for(M);
  // Which thread computes a tile changes no result.
  const ThreadSplit work = split_work(M, N, nt, tile_rows, NR, MC, NC);
  const int64_t n_iblocks = work.n_iblocks, n_splits = work.n_splits, mc_max = work.mc;
  const int64_t kp_max = ceil_div(std::min(K, KC), 2);
  const int64_t nc_max = round_up(std::min(N, NC), NR);
  // B packed by each thread for the panels it multiplies, a few at a time (a single row
  // block, or a B of at most kPrivatePanels panels, cheap to pack again per row block: no
  // thread waits for another), else by all threads together, one contiguous range of panels
  // each, for all row blocks (two barriers per k slice, which a long k makes many).
  const bool b_private = n_iblocks == 1 || ceil_div(N, NR) <= kPrivatePanels;

  // Allocate before the parallel region: nothing may throw inside it. A shared B block, or
  // each thread's kPrivatePanels.
  auto b_pack = aligned_array<uint32_t>((b_private ? nt * kPrivatePanels * NR : nc_max) * kp_max);
  auto a_pack = aligned_array<uint32_t>(nt * mc_max * kp_max);

#pragma omp parallel num_threads(nt)
  {
    uint32_t* a_mine = a_pack.get() + thread_id() * mc_max * kp_max;
    uint32_t* b_mine = b_pack.get() + thread_id() * kPrivatePanels * NR * kp_max;
    for (int64_t jc = 0; jc < N; jc += NC) {
      const int64_t nc = std::min(NC, N - jc), n_panels = ceil_div(nc, NR);
      for (int64_t pc = 0; pc < K; pc += KC) {
        const int64_t kc = std::min(KC, K - pc), pairs = ceil_div(kc, 2);
        // Panels [q0, q1) of this slice at dst.
        auto pack_b = [&](int64_t q0, int64_t q1, uint32_t* dst) {
          pack_pairs(B, jc + q0 * NR, std::min(nc, q1 * NR) - q0 * NR, pc, kc, NR, dst);
        };
        auto multiply = [&](const uint32_t* a, int64_t m, const uint32_t* b_panels, int64_t q0,
                            int64_t q1, int64_t i0) {
          if (tile_rows == TINY_MR)
            multiply_panels<TINY_MR>(pairs, a, m, b_panels, q0, q1, nc, C, ldc, i0, jc, pc == 0);
          else if (tile_rows == SHORT_MR)
            multiply_panels<SHORT_MR>(pairs, a, m, b_panels, q0, q1, nc, C, ldc, i0, jc, pc == 0);
          else
            multiply_panels<MR>(pairs, a, m, b_panels, q0, q1, nc, C, ldc, i0, jc, pc == 0);
        };
        if (!b_private) {
#pragma omp for schedule(static)
          for (int64_t part = 0; part < nt; ++part)
          {
            const int64_t q0 = n_panels * part / nt;
            pack_b(q0, n_panels * (part + 1) / nt, b_pack.get() + q0 * NR * pairs);
          }
          // (implicit barrier: the B block is complete)
        }
        // Static schedule: each item (and so each C tile) has the same thread in every
        // slice, which therefore needs no barrier unless B is shared.
        int64_t packed_block = -1;
#pragma omp for schedule(static) nowait
        for (int64_t item = 0; item < n_iblocks * n_splits; ++item) {
          const int64_t ib = item / n_splits, split = item % n_splits;
          const int64_t i0 = work.row(ib, tile_rows), m = std::min(work.row(ib + 1, tile_rows), M) - i0;
          if (ib != packed_block) {
            pack_pairs(A, i0, m, pc, kc, tile_rows, a_mine);
            packed_block = ib;
          }
          const int64_t q0 = n_panels * split / n_splits, q1 = n_panels * (split + 1) / n_splits;
          if (!b_private) {
            multiply(a_mine, m, b_pack.get() + q0 * NR * pairs, q0, q1, i0);
            continue;
          }
          // A few panels at a time into the thread's own buffer, used while in L2.
          for (int64_t qa = q0; qa < q1; qa += kPrivatePanels) {
            const int64_t qb = std::min(q1, qa + kPrivatePanels);
            pack_b(qa, qb, b_mine);
            multiply(a_mine, m, b_mine, qa, qb, i0);
          }
        }
        if (!b_private) {
#pragma omp barrier
          // (nobody still reads the B block the next slice overwrites)
        }
      }
    }
  }
}

}  // namespace unet::cpu
