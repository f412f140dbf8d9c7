// Mixed-precision convolutions on the CPU (contract: unet/conv.h): exact float32 copies of
// the 16-bit inputs through the float32 kernels of cpu/conv.cpp, so every product is of two
// 16-bit values, summed in float32, with the float32 kernels' speed and thread-count
// independence. In backward, g = grad_out * act'(preact) is rounded to the 16-bit dtype
// first (the contract's rule, which the CUDA tensor-core path follows too).
#include <vector>

#include "convert.h"
#include "unet/conv.h"

namespace unet::cpu {
namespace {

// Pieces of this many elements are widened by one thread each.
constexpr int64_t kChunk = int64_t(1) << 16;

// n values of the 16-bit dtype t as float32, or an empty vector for a null src.
std::vector<float> widened(DType t, const void* src, int64_t n) {
  std::vector<float> out(src ? n : 0);
  if (!src) return out;
  const auto* h = static_cast<const uint16_t*>(src);
#pragma omp parallel for schedule(static) if (n > kChunk)
  for (int64_t i = 0; i < n; i += kChunk) widen(t, h + i, i + kChunk < n ? kChunk : n - i, out.data() + i);
  return out;
}

// g = grad_out * act'(preact), rounded to t, as float32.
std::vector<float> rounded_gradient(const ConvMixedBackwardArgs& a, int64_t n) {
  std::vector<float> g = widened(a.dtype, a.grad_out, n);
  if (a.act == Activation::None) return g;
#pragma omp parallel for schedule(static) if (n > kChunk)
  for (int64_t i = 0; i < n; ++i) g[i] = round_to(a.dtype, g[i] * activation_derivative(a.act, a.preact[i]));
  return g;
}

}  // namespace

void conv_forward_mixed(const ConvMixedForwardArgs& a) {
  const ConvGeometry& g = a.geo;
  const std::vector<float> x = widened(a.dtype, a.x, g.N * g.C_in * g.H * g.W);
  const std::vector<float> w = widened(a.dtype, a.weight, g.C_out * g.K());
  conv_forward(ConvForwardArgs<float>{g, x.data(), w.data(), a.bias, a.out, a.preact, a.act});
}

void conv_backward_mixed(const ConvMixedBackwardArgs& a) {
  const ConvGeometry& g = a.geo;
  const std::vector<float> grad = rounded_gradient(a, g.N * g.C_out * g.H_out() * g.W_out());
  const std::vector<float> x = widened(a.dtype, a.x, g.N * g.C_in * g.H * g.W);
  const std::vector<float> w = widened(a.dtype, a.weight, g.C_out * g.K());
  conv_backward(ConvBackwardArgs<float>{g, grad.data(), a.x ? x.data() : nullptr, w.data(), nullptr,
                                        Activation::None, a.grad_x, a.grad_weight, a.grad_bias});
}

}  // namespace unet::cpu
