// The recurrent layers' input projection (rnn_projection.h). With projection_dtype bfloat16
// on a CPU with AVX-512 BF16, x and w_ih are rounded into temporary bfloat16 copies (exact
// under autocast, which rounded them already) for matmul()'s native kernel. float16, and
// bfloat16 elsewhere, run the float32 GEMM on x and w_ih as they are: matmul()'s portable
// path would widen its 16-bit copies back to those very float32 values.
#include "rnn_projection.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "convert.h"
#include "gemm.h"
#include "matmul_bf16.h"
#include "unet/matmul.h"

namespace unet::cpu {
namespace {

// n float32 values rounded (to nearest even) to bfloat16, in pieces of kChunk per thread.
constexpr int64_t kChunk = int64_t(1) << 16;
std::unique_ptr<uint16_t[]> bfloat16_copy(const float* src, int64_t n) {
  std::unique_ptr<uint16_t[]> dst(new uint16_t[n]);
  uint16_t* d = dst.get();
#pragma omp parallel for schedule(static) if (n > 4 * kChunk)
  for (int64_t i = 0; i < n; i += kChunk)
    narrow(DType::BFloat16, src + i, i + kChunk < n ? kChunk : n - i, d + i);
  return dst;
}

void projection_bf16(const RnnForwardArgs<float>& a, const float* bias, float* gates) {
  const int64_t TB = a.steps * a.batch, I = a.input_size;
  const int64_t GH = rnn_gate_count(a.mode) * a.hidden_size;
  const std::unique_ptr<uint16_t[]> x = bfloat16_copy(a.x, TB * I);
  const std::unique_ptr<uint16_t[]> w = bfloat16_copy(a.w_ih, GH * I);
  MatmulArgs m;
  m.M = TB, m.N = GH, m.K = I;
  m.trans_b = true;  // w_ih is [G*H, I]
  m.ab_dtype = DType::BFloat16;
  m.a = x.get(), m.lda = I;
  m.b = w.get(), m.ldb = I;
  m.c = gates, m.ldc = GH;
  m.bias = bias;
  matmul(m);
}

}  // namespace

template <typename T>
void rnn_input_projection(const RnnForwardArgs<T>& a, const T* bias, T* gates) {
  const DType t = a.projection_dtype;
  if (t != DType::Float32 && !(std::is_same_v<T, float> && (t == DType::Float16 || t == DType::BFloat16)))
    throw std::invalid_argument(std::string("rnn input projection (CPU): projection_dtype ") +
                                dtype_name(t) + " needs float32 arrays and a 16-bit dtype");
  if constexpr (std::is_same_v<T, float>) {
    // Only a native 16-bit kernel pays for the copies: elsewhere matmul() would widen them
    // back to float32 for the float32 GEMM below, which gives the same exact products.
    if (t == DType::BFloat16 && bf16_kernel_available()) return projection_bf16(a, bias, gates);
  }
  const int64_t TB = a.steps * a.batch, I = a.input_size;
  const int64_t GH = rnn_gate_count(a.mode) * a.hidden_size;
  gemm<T>(TB, GH, I, {a.x, I, 1}, {a.w_ih, I, 1}, gates, GH, {bias});
}

template void rnn_input_projection<float>(const RnnForwardArgs<float>&, const float*, float*);
template void rnn_input_projection<double>(const RnnForwardArgs<double>&, const double*, double*);

}  // namespace unet::cpu
