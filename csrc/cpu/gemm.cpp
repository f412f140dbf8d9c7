// Cache-blocked GEMM in the BLIS style (Goto's algorithm):
//
//   for each NC-wide block of columns (jc)      B block kc x nc packed once, shared
//     for each KC-deep slice of k (pc)          A block mc x kc packed per thread (L2)
//       for each MR x NR tile of C              micro-kernel: kc rank-1 updates held
//                                               in registers, B micro-panel in L1/L2
//
// A C of few rows (one row block) is cut by columns instead, and each thread packs the B
// panels it multiplies, a few at a time, while the previous ones are still in L2: no B
// block is shared, so no thread waits for another.
//
// Packing copies operands into the exact order the micro-kernel reads them, whatever
// their strides, so one micro-kernel serves every transposition. The micro-kernel is
// chosen at run time (AVX-512, AVX2+FMA or a baseline one) so the wheel needs no
// -march flag. Bias, activation and the pre-activation store run on each tile right
// after its last k slice, while it is still in L1.
#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "gemm_split.h"
#include "threads.h"
#include "transpose16.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace unet::cpu {
namespace {

// Depth of a k slice and width of a column block (elements). KC x NR x sizeof(T) is the
// B micro-panel the micro-kernel streams for each A tile (64 KiB of float, from L2: few
// bytes per multiply-add; deeper slices mean fewer passes over C, whose reads and writes
// two threads share with each other); NC x KC the shared B block in L2/L3.
constexpr int64_t KC = 512;
constexpr int64_t NC = 4096;
// Target rows of an A block: mc x KC stays in a core's L2.
constexpr int64_t MC = 192;
// B panels a thread packs at a time for itself (C of one row block): 256 KiB of float, in L2.
constexpr int64_t kPrivatePanels = 4;
// Below this many multiply-adds a thread team costs more than it saves.
constexpr double kParallelMinWork = 1 << 18;

// C[MR x NR] (row stride ldc) = sum over p < kc of the outer products of a[p*MR ..] and
// b[p*NR ..] (NR = NV vectors of VB bytes), added to C's old values when `accumulate`.
// Written with GCC/Clang vector extensions and always inlined, so the wrapper's target
// attribute below decides whether this becomes SSE2, AVX2 or AVX-512 code; the MR*NV
// accumulators stay in registers for the whole k loop.
template <typename T, int MR, int NV, int VB>
__attribute__((always_inline)) inline void microkernel(int64_t kc, const T* __restrict a,
                                                       const T* __restrict b, T* __restrict c,
                                                       int64_t ldc, bool accumulate) {
  typedef T V __attribute__((vector_size(VB)));
  constexpr int L = VB / sizeof(T);
  V acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = V{};
  for (int64_t p = 0; p < kc; ++p, a += MR, b += NV * L) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], b + v * L, VB);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] += a[i] * bv[v];
  }
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      T* dst = c + i * ldc + v * L;
      if (accumulate) {
        V old;
        std::memcpy(&old, dst, VB);
        acc[i][v] = old + acc[i][v];
      }
      std::memcpy(dst, &acc[i][v], VB);
    }
}

template <typename T>
using MicroKernelFn = void (*)(int64_t, const T*, const T*, T*, int64_t, bool);

template <typename T>
struct MicroKernel {
  MicroKernelFn<T> fn;
  int mr, nr;
  // The same with fewer rows (and the same nr, so that B packs alike), for C with few rows:
  // a recurrent step's M = batch of 16, 32 or 64 fills 8-row tiles exactly, not 12-row ones.
  MicroKernelFn<T> short_fn;
  int short_mr;
  // Fewer still for a C of a few rows (a decoder step, M = 1..4), where the work is reading B
  // and the padded rows of a larger tile would double the multiply-adds.
  MicroKernelFn<T> tiny_fn;
  int tiny_mr;
  const char* isa;
};

constexpr int kMaxTile = 12 * 32;  // elements in the largest MR x NR tile below (float, AVX-512)

