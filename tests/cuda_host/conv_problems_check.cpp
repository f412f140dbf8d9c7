// Host check of the index arithmetic of the tensor-core convolutions
// (csrc/cuda/conv_mma_problems.cuh) against the definition of the convolution: each
// problem's GEMM is summed here in plain loops through its own table entries, loads and
// stores, and compared with a direct convolution of the same 16-bit values. Built with the
// C++ compiler and run by tests/test_conv_mma_problems.py; no GPU or CUDA is needed.
//
//   conv_problems_check N C_in H W C_out KH KW sh sw pt pb pl pr dh dw groups
// prints "ok" and exits 0, or prints the first mismatch and exits 1.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "conv_mma_problems.cuh"
#include "unet/half.h"

using namespace unet;
using namespace unet::cuda;

namespace {

std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<uint16_t> v(n);
  for (auto& e : v) e = float_to_bfloat16(normal(rng));
  return v;
}

double value(const std::vector<uint16_t>& v, int64_t i) { return bfloat16_to_float(v[i]); }

// The problem's product summed in double through its entries and loads, then stored.
template <class Problem>
void product(const Problem& p) {
  for (int64_t j = 0; j < p.N(); ++j) {
    const auto col = p.col_entry(j);
    for (int64_t i = 0; i < p.M(); ++i) {
      double acc = 0.0;
      for (int64_t k = 0; k < p.K(); ++k) {
        const auto e = p.k_entry(k);
        acc += double(bfloat16_to_float(p.a(i, k, e))) * bfloat16_to_float(p.b(e, col));
      }
      p.store(i, j, static_cast<float>(acc));
    }
  }
}

bool close(const char* what, const std::vector<float>& got, const std::vector<double>& want) {
  for (size_t i = 0; i < want.size(); ++i)
    if (std::fabs(got[i] - want[i]) > 1e-5 * (1.0 + std::fabs(want[i]))) {
      std::printf("%s: element %zu is %.7g, expected %.7g\n", what, i, got[i], want[i]);
      return false;
    }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 17) {
    std::fprintf(stderr, "usage: %s N C_in H W C_out KH KW sh sw pt pb pl pr dh dw groups\n", argv[0]);
    return 2;
  }
  int64_t a[16];
  for (int i = 0; i < 16; ++i) a[i] = std::atoll(argv[i + 1]);
  const ConvGeometry g{a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]};
  const Dims d = dims_of(g);
  std::mt19937 rng(1234);
  const auto x = random_bf16(d.N * d.C_in * d.H * d.W, rng);
  const auto w = random_bf16(d.C_out * d.K, rng);
  const auto gy = random_bf16(d.N * d.C_out * d.P, rng);
  std::vector<float> bias(d.C_out);
  for (int64_t c = 0; c < d.C_out; ++c) bias[c] = 0.25f * float(c % 7) - 0.5f;

  // The definition, in double: out, and the two adjoint sums grad_x and grad_w.
  std::vector<double> out_ref(gy.size()), gx_ref(x.size(), 0.0), gw_ref(w.size(), 0.0);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t co = 0; co < d.C_out; ++co)
      for (int64_t oy = 0; oy < d.Ho; ++oy)
        for (int64_t ox = 0; ox < d.Wo; ++ox) {
          const int64_t o = ((n * d.C_out + co) * d.Ho + oy) * d.Wo + ox;
          double sum = bias[co];
          for (int64_t cl = 0; cl < d.Cig; ++cl)
            for (int64_t ky = 0; ky < d.KH; ++ky)
              for (int64_t kx = 0; kx < d.KW; ++kx) {
                const int64_t iy = oy * d.sh - d.pt + ky * d.dh, ix = ox * d.sw - d.pl + kx * d.dw;
                if (iy < 0 || iy >= d.H || ix < 0 || ix >= d.W) continue;
                const int64_t ci = co / d.Cog * d.Cig + cl;
                const int64_t xi = ((n * d.C_in + ci) * d.H + iy) * d.W + ix;
                const int64_t wi = ((co * d.Cig + cl) * d.KH + ky) * d.KW + kx;
                sum += value(w, wi) * value(x, xi);
                gx_ref[xi] += value(w, wi) * value(gy, o);
                gw_ref[wi] += value(gy, o) * value(x, xi);
              }
          out_ref[o] = sum;
        }

  std::vector<float> out(gy.size()), preact(gy.size()), gx(x.size()), gw(w.size());
  for (int64_t group = 0; group < g.groups; ++group) {
    product(ForwardProblem{d, group, x.data(), w.data(), bias.data(), out.data(), preact.data(), Activation::None});
    product(DataGradProblem{d, group, gy.data(), w.data(), gx.data()});
    product(WeightGradProblem{d, group, gy.data(), x.data(), gw.data()});
  }
  const bool ok = close("out", out, out_ref) && close("preact", preact, out_ref) && close("grad_x", gx, gx_ref) &&
                  close("grad_weight", gw, gw_ref);
  if (ok) std::printf("ok\n");
  return ok ? 0 : 1;
}
