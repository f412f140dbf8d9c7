// The three implicit GEMMs of the tensor-core convolutions (cuda/conv_mma.cu) as problems:
// sizes, index-table entries, operand loads and output stores, in plain C++ (host and
// device), so that a host program built with the C++ compiler checks the index arithmetic
// against the definition (tests/cuda_host/conv_problems_check.cpp) on any machine.
//
#pragma once

#include <cstdint>

#include "conv_dims.h"
#include "unet/activations.h"

namespace unet::cuda {
// Internal linkage, like conv_common.cuh.
namespace {

// Each problem gives M, N, K; kAKMajor/kBKMajor (whether its operand's loads run along k:
// threads then walk k, else rows, so that neighbours read neighbouring addresses); col_entry(j)
// and k_entry(k), the table entries; a(i, k, k_entry) and b(k_entry, col_entry), the
// 16-bit operand values (called only in range); store(i, j, acc), the output.

// Where patch(., q) starts: the offset of (n, the group's first channel, iy, ix) in x and
// (iy, ix), the patch's top-left input position (negative in the padding).
struct PatchOrigin {
  int64_t x, iy, ix;
};
UNET_HD PatchOrigin patch_origin(const Dims& d, int64_t group, int64_t q) {
  const int64_t n = q / d.P, p = q % d.P;
  const int64_t iy = p / d.Wo * d.sh - d.pt, ix = p % d.Wo * d.sw - d.pl;
  return {(n * d.C_in + group * d.Cig) * d.H * d.W + iy * d.W + ix, iy, ix};
}

// Patch element k = (ci, ky, kx): its offset from the origin and its dilated tap (dy, dx).
struct PatchTap {
  int64_t x, dy, dx;
};
UNET_HD PatchTap patch_tap(const Dims& d, int64_t k) {
  const int64_t ci = k / d.taps, t = k % d.taps;
  const int64_t dy = t / d.KW * d.dh, dx = t % d.KW * d.dw;
  return {ci * d.H * d.W + dy * d.W + dx, dy, dx};
}

UNET_HD uint16_t patch_value(const Dims& d, const uint16_t* x, const PatchOrigin& o,
                                                const PatchTap& t) {
  const int64_t iy = o.iy + t.dy, ix = o.ix + t.dx;
  return (iy >= 0 && iy < d.H && ix >= 0 && ix < d.W) ? x[o.x + t.x] : uint16_t(0);
}

struct ForwardProblem {
  static constexpr bool kAKMajor = true, kBKMajor = false;  // W rows; patch values along q
  using ColEntry = PatchOrigin;
  using KEntry = PatchTap;
  Dims d;
  int64_t group;
  const uint16_t* x;
  const uint16_t* w;
  const float* bias;
  float* out;
  float* preact;
  Activation act;

  UNET_HD int64_t M() const { return d.Cog; }
  UNET_HD int64_t N() const { return d.N * d.P; }
  UNET_HD int64_t K() const { return d.K; }
  UNET_HD ColEntry col_entry(int64_t q) const { return patch_origin(d, group, q); }
  UNET_HD KEntry k_entry(int64_t k) const { return patch_tap(d, k); }
  UNET_HD uint16_t a(int64_t c, int64_t k, const KEntry&) const { return w[(group * d.Cog + c) * d.K + k]; }
  UNET_HD uint16_t b(const KEntry& t, const ColEntry& o) const { return patch_value(d, x, o, t); }
  UNET_HD void store(int64_t c, int64_t q, float acc) const {
    const int64_t co = group * d.Cog + c, offset = (q / d.P * d.C_out + co) * d.P + q % d.P;
    const float z = bias ? acc + bias[co] : acc;
    if (preact) preact[offset] = z;
    out[offset] = activation_forward(act, z);
  }
};

struct WeightGradProblem {
  static constexpr bool kAKMajor = true, kBKMajor = true;  // g and patch values, both along q
  struct KEntry {  // output position q
    int64_t g;     // offset of (n, 0, p) in g
    PatchOrigin origin;
  };
  using ColEntry = PatchTap;  // patch element k
  Dims d;
  int64_t group;
  const uint16_t* g;
  const uint16_t* x;
  float* grad_weight;

  UNET_HD int64_t M() const { return d.Cog; }
  UNET_HD int64_t N() const { return d.K; }
  UNET_HD int64_t K() const { return d.N * d.P; }
  UNET_HD ColEntry col_entry(int64_t k) const { return patch_tap(d, k); }
  UNET_HD KEntry k_entry(int64_t q) const {
    return {q / d.P * d.C_out * d.P + q % d.P, patch_origin(d, group, q)};
  }
  UNET_HD uint16_t a(int64_t c, int64_t, const KEntry& e) const { return g[e.g + (group * d.Cog + c) * d.P]; }
  UNET_HD uint16_t b(const KEntry& e, const ColEntry& t) const { return patch_value(d, x, e.origin, t); }
  UNET_HD void store(int64_t c, int64_t k, float acc) const { grad_weight[(group * d.Cog + c) * d.K + k] = acc; }
};

struct DataGradProblem {
  static constexpr bool kAKMajor = true, kBKMajor = false;  // W along its taps; g along i
  struct KEntry {   // (c, tap)
    int64_t w, g;   // offsets of W[c, 0, tap] and of channel c in an image of g
    int64_t dy, dx; // the dilated tap
  };
  struct ColEntry {   // input position i = (n, iy, ix)
    int64_t g;        // offset of image n in g
    int64_t ny, nx;   // iy + pad_top, ix + pad_left: oy * sh + dy for the output position oy
  };
  Dims d;
  int64_t group;
  const uint16_t* g;
  const uint16_t* w;
  float* grad_x;

  UNET_HD int64_t M() const { return d.Cig; }
  UNET_HD int64_t N() const { return d.N * d.H * d.W; }
  UNET_HD int64_t K() const { return d.Cog * d.taps; }
  UNET_HD ColEntry col_entry(int64_t i) const {
    const int64_t HW = d.H * d.W, n = i / HW;
    return {n * d.C_out * d.P, i % HW / d.W + d.pt, i % d.W + d.pl};
  }
  UNET_HD KEntry k_entry(int64_t ct) const {
    const int64_t c = group * d.Cog + ct / d.taps, t = ct % d.taps;
    return {c * d.Cig * d.taps + t, c * d.P, t / d.KW * d.dh, t % d.KW * d.dw};
  }
  UNET_HD uint16_t a(int64_t ci, int64_t, const KEntry& e) const { return w[e.w + ci * d.taps]; }
  UNET_HD uint16_t b(const KEntry& e, const ColEntry& o) const {
    const int64_t ny = o.ny - e.dy, nx = o.nx - e.dx;
    if (ny < 0 || nx < 0 || ny % d.sh || nx % d.sw) return 0;
    const int64_t oy = ny / d.sh, ox = nx / d.sw;
    return (oy < d.Ho && ox < d.Wo) ? g[o.g + e.g + oy * d.Wo + ox] : uint16_t(0);
  }
  UNET_HD void store(int64_t ci, int64_t i, float acc) const {
    const int64_t HW = d.H * d.W;
    grad_x[(i / HW * d.C_in + group * d.Cig + ci) * HW + i % HW] = acc;
  }
};

}  // namespace
}  // namespace unet::cuda
