// Direct forward convolution: the GEMM's micro-kernel shape (MR filters x NR positions in
// registers), with the positions read straight from the input instead of from packed
// im2col columns.
//
// Each image is first copied once, zero-padded and split by stride phase: plane
// (ci, py, px) holds x_pad[i * stride_h + py][j * stride_w + px] as rows of Wph. Output
// position (oy, ox) is numbered j' = oy * Wph + ox, and kernel tap k = (ci, ky, kx) then
// reads xs[offset[k] + j'] for one offset per tap: NR consecutive positions are one
// vector load per tap, whatever the stride and padding. Positions with ox >= W_out are
// computed and dropped (Wph - W_out of every Wph).
//
// Each output element is one kernel call's sum over k in order, so the thread count
// changes nothing.
#include "conv_direct.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "gemm.h"
#include "threads.h"

namespace unet::cpu {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// c[i * ldc + j] = bias[i] + sum over k of w[k*MR + i] * xs[offset[k] + j], i < MR,
// j < NR (NR = NV vectors of VB bytes). Always inlined into the wrappers below, whose
// target attribute picks the ISA.
template <typename T, int MR, int NV, int VB>
__attribute__((always_inline)) inline void direct_tile(int64_t K, const int64_t* __restrict offset,
                                                       const T* __restrict xs,
                                                       const T* __restrict w,
                                                       const T* __restrict bias, T* __restrict c,
                                                       int64_t ldc) {
  typedef T V __attribute__((vector_size(VB)));
  constexpr int L = VB / sizeof(T);
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V{} + bias[i];
  for (int64_t k = 0; k < K; ++k, w += MR) {
    const T* b = xs + offset[k];
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], b + v * L, VB);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += w[i] * bv[v];
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) std::memcpy(c + i * ldc + v * L, &acc[i][v], VB);
}

template <typename T>
using DirectFn = void (*)(int64_t, const int64_t*, const T*, const T*, const T*, T*, int64_t);

template <typename T>
struct DirectKernel {
  DirectFn<T> fn;
  int mr, nr;
};

// The largest tile: 8 filters x 2 AVX-512 vectors of float.
constexpr int kMaxTile = 8 * 32;

#if defined(__x86_64__) || defined(__i386__)
template <typename T>
__attribute__((target("avx512f,fma"))) void direct_avx512(int64_t K, const int64_t* offset,
                                                           const T* xs, const T* w, const T* bias, T* c, int64_t ldc) {
  direct_tile<T, 8, 2, 64>(K, offset, xs, w, bias, c, ldc);
}
template <typename T>
__attribute__((target("avx2,fma"))) void direct_avx2(int64_t K, const int64_t* offset,
                                                     const T* xs, const T* w, const T* bias, T* c, int64_t ldc) {
  direct_tile<T, 6, 2, 32>(K, offset, xs, w, bias, c, ldc);
}
#endif
template <typename T>
void direct_generic(int64_t K, const int64_t* offset, const T* xs, const T* w, const T* bias, T* c, int64_t ldc) {
  direct_tile<T, 4, 2, 16>(K, offset, xs, w, bias, c, ldc);
}

// The same ISA as the GEMM (so that UNET_CPU_ISA narrows both).
template <typename T>
DirectKernel<T> direct_kernel() {
  const std::string isa = gemm_kernel_isa();
  const int per_vector = 16 / int(sizeof(T));  // elements in 16 bytes
#if defined(__x86_64__) || defined(__i386__)
  if (isa == "avx512") return {direct_avx512<T>, 8, 2 * 4 * per_vector};
  if (isa == "avx2") return {direct_avx2<T>, 6, 2 * 2 * per_vector};
#endif
  return {direct_generic<T>, 4, 2 * per_vector};
}

// The padded, phase-split copy of one image (see the top of the file).
struct PhaseSplit {
  int64_t sh, sw, Hph, Wph, plane;  // plane = Hph * Wph
  PhaseSplit(const ConvGeometry& g)
      : sh(g.stride_h), sw(g.stride_w),
        Hph(ceil_div(g.H + g.pad_top + g.pad_bottom, g.stride_h)),
        Wph(ceil_div(g.W + g.pad_left + g.pad_right, g.stride_w)), plane(Hph * Wph) {}
  // Where tap (ci, ky, kx) reads position j' = 0.
  int64_t offset(const ConvGeometry& g, int64_t ci, int64_t ky, int64_t kx) const {
    const int64_t ry = ky * g.dilation_h, rx = kx * g.dilation_w;
    return ((ci * sh + ry % sh) * sw + rx % sw) * plane + ry / sh * Wph + rx / sw;
  }
};