// Tile shapes: MR x (2 vectors) accumulators plus two B vectors and a broadcast fit the
// register file (32 zmm; 16 ymm; 16 xmm).
template <typename T, int MR, int VB>
struct TileShape {
  static constexpr int mr = MR, nv = 2, vb = VB, nr = nv * VB / int(sizeof(T));
  static_assert(mr * nr <= kMaxTile);
};
template <typename T>
using Avx512Tile = TileShape<T, 12, 64>;
template <typename T>
using Avx512ShortTile = TileShape<T, 8, 64>;
template <typename T>
using Avx512TinyTile = TileShape<T, 4, 64>;
template <typename T>
using Avx2Tile = TileShape<T, 6, 32>;
template <typename T>
using Avx2ShortTile = TileShape<T, 4, 32>;
template <typename T>
using Avx2TinyTile = TileShape<T, 2, 32>;
template <typename T>
using GenericTile = TileShape<T, 4, 16>;

#if defined(__x86_64__) || defined(__i386__)
template <typename T, typename S>
__attribute__((target("avx512f,fma"))) void microkernel_avx512(int64_t kc, const T* a,
                                                                const T* b, T* c, int64_t ldc,
                                                                bool accumulate) {
  microkernel<T, S::mr, S::nv, S::vb>(kc, a, b, c, ldc, accumulate);
}
template <typename T, typename S>
__attribute__((target("avx2,fma"))) void microkernel_avx2(int64_t kc, const T* a, const T* b,
                                                          T* c, int64_t ldc, bool accumulate) {
  microkernel<T, S::mr, S::nv, S::vb>(kc, a, b, c, ldc, accumulate);
}
#endif
template <typename T>
void microkernel_generic(int64_t kc, const T* a, const T* b, T* c, int64_t ldc,
                         bool accumulate) {
  using S = GenericTile<T>;
  microkernel<T, S::mr, S::nv, S::vb>(kc, a, b, c, ldc, accumulate);
}

template <typename T, typename S, typename Short, typename Tiny>
MicroKernel<T> make_microkernel(MicroKernelFn<T> fn, MicroKernelFn<T> short_fn,
                                MicroKernelFn<T> tiny_fn, const char* isa) {
  static_assert(S::nr == Short::nr && S::nr == Tiny::nr);
  return {fn, S::mr, S::nr, short_fn, Short::mr, tiny_fn, Tiny::mr, isa};
}

// The widest micro-kernel this CPU runs. UNET_CPU_ISA=avx2 or =generic picks a narrower
// one instead, so that tests can run every kernel on one machine.
template <typename T>
MicroKernel<T> pick_microkernel() {
  const char* env = std::getenv("UNET_CPU_ISA");
  std::string want = env ? env : "";
  if (want != "avx2" && want != "generic") want.clear();
#if defined(__x86_64__) || defined(__i386__)
  if (want.empty() && __builtin_cpu_supports("avx512f"))
    return make_microkernel<T, Avx512Tile<T>, Avx512ShortTile<T>, Avx512TinyTile<T>>(
        microkernel_avx512<T, Avx512Tile<T>>, microkernel_avx512<T, Avx512ShortTile<T>>,
        microkernel_avx512<T, Avx512TinyTile<T>>, "avx512");
  if (want != "generic" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return make_microkernel<T, Avx2Tile<T>, Avx2ShortTile<T>, Avx2TinyTile<T>>(
        microkernel_avx2<T, Avx2Tile<T>>, microkernel_avx2<T, Avx2ShortTile<T>>,
        microkernel_avx2<T, Avx2TinyTile<T>>, "avx2");
#endif
  return make_microkernel<T, GenericTile<T>, GenericTile<T>, GenericTile<T>>(
      microkernel_generic<T>, microkernel_generic<T>, microkernel_generic<T>, "generic");
}

template <typename T>
const MicroKernel<T>& microkernel_for_this_cpu() {
  static const MicroKernel<T> k = pick_microkernel<T>();
  return k;
}

#if defined(__x86_64__) || defined(__i386__)
bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}
#endif

// How many k ahead the packer asks for the rows of an operand whose k runs across rows.
constexpr int64_t kPrefetchRows = 16;

