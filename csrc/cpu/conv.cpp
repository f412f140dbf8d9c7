// CPU convolution (math in unet/conv.h) as GEMMs over tiles of output positions.
//
// The output positions of all images are numbered q = n * P + p (P = H_out * W_out) and
// cut into tiles of Pt, so that one GEMM covers many images when the images are small (a
// sentence of 50 words) and the workspace stays bounded when they are large. Per group and
// tile:
//   forward          col[K, Pt] = im2col(x);  tile[C_out_g, Pt] = W_g col + bias (W_g and
//                    the bias packed once), written straight into out (NCHW) when the tile
//                    lies in one image, else staged and copied by rows
//   backward-data    gt[C_out_g, Pt] = gathered g;  col = W_g^T gt;  col2im adds col into grad_x
//   backward-weight  col = im2col(x);  grad_W_g += gt col^T  (tiles added in order)
// Kernels larger than 1 x 1 on wide images skip im2col: the forward pass and, with stride
// 1, backward-data run the direct kernel of conv_direct.cpp (conv_direct_pays decides).
// Depthwise convolutions (one input channel per group) have nothing to multiply as a
// matrix and run a direct kernel of their own.
//
// Every element is summed in an order fixed by the shapes alone (GEMMs are
// thread-count independent, the passes around them give each output element to one thread),
// so results do not depend on the number of threads.
#include "unet/conv.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <vector>