template <typename T>
void split_image(const ConvGeometry& g, const PhaseSplit& s, const T* x, T* xs) {
  const int64_t planes = g.C_in * s.sh * s.sw;
#pragma omp parallel for schedule(static) if (planes * s.plane > (int64_t(1) << 15))
  for (int64_t pl = 0; pl < planes; ++pl) {
    const int64_t ci = pl / (s.sh * s.sw), py = pl / s.sw % s.sh, px = pl % s.sw;
    T* dst = xs + pl * s.plane;
    for (int64_t i = 0; i < s.Hph; ++i, dst += s.Wph) {
      const int64_t iy = i * s.sh + py - g.pad_top;
      if (iy < 0 || iy >= g.H) {
        std::fill(dst, dst + s.Wph, T(0));
        continue;
      }
      // ix = j * sw + px - pad_left inside [0, W) for j in [lo, hi)
      const int64_t ix0 = px - g.pad_left;
      const int64_t lo = std::min(s.Wph, ix0 >= 0 ? 0 : ceil_div(-ix0, s.sw));
      const int64_t hi = std::max(lo, std::min(s.Wph, ceil_div(g.W - ix0, s.sw)));
      const T* src = x + (ci * g.H + iy) * g.W + ix0;
      std::fill(dst, dst + lo, T(0));
      if (s.sw == 1)
        std::copy(src + lo, src + hi, dst + lo);
      else if (s.sw == 2)  // a constant stride, which the compiler vectorizes
        for (int64_t j = lo; j < hi; ++j) dst[j] = src[2 * j];
      else
        for (int64_t j = lo; j < hi; ++j) dst[j] = src[j * s.sw];
      std::fill(dst + hi, dst + s.Wph, T(0));
    }
  }
}

}  // namespace