// Packs rows [r0, r0+n) x k in [k0, k0+kc) of an operand into panels of R rows, each
// panel k-major (dst[p*R + r]) as the micro-kernel reads it; the last panel is padded
// with zeros. With kDeriv, values are scaled by act'(dpre) on the way (see GemmOperand).
template <bool kDeriv, typename T>
void pack_impl(const GemmOperand<T>& s, int64_t r0, int64_t n, int64_t k0, int64_t kc, int R,
               T* dst) {
  auto value = [&s](int64_t offset) {
    T v = s.data[offset];
    if constexpr (kDeriv) v *= activation_derivative(s.dact, s.dpre[offset]);
    return v;
  };
  if (n % R) {  // the last panel's missing rows
    T* last = dst + n / R * R * kc;
    std::fill(last, last + R * kc, T(0));
  }
  if (s.k_stride == 1) {
    for (int64_t q = 0; q < n; q += R, dst += R * kc) {
      const int64_t rows = std::min<int64_t>(R, n - q);
      int64_t done = 0;  // k packed by whole 16 x 16 blocks (full panels of float B)
#if defined(__x86_64__) || defined(__i386__)
      if constexpr (!kDeriv && sizeof(T) == 4) {
        if (rows == R && R % 16 == 0 && cpu_has_avx512f())
          for (; done + 16 <= kc; done += 16)
            for (int i0 = 0; i0 < R; i0 += 16)
              transpose16x16_32bit(s.data + (r0 + q + i0) * s.row_stride + k0 + done,
                                   s.row_stride * int64_t(sizeof(T)), dst + done * R + i0,
                                   R * int64_t(sizeof(T)));
      }
#endif
      // Rows run along k: copy a strip of kStrip values from one row, then the next. A
      // strip is long enough for the hardware prefetcher to stream the row and short enough
      // for the packed strip to stay in L1. (Reading all rows side by side, one k at a
      // time, thrashes L1 when the row stride is a multiple of 4 KiB.)
      constexpr int64_t kStrip = 128;
      for (int64_t p0 = done; p0 < kc; p0 += kStrip) {
        const int64_t p1 = std::min(kc, p0 + kStrip);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t base = (r0 + q + r) * s.row_stride + k0;
          for (int64_t p = p0; p < p1; ++p) dst[p * R + r] = value(base + p);
        }
      }
    }
  } else {
    // k runs across rows (B = W [K, N] in x W): each k is read along all n rows before the
    // next, one stream the prefetcher follows, and scattered to the panels. (Panel by panel,
    // every k would be a separate short stream, each line a cache miss of its own.)
    for (int64_t p = 0; p < kc; ++p) {
      const int64_t base = r0 * s.row_stride + (k0 + p) * s.k_stride;
      if (s.row_stride == 1 && p + kPrefetchRows < kc) {
        // The rows are short (one thread's few panels): ask for one well ahead, line by
        // line, as the prefetcher would not start such a stream in time on its own.
        const char* ahead = reinterpret_cast<const char*>(s.data + base + kPrefetchRows * s.k_stride);
        for (int64_t line = 0; line < n * int64_t(sizeof(T)); line += 64) __builtin_prefetch(ahead + line);
      }
      for (int64_t q = 0; q < n; q += R) {
        const int64_t rows = std::min<int64_t>(R, n - q);
        T* d = dst + q * kc + p * R;  // panel q / R starts at q * kc
        if (s.row_stride == 1)
          for (int64_t r = 0; r < rows; ++r) d[r] = value(base + q + r);
        else
          for (int64_t r = 0; r < rows; ++r) d[r] = value(base + (q + r) * s.row_stride);
      }
    }
  }
}

template <typename T>
void pack(const GemmOperand<T>& s, int64_t r0, int64_t n, int64_t k0, int64_t kc, int R,
          T* dst) {
  if (s.dpre)
    pack_impl<true>(s, r0, n, k0, kc, R, dst);
  else
    pack_impl<false>(s, r0, n, k0, kc, R, dst);
}

// Stores the m x n corner of an accumulator tile (row length nr) at c, or adds it to
// what is there: the path for tiles that overhang C's edge. Same arithmetic as the
// micro-kernel's own store, so edge tiles round like the others.
template <typename T>
void store_partial_tile(const T* acc, int nr, int64_t m, int64_t n, T* c, int64_t ldc,
                        bool accumulate) {
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j)
      c[r * ldc + j] = accumulate ? c[r * ldc + j] + acc[r * nr + j] : acc[r * nr + j];
}