#include "conv_direct.h"
#include "gemm.h"
#include "threads.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace unet::cpu {
namespace {

// Workspace budget of one tile (elements): col + gathered gradient or output tile.
constexpr int64_t kTileElements = int64_t(1) << 18;
// The forward pass's per-thread budget (col, its packed copy, the output tile): about a
// core's L2, so that a tile goes from im2col through the GEMM to out without leaving it.
constexpr int64_t kThreadTileBytes = int64_t(1) << 20;
// Below this many elements a pass is not worth a thread team.
constexpr int64_t kParallelMinElements = int64_t(1) << 15;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The j in [0, len) for which start + j * step lies in [0, limit): [lo, hi), maybe empty.
struct Range {
  int64_t lo, hi;
};
Range valid_range(int64_t start, int64_t step, int64_t len, int64_t limit) {
  const int64_t lo = start >= 0 ? 0 : ceil_div(-start, step);
  const int64_t hi = start >= limit ? 0 : ceil_div(limit - start, step);
  return {std::min(lo, len), std::clamp(hi, std::min(lo, len), len)};
}

// Output positions [ox0, ox1) of row oy of image n, at column `col` of the tile.
struct Run {
  int64_t n, oy, ox0, ox1, col;
};

// The runs that make up the positions [q0, q1), into `runs` (which never needs more than
// q1 - q0 entries: reserve them, and this allocates nothing).
void runs_of(int64_t q0, int64_t q1, int64_t H_out, int64_t W_out, std::vector<Run>& runs) {
  runs.clear();
  const int64_t P = H_out * W_out;
  for (int64_t q = q0; q < q1;) {
    const int64_t n = q / P, p = q % P, oy = p / W_out, ox = p % W_out;
    const int64_t len = std::min(W_out - ox, q1 - q);
    runs.push_back({n, oy, ox, ox + len, q - q0});
    q += len;
  }
}

// The tile geometry shared by the passes of one group.
struct Tile {
  const ConvGeometry& g;
  int64_t group, H_out, W_out, Pt;
  const std::vector<Run>* runs;
  int64_t positions;  // columns in use: the positions of this tile
};

// For kernel tap (ky, kx), each run of the tile: fn(run, iy, ix of the run's first position,
// the range of its positions that read inside the input row, run length); a run whose row
// iy falls in the padding comes with iy = -1 and an empty range.
template <typename Fn>
void for_each_patch_run(const Tile& t, int64_t ky, int64_t kx, Fn&& fn) {
  const ConvGeometry& g = t.g;
  for (const Run& r : *t.runs) {
    const int64_t iy = r.oy * g.stride_h - g.pad_top + ky * g.dilation_h;
    const int64_t len = r.ox1 - r.ox0;
    const int64_t ix0 = r.ox0 * g.stride_w - g.pad_left + kx * g.dilation_w;
    const bool row_in = iy >= 0 && iy < g.H;
    const Range j = row_in ? valid_range(ix0, g.stride_w, len, g.W) : Range{0, 0};
    fn(r, row_in ? iy : -1, ix0, j, len);
  }
}

// col[k, c] = x at the input position that kernel tap k of tile column c reads (0 in the
// padding).
template <typename T>
void im2col(const Tile& t, const T* x, T* col) {
  const ConvGeometry& g = t.g;
  const int64_t K = g.K(), taps = g.KH * g.KW, sw = g.stride_w;
#pragma omp parallel for schedule(static) if (K * t.positions > kParallelMinElements)
  for (int64_t k = 0; k < K; ++k) {
    const int64_t ci = t.group * g.C_in_group() + k / taps, ky = k % taps / g.KW, kx = k % g.KW;
    T* row = col + k * t.Pt;
    for_each_patch_run(t, ky, kx, [&](const Run& r, int64_t iy, int64_t ix0, Range j, int64_t len) {
      T* d = row + r.col;
      std::fill(d, d + j.lo, T(0));
      if (j.hi > j.lo) {
        const T* src = x + ((r.n * g.C_in + ci) * g.H + iy) * g.W + ix0;
        if (sw == 1)
          std::memcpy(d + j.lo, src + j.lo, (j.hi - j.lo) * sizeof(T));
        else if (sw == 2)  // a constant stride, which the compiler vectorizes
          for (int64_t i = j.lo; i < j.hi; ++i) d[i] = src[2 * i];
        else
          for (int64_t i = j.lo; i < j.hi; ++i) d[i] = src[i * sw];
      }
      std::fill(d + j.hi, d + len, T(0));
    });
  }
}

// grad_x += the adjoint of im2col applied to col. Threads own input channels, so each
// element of grad_x is added to by one thread, tap after tap in order.
template <typename T>
void col2im(const Tile& t, const T* col, T* grad_x) {
  const ConvGeometry& g = t.g;
  const int64_t Cg = g.C_in_group(), sw = g.stride_w;
#pragma omp parallel for schedule(static) if (g.K() * t.positions > kParallelMinElements)
  for (int64_t c = 0; c < Cg; ++c) {
    const int64_t ci = t.group * Cg + c;
    for (int64_t ky = 0; ky < g.KH; ++ky)
      for (int64_t kx = 0; kx < g.KW; ++kx) {
        const T* row = col + ((c * g.KH + ky) * g.KW + kx) * t.Pt;
        for_each_patch_run(t, ky, kx, [&](const Run& r, int64_t iy, int64_t ix0, Range j, int64_t) {
          if (j.hi <= j.lo) return;
          T* dst = grad_x + ((r.n * g.C_in + ci) * g.H + iy) * g.W + ix0;
          const T* s = row + r.col;
          if (sw == 1)  // a unit stride, which the compiler vectorizes
            for (int64_t i = j.lo; i < j.hi; ++i) dst[i] += s[i];
          else
            for (int64_t i = j.lo; i < j.hi; ++i) dst[i * sw] += s[i];
        });
      }
  }
}

// out = act(z) and preact = z for the tile's output channels, z = tile[c, col] (the bias
// is already in): each run is one contiguous copy.
template <typename T>
void store_rows(const Tile& t, const ConvForwardArgs<T>& a, const T* tile) {
  const ConvGeometry& g = t.g;
  const int64_t Cog = g.C_out_group();
#pragma omp parallel for schedule(static) if (Cog * t.positions > kParallelMinElements)
  for (int64_t c = 0; c < Cog; ++c) {
    const int64_t co = t.group * Cog + c;
    for (const Run& r : *t.runs) {
      const int64_t offset = ((r.n * g.C_out + co) * t.H_out + r.oy) * t.W_out + r.ox0;
      const T* src = tile + c * t.Pt + r.col;
      const int64_t len = r.ox1 - r.ox0;
      if (a.preact) std::copy(src, src + len, a.preact + offset);
      T* dst = a.out + offset;
      if (a.act == Activation::None)
        std::copy(src, src + len, dst);
      else
        for (int64_t i = 0; i < len; ++i) dst[i] = activation_forward(a.act, src[i]);
    }
  }
}

// gt[c, col] = grad_out * act'(preact) for the tile's output channels.
template <typename T>
void gather_grad(const Tile& t, const ConvBackwardArgs<T>& a, T* gt) {
  const ConvGeometry& g = t.g;
  const int64_t Cog = g.C_out_group();
  const bool fused = a.act != Activation::None;
#pragma omp parallel for schedule(static) if (Cog * t.positions > kParallelMinElements)
  for (int64_t c = 0; c < Cog; ++c) {
    const int64_t co = t.group * Cog + c;
    for (const Run& r : *t.runs) {
      const int64_t offset = ((r.n * g.C_out + co) * t.H_out + r.oy) * t.W_out + r.ox0;
      const int64_t len = r.ox1 - r.ox0;
      T* dst = gt + c * t.Pt + r.col;
      const T* go = a.grad_out + offset;
      if (fused) {
        const T* z = a.preact + offset;
        for (int64_t i = 0; i < len; ++i) dst[i] = go[i] * activation_derivative(a.act, z[i]);
      } else {
        std::copy(go, go + len, dst);
      }
    }
  }
}

// How the output positions are cut into tiles of whole GEMM panels (`align` positions),
// about `budget` positions each: images that fill at least half a tile get tiles of their
// own (a tile is then a matrix with row stride P inside out and grad_out), unless that
// would pad them by more than 1/16; smaller images share tiles.
struct TilePlan {
  int64_t P, total, Pt, tiles_per_image, n_tiles;
  bool per_image;
  int64_t image(int64_t i) const { return per_image ? i / tiles_per_image : -1; }
  int64_t first(int64_t i) const {  // within its image when per_image, else overall
    return per_image ? i % tiles_per_image * Pt : i * Pt;
  }
  int64_t size(int64_t i) const { return std::min((per_image ? P : total) - first(i), Pt); }
  int64_t start(int64_t i) const { return per_image ? image(i) * P + first(i) : first(i); }
};

TilePlan plan_tiles(const ConvGeometry& g, int64_t budget, int64_t align) {
  const int64_t P = g.H_out() * g.W_out(), total = g.N * P;
  budget = std::max(align, budget / align * align);
  const int64_t image_Pt = ceil_div(ceil_div(P, ceil_div(P, budget)), align) * align;
  const int64_t per_image_tiles = ceil_div(P, image_Pt);
  if (per_image_tiles * image_Pt * 16 <= P * 17)
    return {P, total, image_Pt, per_image_tiles, g.N * per_image_tiles, true};
  const int64_t Pt = std::min(budget, ceil_div(total, align) * align);
  return {P, total, Pt, 1, ceil_div(total, Pt), false};
}

// ---- depthwise: one input channel per group, channel multiplier C_out / C_in

bool is_depthwise(const ConvGeometry& g) { return g.C_in_group() == 1 && g.groups > 1; }

// The output columns a kernel column kx reaches inside the input.
struct TapSpan {
  int64_t lo, hi, ix0;  // ox in [lo, hi) read x[ix0 + ox * stride_w]
};
TapSpan tap_span(const ConvGeometry& g, int64_t kx, int64_t W_out) {
  const int64_t ix0 = kx * g.dilation_w - g.pad_left;
  const Range r = valid_range(ix0, g.stride_w, W_out, g.W);
  return {r.lo, r.hi, ix0};
}

template <typename T>
void depthwise_forward(const ConvForwardArgs<T>& a) {
  const ConvGeometry& g = a.geo;
  const int64_t H_out = g.H_out(), W_out = g.W_out(), mult = g.C_out_group(), sw = g.stride_w;
#pragma omp parallel for schedule(static) if (g.N * g.C_out * H_out * W_out * g.KH * g.KW > kParallelMinElements)
  for (int64_t plane = 0; plane < g.N * g.C_out; ++plane) {
    const int64_t n = plane / g.C_out, co = plane % g.C_out;
    const T* xc = a.x + (n * g.C_in + co / mult) * g.H * g.W;
    const T* w = a.weight + co * g.KH * g.KW;
    const T b = a.bias ? a.bias[co] : T(0);
    for (int64_t oy = 0; oy < H_out; ++oy) {
      const int64_t offset = (plane * H_out + oy) * W_out;
      T* row = a.out + offset;
      std::fill(row, row + W_out, T(0));
      for (int64_t ky = 0; ky < g.KH; ++ky) {
        const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
        if (iy < 0 || iy >= g.H) continue;
        const T* xr = xc + iy * g.W;
        for (int64_t kx = 0; kx < g.KW; ++kx) {
          const T wv = w[ky * g.KW + kx];
          const TapSpan s = tap_span(g, kx, W_out);
          for (int64_t ox = s.lo; ox < s.hi; ++ox) row[ox] += wv * xr[s.ix0 + ox * sw];
        }
      }
      for (int64_t ox = 0; ox < W_out; ++ox) {
        const T z = row[ox] + b;
        if (a.preact) a.preact[offset + ox] = z;
        row[ox] = activation_forward(a.act, z);
      }
    }
  }
}

// The gradient of the depthwise output plane (n, co) at row oy, act' applied, into `g_row`.
template <typename T>
const T* depthwise_grad_row(const ConvBackwardArgs<T>& a, int64_t offset, int64_t W_out, T* g_row) {
  if (a.act == Activation::None) return a.grad_out + offset;
  for (int64_t ox = 0; ox < W_out; ++ox)
    g_row[ox] = a.grad_out[offset + ox] * activation_derivative(a.act, a.preact[offset + ox]);
  return g_row;
}

template <typename T>
void depthwise_backward(const ConvBackwardArgs<T>& a) {
  const ConvGeometry& g = a.geo;
  const int64_t H_out = g.H_out(), W_out = g.W_out(), mult = g.C_out_group(), sw = g.stride_w;
  const int64_t taps = g.KH * g.KW;
  const bool parallel = g.N * g.C_out * H_out * W_out * taps > kParallelMinElements;
  // Per thread: a row of g and the taps' sums (allocated here: nothing may throw in a team).
  const int64_t per_thread = W_out + taps;
  auto scratch = aligned_array<T>(max_threads() * per_thread);
  if (a.grad_x) {
    // Plane (n, ci) of grad_x gathers from its mult output planes, in order.
    std::fill(a.grad_x, a.grad_x + g.N * g.C_in * g.H * g.W, T(0));
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t plane = 0; plane < g.N * g.C_in; ++plane) {
      T* g_row = scratch.get() + thread_id() * per_thread;
      const int64_t n = plane / g.C_in, ci = plane % g.C_in;
      T* gx = a.grad_x + plane * g.H * g.W;
      for (int64_t m = 0; m < mult; ++m) {
        const int64_t co = ci * mult + m;
        const T* w = a.weight + co * taps;
        for (int64_t oy = 0; oy < H_out; ++oy) {
          const T* gr = depthwise_grad_row(a, ((n * g.C_out + co) * H_out + oy) * W_out, W_out,
                                           g_row);
          for (int64_t ky = 0; ky < g.KH; ++ky) {
            const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
            if (iy < 0 || iy >= g.H) continue;
            T* xr = gx + iy * g.W;
            for (int64_t kx = 0; kx < g.KW; ++kx) {
              const T wv = w[ky * g.KW + kx];
              const TapSpan s = tap_span(g, kx, W_out);
              for (int64_t ox = s.lo; ox < s.hi; ++ox) xr[s.ix0 + ox * sw] += wv * gr[ox];
            }
          }
        }
      }
    }
  }
  if (a.grad_weight || a.grad_bias) {
    // Channel co owns its taps and bias; images and rows are summed in order.
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t co = 0; co < g.C_out; ++co) {
      T* g_row = scratch.get() + thread_id() * per_thread;
      T* dw = g_row + W_out;
      std::fill(dw, dw + taps, T(0));
      T db = T(0);
      for (int64_t n = 0; n < g.N; ++n) {
        const T* xc = a.x ? a.x + (n * g.C_in + co / mult) * g.H * g.W : nullptr;
        for (int64_t oy = 0; oy < H_out; ++oy) {
          const T* gr = depthwise_grad_row(a, ((n * g.C_out + co) * H_out + oy) * W_out, W_out,
                                           g_row);
          for (int64_t ox = 0; ox < W_out; ++ox) db += gr[ox];
          if (!a.grad_weight) continue;
          for (int64_t ky = 0; ky < g.KH; ++ky) {
            const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
            if (iy < 0 || iy >= g.H) continue;
            const T* xr = xc + iy * g.W;
            for (int64_t kx = 0; kx < g.KW; ++kx) {
              const TapSpan s = tap_span(g, kx, W_out);
              T sum = T(0);
              for (int64_t ox = s.lo; ox < s.hi; ++ox) sum += gr[ox] * xr[s.ix0 + ox * sw];
              dw[ky * g.KW + kx] += sum;
            }
          }
        }
      }
      if (a.grad_weight) std::copy(dw, dw + taps, a.grad_weight + co * taps);
      if (a.grad_bias) a.grad_bias[co] = db;
    }
  }
}