template <typename T>
void conv_forward_direct(const ConvForwardArgs<T>& a) {
  const ConvGeometry& g = a.geo;
  const DirectKernel<T> kern = direct_kernel<T>();
  const int MR = kern.mr, NR = kern.nr;
  const int64_t K = g.K(), Cog = g.C_out_group(), Cig = g.C_in_group();
  const int64_t H_out = g.H_out(), W_out = g.W_out(), P = H_out * W_out;
  const PhaseSplit s(g);
  const int64_t span = H_out * s.Wph;  // positions j', the dropped ones included
  const int64_t blocks = ceil_div(span, NR), co_blocks = ceil_div(Cog, MR);

  // Allocate before the parallel regions: nothing may throw inside them.
  // xs, with slack for the last block's reads past the end of the last plane.
  // Images go to threads whole when there are enough of them (no thread team per image,
  // one xs each); else one image at a time, its blocks shared among the threads.
  const int64_t xs_size = g.C_in * g.stride_h * g.stride_w * s.plane, xs_stride = xs_size + NR + s.Wph;
  const double image_work = double(span) * double(K) * double(Cog) * double(g.groups);
  const int nt = max_threads();
  const bool by_images = nt > 1 && g.N >= nt && image_work * double(g.N) > double(1 << 18);
  const int n_xs = by_images ? nt : 1;
  auto xs = aligned_array<T>(n_xs * xs_stride);
  for (int i = 0; i < n_xs; ++i)
    std::fill(xs.get() + i * xs_stride + xs_size, xs.get() + (i + 1) * xs_stride, T(0));
  // Filters in tiles of MR, k-major within a tile, and their biases (rows past Cog zero).
  auto w = aligned_array<T>(g.groups * co_blocks * K * MR);
  auto bias = aligned_array<T>(g.groups * co_blocks * MR);
  std::vector<int64_t> offsets(g.groups * K);
  for (int64_t group = 0; group < g.groups; ++group) {
    for (int64_t cb = 0; cb < co_blocks; ++cb) {
      T* dst = w.get() + (group * co_blocks + cb) * K * MR;
      for (int i = 0; i < MR; ++i) {
        const int64_t c = cb * MR + i, co = group * Cog + c;
        bias[(group * co_blocks + cb) * MR + i] = c < Cog && a.bias ? a.bias[co] : T(0);
        for (int64_t k = 0; k < K; ++k) dst[k * MR + i] = c < Cog ? a.weight[co * K + k] : T(0);
      }
    }
    for (int64_t k = 0; k < K; ++k) {
      const int64_t taps = g.KH * g.KW;
      offsets[group * K + k] = s.offset(g, group * Cig + k / taps, k % taps / g.KW, k % g.KW);
    }
  }
  // Without act and preact, a block of MR whole filters and NR positions inside one output
  // row goes straight into out; other blocks go through a tile.
  const bool plain = a.act == Activation::None && !a.preact;

  auto run_image = [&](int64_t n, T* image_xs, bool share_blocks) {
    split_image(g, s, a.x + n * g.C_in * g.H * g.W, image_xs);
    const int64_t items = g.groups * blocks;
#pragma omp parallel for schedule(static) if (share_blocks)
    for (int64_t item = 0; item < items; ++item) {
      alignas(64) T tile[kMaxTile];
      const int64_t group = item / blocks, j0 = item % blocks * NR;
      const int64_t oy0 = j0 / s.Wph, ox0 = j0 % s.Wph;
      const bool in_row = ox0 + NR <= W_out;
      const int64_t* off = offsets.data() + group * K;
      for (int64_t cb = 0; cb < co_blocks; ++cb) {
        const int64_t wb = group * co_blocks + cb;
        const int64_t rows = std::min<int64_t>(MR, Cog - cb * MR);
        const int64_t o0 = (n * g.C_out + group * Cog + cb * MR) * P;  // row 0 of this block
        if (plain && in_row && rows == MR) {
          kern.fn(K, off, image_xs + j0, w.get() + wb * K * MR, bias.get() + wb * MR,
                  a.out + o0 + oy0 * W_out + ox0, P);
          continue;
        }
        kern.fn(K, off, image_xs + j0, w.get() + wb * K * MR, bias.get() + wb * MR, tile, NR);
        // Out by rows of the image: the positions of this block that exist.
        for (int64_t j = j0; j < std::min(j0 + NR, span);) {
          const int64_t oy = j / s.Wph, ox = j % s.Wph;
          const int64_t run = std::min(j0 + NR, (oy + 1) * s.Wph) - j;  // to the row's end
          const int64_t len = std::max<int64_t>(std::min(run, W_out - ox), 0);
          for (int64_t i = 0; i < rows; ++i) {
            const T* src = tile + i * NR + (j - j0);
            const int64_t o = o0 + i * P + oy * W_out + ox;
            if (a.preact) std::copy(src, src + len, a.preact + o);
            T* dst = a.out + o;
            if (a.act == Activation::None)
              std::copy(src, src + len, dst);
            else
              for (int64_t q = 0; q < len; ++q) dst[q] = activation_forward(a.act, src[q]);
          }
          j += run;
        }
      }
    }
  };
  if (by_images) {
#pragma omp parallel num_threads(nt)
    {
      T* mine = xs.get() + thread_id() * xs_stride;
#pragma omp for schedule(static)
      for (int64_t n = 0; n < g.N; ++n) run_image(n, mine, false);
    }
  } else {
    for (int64_t n = 0; n < g.N; ++n) run_image(n, xs.get(), image_work > double(1 << 18));
  }
}

template <typename T>
bool conv_direct_pays(const ConvGeometry& g) {
  if (g.KH * g.KW == 1) return false;  // im2col is a plain copy there
  const int64_t NR = direct_kernel<T>().nr;
  const int64_t computed = ceil_div(g.H_out() * PhaseSplit(g).Wph, NR) * NR;
  return computed * 20 <= g.H_out() * g.W_out() * 23;  // at most 15% more than needed
}

template bool conv_direct_pays<float>(const ConvGeometry&);
template bool conv_direct_pays<double>(const ConvGeometry&);
template void conv_forward_direct<float>(const ConvForwardArgs<float>&);
template void conv_forward_direct<double>(const ConvForwardArgs<double>&);

}  // namespace unet::cpu