// The epilogue on a finished m x n block of C at (i0, j0), while it is still in L1.
template <typename T>
void apply_epilogue(const GemmEpilogue<T>& ep, int64_t m, int64_t n, T* C, int64_t ldc,
                    int64_t i0, int64_t j0) {
  for (int64_t r = 0; r < m; ++r) {
    const int64_t row = (i0 + r) * ldc + j0;
    T* c = C + row;
    if (ep.bias)
      for (int64_t j = 0; j < n; ++j) c[j] += ep.bias[j0 + j];
    if (ep.preact)  // a plain loop: a memcpy call per short row costs more than the copy
      for (int64_t j = 0; j < n; ++j) ep.preact[row + j] = c[j];
    if (ep.act != Activation::None)
      for (int64_t j = 0; j < n; ++j) c[j] = activation_forward(ep.act, c[j]);
  }
}

// The micro-kernel for a C of M rows: the tiny tiles where they hold all M rows, the short
// ones where C has few rows and they pad fewer of them.
template <typename T>
struct Tiles {
  MicroKernelFn<T> fn;
  int mr, nr;
};

template <typename T>
Tiles<T> tiles_for(int64_t M) {
  const MicroKernel<T>& uk = microkernel_for_this_cpu<T>();
  if (M <= uk.tiny_mr) return {uk.tiny_fn, uk.tiny_mr, uk.nr};
  if (M <= MC && round_up(M, uk.short_mr) < round_up(M, uk.mr))
    return {uk.short_fn, uk.short_mr, uk.nr};
  return {uk.fn, uk.mr, uk.nr};
}

// One k slice (kc deep) for rows [i0, i0 + m) of C and the panels [q0, q1) of the column
// block at jc (nc wide): a packed A block (m rows) times packed B panels (b_panels: panel q0,
// then the next ones), added to C unless `first`, then the epilogue after the `last` slice,
// while the tile is in L1.
template <typename T>
void multiply_panels(const Tiles<T>& t, int64_t kc, const T* a, int64_t m, const T* b_panels,
                     int64_t q0, int64_t q1, int64_t nc, T* C, int64_t ldc, int64_t i0,
                     int64_t jc, bool first, bool last, const GemmEpilogue<T>& ep) {
  alignas(64) T edge[kMaxTile];  // a whole tile for the micro-kernel at C's edges
  const int MR = t.mr, NR = t.nr;
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t j0 = q * NR, n = std::min<int64_t>(NR, nc - j0);
    const T* b = b_panels + (q - q0) * NR * kc;
    for (int64_t ir = 0; ir < m; ir += MR) {
      const int64_t mr = std::min<int64_t>(MR, m - ir);
      T* c = C + (i0 + ir) * ldc + jc + j0;
      if (mr == MR && n == NR) {
        t.fn(kc, a + ir * kc, b, c, ldc, !first);
      } else {
        t.fn(kc, a + ir * kc, b, edge, NR, false);
        store_partial_tile(edge, NR, mr, n, c, ldc, !first);
      }
      if (last) apply_epilogue(ep, mr, n, C, ldc, i0 + ir, jc + j0);
    }
  }
}