// grad_bias[co] = sum of g over images and positions; channels are independent. Each
// channel is summed in kLanes partial sums side by side (a fixed order the compiler can
// vectorise), added up at the end.
template <typename T>
void bias_grad(const ConvBackwardArgs<T>& a) {
  constexpr int64_t kLanes = 16;
  const ConvGeometry& g = a.geo;
  const int64_t P = g.H_out() * g.W_out();
#pragma omp parallel for schedule(static) if (g.N * g.C_out * P > kParallelMinElements)
  for (int64_t co = 0; co < g.C_out; ++co) {
    T part[kLanes] = {};
    for (int64_t n = 0; n < g.N; ++n) {
      const int64_t offset = (n * g.C_out + co) * P;
      const T* go = a.grad_out + offset;
      const T* z = a.preact ? a.preact + offset : nullptr;
      for (int64_t p0 = 0; p0 < P; p0 += kLanes) {
        const int64_t len = std::min(kLanes, P - p0);
        if (a.act == Activation::None && len == kLanes) {
          for (int64_t l = 0; l < kLanes; ++l) part[l] += go[p0 + l];
        } else {
          for (int64_t l = 0; l < len; ++l)
            part[l] += a.act == Activation::None
                           ? go[p0 + l]
                           : go[p0 + l] * activation_derivative(a.act, z[p0 + l]);
        }
      }
    }
    T sum = T(0);
    for (int64_t l = 0; l < kLanes; ++l) sum += part[l];
    a.grad_bias[co] = sum;
  }
}

