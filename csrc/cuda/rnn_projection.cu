// The 16-bit input projection of the CUDA recurrent layers (rnn_projection.cuh): one kernel
// rounds x [T*B, I] and w_ih [G*H, I] into one temporary buffer, rows padded to a multiple
// of 8 elements (16 bytes) with zeros so that matmul() can take its tensor-core paths for
// any input size (sm90 wgmma reads A [M, K] and B [N, K], the x W_ih^T layout, through TMA;
// sm80 mma.sync otherwise); then matmul() sums the exact products in float32 and adds the
// bias in its epilogue. The buffer is allocated and freed in stream order.
#include <cuda_runtime.h>

#include <stdexcept>

#include "rnn_projection.cuh"
#include "unet/half.h"
#include "unet/matmul.h"

namespace unet::cuda {
namespace {

constexpr int kThreads = 256;

// dst row r (ld elements) = src row r (cols elements) rounded to dtype, then zeros; rows
// [0, rows_a) come from a, the rest from b. One block per row at a time.
__global__ void __launch_bounds__(kThreads)
    round_rows_kernel(const float* __restrict__ a, int64_t rows_a, const float* __restrict__ b,
                      int64_t rows, int64_t cols, int64_t ld, bool bf16, uint16_t* __restrict__ dst) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* src = r < rows_a ? a + r * cols : b + (r - rows_a) * cols;
    uint16_t* out = dst + r * ld;
    for (int64_t c = threadIdx.x; c < ld; c += kThreads) {
      const float v = c < cols ? src[c] : 0.0f;
      out[c] = bf16 ? float_to_bfloat16(v) : float_to_half(v);
    }
  }
}

}  // namespace

void rnn_input_projection_16bit(const RnnForwardArgs<float>& a, const float* bias, float* gates,
                                cudaStream_t stream, int device) {
  const DType t = a.projection_dtype;
  if (t != DType::Float16 && t != DType::BFloat16)
    throw std::invalid_argument("rnn input projection (CUDA): projection_dtype must be float16 or bfloat16");
  const int64_t TB = a.steps * a.batch, I = a.input_size;
  const int64_t GH = rnn_gate_count(a.mode) * a.hidden_size;
  const int64_t ld = (I + 7) / 8 * 8, rows = TB + GH;
  if (TB == 0 || GH == 0) return;
  const DeviceBuffer<uint16_t> copies(rows * ld, stream);
  const int64_t blocks = rows < 8192 ? rows : 8192;  // grid-stride over rows
  round_rows_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      a.x, TB, a.w_ih, rows, I, ld, t == DType::BFloat16, copies.p);
  check(cudaGetLastError(), "rnn input projection (CUDA): round_rows_kernel launch");
  MatmulArgs m;
  m.M = TB, m.N = GH, m.K = I;
  m.trans_b = true;  // w_ih is [G*H, I]
  m.ab_dtype = t;
  m.a = copies.p, m.lda = ld;
  m.b = copies.p + TB * ld, m.ldb = ld;
  m.c = gates, m.ldc = GH;
  m.bias = bias;
  matmul(m, reinterpret_cast<uintptr_t>(stream), device);
}

}  // namespace unet::cuda