// The blocked product. B comes either as an operand packed here, block by block, or
// already packed whole (`prepacked`, laid out by pack_operand).
template <typename T>
void gemm_blocked(int64_t M, int64_t N, int64_t K, const GemmOperand<T>& A,
                  const GemmOperand<T>* B, const T* prepacked, T* C, int64_t ldc,
                  const GemmEpilogue<T>& ep) {
  if (M <= 0 || N <= 0) return;
  const Tiles<T> tiles = tiles_for<T>(M);
  const int MR = tiles.mr, NR = tiles.nr;

  const double flops = double(M) * double(N) * double(std::max<int64_t>(K, 1));
  const int nt = flops < kParallelMinWork ? 1 : max_threads();
  const ThreadSplit work = split_work(M, N, nt, MR, NR, MC, NC);
  const int64_t n_iblocks = work.n_iblocks, n_splits = work.n_splits, mc = work.mc;

  // Who packs B: nobody (prepacked), each thread the panels it multiplies (a single row
  // block: nothing is shared, so no thread waits for another), or the threads together, one
  // contiguous range of panels each, for all the row blocks.
  const bool b_private = !prepacked && n_iblocks == 1;
  const bool b_shared = !prepacked && !b_private;

  // Allocate before the parallel region: nothing may throw inside it. B: the shared block,
  // or each thread's kPrivatePanels.
  const int64_t kc_max = std::clamp<int64_t>(K, 1, KC);
  const int64_t b_cols = b_shared ? round_up(std::min(N, NC), NR) : b_private ? nt * kPrivatePanels * NR : 0;
  auto b_pack = aligned_array<T>(b_cols * kc_max);
  auto a_pack = aligned_array<T>(nt * mc * kc_max);

#pragma omp parallel num_threads(nt)
  {
    T* a_mine = a_pack.get() + thread_id() * mc * kc_max;
    T* b_mine = b_pack.get() + thread_id() * kPrivatePanels * NR * kc_max;

    for (int64_t jc = 0; jc < N; jc += NC) {
      const int64_t nc = std::min(NC, N - jc);
      const int64_t n_panels = ceil_div(nc, NR);
      // K == 0 still makes one empty pass, so that the epilogue writes act(bias).
      for (int64_t pc = 0; pc == 0 || pc < K; pc += KC) {
        const int64_t kc = std::min(KC, K - pc);
        const bool first = pc == 0, last = pc + KC >= K;

        const T* b_block = prepacked ? prepacked + jc * K + round_up(nc, NR) * pc : b_pack.get();
        if (b_shared) {
#pragma omp for schedule(static)
          for (int64_t part = 0; part < nt; ++part) {  // a contiguous range of panels each
            const int64_t q0 = n_panels * part / nt, q1 = n_panels * (part + 1) / nt;
            pack(*B, jc + q0 * NR, std::min(nc, q1 * NR) - q0 * NR, pc, kc, NR,
                 b_pack.get() + q0 * NR * kc);
          }
          // (implicit barrier: the B block is complete)
        }

        // Static schedule: each item (and so each C tile) has the same thread in every
        // slice, which therefore needs no barrier unless B is shared.
        int64_t packed_block = -1;
#pragma omp for schedule(static) nowait
        for (int64_t item = 0; item < n_iblocks * n_splits; ++item) {
          const int64_t ib = item / n_splits, split = item % n_splits;
          const int64_t i0 = work.row(ib, MR), m = std::min(work.row(ib + 1, MR), M) - i0;
          if (ib != packed_block) {
            pack(A, i0, m, pc, kc, MR, a_mine);
            packed_block = ib;
          }
          const int64_t q0 = n_panels * split / n_splits, q1 = n_panels * (split + 1) / n_splits;
          if (!b_private) {
            multiply_panels(tiles, kc, a_mine, m, b_block + q0 * NR * kc, q0, q1, nc, C, ldc, i0,
                            jc, first, last, ep);
            continue;
          }
          // A few panels at a time into the thread's own buffer, used while in L2.
          for (int64_t qa = q0; qa < q1; qa += kPrivatePanels) {
            const int64_t qb = std::min(q1, qa + kPrivatePanels);
            pack(*B, jc + qa * NR, std::min(nc, qb * NR) - qa * NR, pc, kc, NR, b_mine);
            multiply_panels(tiles, kc, a_mine, m, b_mine, qa, qb, nc, C, ldc, i0, jc, first, last,
                            ep);
          }
        }
        if (b_shared) {
#pragma omp barrier
          // (nobody still reads the B block the next slice overwrites)
        }
      }
    }
  }
}

}  // namespace

void AlignedFree::operator()(void* p) const { std::free(p); }

// Whole cache lines, and aligned vector loads in the micro-kernels.
template <typename T>
AlignedArray<T> aligned_array(int64_t n) {
  const size_t bytes = static_cast<size_t>(round_up(std::max<int64_t>(n, 1) * sizeof(T), 64));
  T* p = static_cast<T*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  return AlignedArray<T>(p);
}

template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const GemmOperand<T>& A, const GemmOperand<T>& B,
          T* C, int64_t ldc, const GemmEpilogue<T>& ep) {
  gemm_blocked<T>(M, N, K, A, &B, nullptr, C, ldc, ep);
}

// The blocks gemm_blocked packs one at a time, stored one after the other: column block
// jc (NC wide, a multiple of NR) starts at jc * K, and its k slice pc at round_up(nc, NR) * pc
// within it, each slice being round_up(nc, NR) / NR panels of NR x kc.
template <typename T>
PackedOperand<T> pack_operand(int64_t N, int64_t K, const GemmOperand<T>& B) {
  const int NR = microkernel_for_this_cpu<T>().nr;
  PackedOperand<T> out{N, K, aligned_array<T>(round_up(std::max<int64_t>(N, 0), NR) * K)};
  if (N <= 0 || K <= 0) return out;
  T* dst = out.data.get();
  const int64_t n_panels = ceil_div(N, NR);
  const int nt = double(N) * double(K) < kParallelMinWork ? 1 : max_threads();
  // One panel (NR columns, all of K) per iteration; its slices go where gemm_blocked looks.
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t q = 0; q < n_panels; ++q) {
    const int64_t j = q * NR, jc = j / NC * NC, nc = std::min(NC, N - jc);
    const int64_t n = std::min<int64_t>(NR, N - j);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      pack(B, j, n, pc, kc, NR, dst + jc * K + round_up(nc, NR) * pc + (j - jc) * kc);
    }
  }
  return out;
}