// The filters are the GEMM's rows (packed once per group) and a tile's positions its
// columns: tile[c, j] = sum_k W_g[c, k] col[k, j] + b[c], the bias riding as one more k
// (a column of the packed filters against a row of ones under col). Images of at least
// half a tile get tiles of their own, which the GEMM writes straight into out (act and
// preact in its epilogue); smaller images share tiles, staged and copied to out by rows.
// Threads take whole tiles: each runs im2col, packs the tile, multiplies and stores it,
// alone and in its own workspace; every output element comes from one tile, so the
// thread count changes nothing.
template <typename T>
void forward_by_filters(const ConvForwardArgs<T>& a) {
  const ConvGeometry& g = a.geo;
  const int64_t K = g.K(), Kb = K + (a.bias ? 1 : 0), Cog = g.C_out_group();
  // at most an L2's worth per tile, and one tile per thread (of whole panels) where that is less
  const int64_t align = gemm_panel_width<T>();
  const int64_t budget = std::min(kThreadTileBytes / int64_t(sizeof(T)) / (2 * Kb + Cog),
                                  ceil_div(ceil_div(g.N * g.H_out() * g.W_out(), max_threads()), align) * align);
  const TilePlan plan = plan_tiles(g, budget, align);
  const int64_t P = plan.P, total = plan.total, Pt = plan.Pt, n_tiles = plan.n_tiles;
  const bool per_image = plan.per_image;
  const double work = double(total) * double(K) * double(Cog);
  const int nt = work < double(kParallelMinElements) * 8 ? 1
                                                          : int(std::min<int64_t>(max_threads(), n_tiles));
  const int64_t col_size = Kb * Pt, per_thread = col_size + (per_image ? 0 : Cog * Pt);
  auto workspace = aligned_array<T>(nt * per_thread);
  for (int id = 0; id < nt; ++id) {  // the row of ones under col, never overwritten
    T* ones = workspace.get() + id * per_thread + K * Pt;
    std::fill(ones, ones + (Kb - K) * Pt, T(1));
  }
  auto filters = aligned_array<T>(packed_rows_size<T>(Cog, Kb));
  auto with_bias = aligned_array<T>(a.bias ? Cog * Kb : 1);
  std::vector<std::vector<Run>> runs(nt);
  for (auto& r : runs) r.reserve(Pt);
  std::exception_ptr error;  // pack_operand allocates: carried out of the team, rethrown
  for (int64_t group = 0; group < g.groups; ++group) {
    const T* w = a.weight + group * Cog * K;
    if (a.bias) {
      for (int64_t c = 0; c < Cog; ++c) {
        std::copy(w + c * K, w + (c + 1) * K, with_bias.get() + c * Kb);
        with_bias[c * Kb + K] = a.bias[group * Cog + c];
      }
      w = with_bias.get();
    }
    pack_rows<T>(Cog, Kb, {w, Kb, 1}, filters.get());
#pragma omp parallel num_threads(nt)
    {
      const int id = thread_id();
      T* col = workspace.get() + id * per_thread;
      T* tile = col + col_size;
#pragma omp for schedule(static, 1)  // round robin: few tiles, the last one short, still balance
      for (int64_t i = 0; i < n_tiles; ++i) {
        const int64_t q0 = plan.start(i), m = plan.size(i);
        runs_of(q0, q0 + m, g.H_out(), g.W_out(), runs[id]);
        const Tile t{g, group, g.H_out(), g.W_out(), Pt, &runs[id], m};
        im2col(t, a.x, col);
        const int64_t offset = (plan.image(i) * g.C_out + group * Cog) * P + plan.first(i);
        try {
          const PackedOperand<T> b = pack_operand<T>(m, Kb, {col, 1, Pt});
          if (per_image)
            gemm_packed_columns<T>(Cog, filters.get(), b, 0, m, a.out + offset, P,
                                   {nullptr, a.act, a.preact ? a.preact + offset : nullptr});
          else
            gemm_packed_columns<T>(Cog, filters.get(), b, 0, m, tile, Pt);
        } catch (...) {
#pragma omp critical(conv_forward_error)
          error = std::current_exception();
          continue;
        }
        if (!per_image) store_rows(t, a, tile);
      }
    }
    if (error) std::rethrow_exception(error);
  }
}

}  // namespace