template <typename T>
void gemm(int64_t M, const GemmOperand<T>& A, const PackedOperand<T>& B, T* C, int64_t ldc,
          const GemmEpilogue<T>& ep) {
  gemm_blocked<T>(M, B.N, B.K, A, nullptr, B.data.get(), C, ldc, ep);
}

template <typename T>
int64_t gemm_panel_width() {
  return microkernel_for_this_cpu<T>().nr;
}

template <typename T>
int64_t packed_rows_size(int64_t M, int64_t K) {
  return round_up(std::max<int64_t>(M, 1), tiles_for<T>(M).mr) * std::max<int64_t>(K, 1);
}

// Slice pc of A (all M rows, k in [pc, pc + KC)) at round_up(M, mr) * pc: what gemm_blocked
// packs per block, for all of K at once.
template <typename T>
void pack_rows(int64_t M, int64_t K, const GemmOperand<T>& A, T* dst) {
  const int MR = tiles_for<T>(M).mr;
  for (int64_t pc = 0; pc < K; pc += KC)
    pack(A, 0, M, pc, std::min(KC, K - pc), MR, dst + round_up(M, MR) * pc);
}

template <typename T>
void gemm_packed_columns(int64_t M, const T* a_packed, const PackedOperand<T>& B, int64_t j0,
                         int64_t j1, T* C, int64_t ldc, const GemmEpilogue<T>& ep) {
  if (M <= 0 || j1 <= j0) return;
  const Tiles<T> tiles = tiles_for<T>(M);
  const int64_t K = B.K, NR = tiles.nr;
  for (int64_t jc = j0 / NC * NC; jc < j1; jc += NC) {
    const int64_t nc = std::min(NC, B.N - jc);
    const int64_t q0 = std::max<int64_t>(j0 - jc, 0) / NR;
    const int64_t q1 = ceil_div(std::min(j1 - jc, nc), NR);
    for (int64_t pc = 0; pc == 0 || pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      multiply_panels(tiles, kc, a_packed + round_up(M, tiles.mr) * pc, M,
                      B.data.get() + jc * K + round_up(nc, NR) * pc + q0 * NR * kc, q0, q1, nc, C, ldc, 0, jc,
                      pc == 0, pc + KC >= K, ep);
    }
  }
}

const char* gemm_kernel_isa() { return microkernel_for_this_cpu<float>().isa; }

#define UNET_INSTANTIATE(T)                                                                    \
  template void gemm<T>(int64_t, int64_t, int64_t, const GemmOperand<T>&, const GemmOperand<T>&, \
                        T*, int64_t, const GemmEpilogue<T>&);                                    \
  template void gemm<T>(int64_t, const GemmOperand<T>&, const PackedOperand<T>&, T*, int64_t,    \
                        const GemmEpilogue<T>&);                                                 \
  template PackedOperand<T> pack_operand<T>(int64_t, int64_t, const GemmOperand<T>&);            \
  template AlignedArray<T> aligned_array<T>(int64_t);                                            \
  template int64_t gemm_panel_width<T>();                                                        \
  template int64_t packed_rows_size<T>(int64_t, int64_t);                                        \
  template void pack_rows<T>(int64_t, int64_t, const GemmOperand<T>&, T*);                       \
  template void gemm_packed_columns<T>(int64_t, const T*, const PackedOperand<T>&, int64_t,      \
                                       int64_t, T*, int64_t, const GemmEpilogue<T>&);
UNET_INSTANTIATE(float)
UNET_INSTANTIATE(double)
#undef UNET_INSTANTIATE
template AlignedArray<uint32_t> aligned_array<uint32_t>(int64_t);  // bfloat16 pairs (matmul_bf16.cpp)

}  // namespace unet::cpu