template <typename T>
void conv_forward(const ConvForwardArgs<T>& a) {
  if (is_depthwise(a.geo)) return depthwise_forward(a);
  if (conv_direct_pays<T>(a.geo)) return conv_forward_direct(a);
  forward_by_filters(a);
}

namespace {

// With stride 1, backward-data is itself a convolution: of g, padded by the kernel's span
// less the forward padding, with each group's filters transposed (C_in <-> C_out) and
// flipped. That convolution's geometry, where it exists (padding no wider than the span).
bool backward_data_as_conv(const ConvGeometry& g, ConvGeometry* out) {
  const int64_t span_h = g.dilation_h * (g.KH - 1), span_w = g.dilation_w * (g.KW - 1);
  if (g.stride_h != 1 || g.stride_w != 1 || g.pad_top > span_h || g.pad_bottom > span_h ||
      g.pad_left > span_w || g.pad_right > span_w)
    return false;
  *out = {g.N, g.C_out, g.H_out(), g.W_out(), g.C_in, g.KH, g.KW, 1, 1,
          span_h - g.pad_top, span_h - g.pad_bottom, span_w - g.pad_left, span_w - g.pad_right,
          g.dilation_h, g.dilation_w, g.groups};
  return true;
}

// grad_x = that convolution of grad_out, by the direct kernel.
template <typename T>
void backward_data_direct(const ConvBackwardArgs<T>& a, const ConvGeometry& t) {
  const ConvGeometry& g = a.geo;
  const int64_t Cig = g.C_in_group(), Cog = g.C_out_group(), taps = g.KH * g.KW;
  // flipped[g*Cig + ci, c, ky, kx] = weight[g*Cog + c, ci, KH-1-ky, KW-1-kx]
  auto flipped = aligned_array<T>(g.C_out * Cig * taps);
  for (int64_t group = 0; group < g.groups; ++group)
    for (int64_t ci = 0; ci < Cig; ++ci)
      for (int64_t c = 0; c < Cog; ++c) {
        const T* src = a.weight + ((group * Cog + c) * Cig + ci) * taps;
        T* dst = flipped.get() + ((group * Cig + ci) * Cog + c) * taps;
        for (int64_t k = 0; k < taps; ++k) dst[k] = src[taps - 1 - k];
      }
  conv_forward_direct<T>({t, a.grad_out, flipped.get(), nullptr, a.grad_x, nullptr, Activation::None});
}

// Backward-data by im2col and GEMMs. Tiles run one after the other, the GEMMs and the passes
// each split among the threads. g is gathered per tile even where it could be read in place:
// rows P apart in grad_out, side by side, thrash L1 as the GEMM packs them.
template <typename T>
void grad_x_by_tiles(const ConvBackwardArgs<T>& a, const TilePlan& plan) {
  const ConvGeometry& g = a.geo;
  const int64_t K = g.K(), Cog = g.C_out_group(), Pt = plan.Pt;
  std::fill(a.grad_x, a.grad_x + g.N * g.C_in * g.H * g.W, T(0));
  auto col = aligned_array<T>(K * Pt);
  auto gt = aligned_array<T>(Cog * Pt);
  std::vector<Run> runs;
  runs.reserve(Pt);
  for (int64_t group = 0; group < g.groups; ++group) {
    const T* w = a.weight + group * Cog * K;
    for (int64_t i = 0; i < plan.n_tiles; ++i) {
      const int64_t q0 = plan.start(i), m = plan.size(i);
      runs_of(q0, q0 + m, g.H_out(), g.W_out(), runs);
      const Tile t{g, group, g.H_out(), g.W_out(), Pt, &runs, m};
      gather_grad(t, a, gt.get());
      // col[k, j] = sum_c W_g[c, k] g[c, j]
      gemm<T>(K, m, Cog, {w, 1, K}, {gt.get(), 1, Pt}, col.get(), Pt);
      col2im(t, col.get(), a.grad_x);
    }
  }
}

// Backward-weight: tile i's product is added into partial sum i % kWeightSlots and the
// partial sums are added up in slot order, a fixed order whatever the thread count; the
// threads share out the slots, each running its tiles' passes and GEMMs alone.
constexpr int64_t kWeightSlots = 8;

template <typename T>
void grad_weight_by_tiles(const ConvBackwardArgs<T>& a, const TilePlan& plan) {
  const ConvGeometry& g = a.geo;
  const int64_t K = g.K(), Cog = g.C_out_group(), Pt = plan.Pt, size = Cog * K;
  const int64_t slots = std::min(kWeightSlots, plan.n_tiles);
  if (slots == 0) {  // no output positions: no gradient
    std::fill(a.grad_weight, a.grad_weight + g.groups * size, T(0));
    return;
  }
  const double work = double(plan.total) * double(K) * double(Cog);
  const int nt = work < double(kParallelMinElements) * 8 ? 1 : int(std::min<int64_t>(max_threads(), slots));
  const int64_t per_thread = (K + Cog) * Pt + size;  // col, gathered g, one tile's product
  auto workspace = aligned_array<T>(nt * per_thread);
  auto partial = aligned_array<T>(slots * size);
  std::vector<std::vector<Run>> runs(nt);
  for (auto& r : runs) r.reserve(Pt);
  std::exception_ptr error;  // gemm allocates: carried out of the team, rethrown
  for (int64_t group = 0; group < g.groups; ++group) {
#pragma omp parallel num_threads(nt)
    {
      const int id = thread_id();
      T* col = workspace.get() + id * per_thread;
      T* gt = col + K * Pt;
      T* dw = gt + Cog * Pt;
#pragma omp for schedule(static)
      for (int64_t slot = 0; slot < slots; ++slot) {
        T* sum = partial.get() + slot * size;
        std::fill(sum, sum + size, T(0));
        for (int64_t i = slot; i < plan.n_tiles; i += slots) {
          const int64_t q0 = plan.start(i), m = plan.size(i);
          runs_of(q0, q0 + m, g.H_out(), g.W_out(), runs[id]);
          const Tile t{g, group, g.H_out(), g.W_out(), Pt, &runs[id], m};
          gather_grad(t, a, gt);
          im2col(t, a.x, col);
          try {
            // dw[c, k] = sum_j g[c, j] col[k, j]
            gemm<T>(Cog, K, m, {gt, Pt, 1}, {col, Pt, 1}, dw, K);
          } catch (...) {
#pragma omp critical(conv_backward_error)
            error = std::current_exception();
            break;
          }
          for (int64_t j = 0; j < size; ++j) sum[j] += dw[j];
        }
      }
    }
    if (error) std::rethrow_exception(error);
    T* grad_w = a.grad_weight + group * size;
    const T* p = partial.get();
#pragma omp parallel for schedule(static) if (size > kParallelMinElements)
    for (int64_t j = 0; j < size; ++j) {
      T total = p[j];
      for (int64_t slot = 1; slot < slots; ++slot) total += p[slot * size + j];
      grad_w[j] = total;
    }
  }
}

template <typename T>
void backward_by_tiles(const ConvBackwardArgs<T>& a) {
  const ConvGeometry& g = a.geo;
  const TilePlan plan = plan_tiles(g, kTileElements / (g.K() + g.C_out_group()), gemm_panel_width<T>());
  if (a.grad_x) grad_x_by_tiles(a, plan);
  if (a.grad_weight) grad_weight_by_tiles(a, plan);
}

}  // namespace

template <typename T>
void conv_backward(const ConvBackwardArgs<T>& a) {
  const ConvGeometry& g = a.geo;
  if (is_depthwise(g)) return depthwise_backward(a);
  if (a.grad_bias) bias_grad(a);
  ConvGeometry transposed;
  if (a.grad_x && a.act == Activation::None && backward_data_as_conv(g, &transposed) &&
      conv_direct_pays<T>(transposed)) {
    backward_data_direct(a, transposed);
    ConvBackwardArgs<T> rest = a;
    rest.grad_x = nullptr;
    return backward_by_tiles(rest);
  }
  backward_by_tiles(a);
}

template void conv_forward<float>(const ConvForwardArgs<float>&);
template void conv_forward<double>(const ConvForwardArgs<double>&);
template void conv_backward<float>(const ConvBackwardArgs<float>&);
template void conv_backward<double>(const ConvBackwardArgs<double>&);

}  // namespace unet::cpu
