// CPU mixed-precision matmul (the math is in unet/matmul.h). Each batch item is done in
// blocks of rows of C: the float32 product op(A) op(B) of a block goes into a scratch
// block (or straight into a float32 C when beta == 0), then the epilogue (alpha, beta C,
// bias, preact, act, residual) runs over it and rounds each value once, to C's dtype. The
// product comes from
//   - the AVX-512 BF16 kernel (matmul_bf16.h) for bfloat16 inputs on a CPU that has it;
//   - otherwise the blocked float32 GEMM of gemm.h, on the inputs themselves (float32) or on
//     exact float32 copies of them (float16, bfloat16: the portable path).
// Every output element is computed the same way whatever the thread count: threads split
// rows, columns or batch items, never the sum over k.
#include <algorithm>
#include <cstring>
#include <vector>

#include "convert.h"
#include "gemm.h"
#include "threads.h"
#include "matmul_bf16.h"
#include "unet/half.h"
#include "unet/matmul.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace unet::cpu {
namespace {

// Below this many multiply-adds per batch item, threads take whole items instead.
constexpr double kParallelMinWork = 1 << 18;
// Scratch rows per block: the float32 product block stays near 32 MiB, or 512 rows (each
// block packs B again: 512 rows keep that to a few percent of the work).
constexpr int64_t kScratchElems = int64_t(1) << 23;
constexpr int64_t kMinBlockRows = 512;
// Column strip of the epilogue: its float32 temporaries live on the stack.
constexpr int64_t kStrip = 256;

const void* at(const void* p, DType t, int64_t elems) {
  return static_cast<const char*>(p) + elems * dtype_size(t);
}
void* at(void* p, DType t, int64_t elems) {
  return static_cast<char*>(p) + elems * dtype_size(t);
}

// A rows x cols matrix of dtype t (leading dimension ld) as a dense float32 one.
void widen_matrix(DType t, const void* src, int64_t rows, int64_t cols, int64_t ld, float* dst,
                  bool threaded) {
#pragma omp parallel for schedule(static) if (threaded && rows * cols > (int64_t(1) << 16))
  for (int64_t r = 0; r < rows; ++r) widen(t, at(src, t, r * ld), cols, dst + r * cols);
}

// gemm.h addresses its operands as A(i,k) and B(j,k). op(A) is A or A^T, op(B) likewise,
// from a float32 matrix with leading dimension ld.
GemmOperand<float> operand_a(const float* a, int64_t ld, bool trans) {
  return trans ? GemmOperand<float>{a, 1, ld} : GemmOperand<float>{a, ld, 1};
}
GemmOperand<float> operand_b(const float* b, int64_t ld, bool trans) {
  return trans ? GemmOperand<float>{b, ld, 1} : GemmOperand<float>{b, 1, ld};
}

bool use_bf16_kernel(const MatmulArgs& a) {
  return a.ab_dtype == DType::BFloat16 && bf16_kernel_available();
}

// Whether A and B go through float32 copies (the portable path for 16-bit inputs).
bool widens_inputs(const MatmulArgs& a) {
  return a.ab_dtype != DType::Float32 && !use_bf16_kernel(a);
}

// Choices shared by every item.
struct Plan {
  int64_t block_rows;  // rows of C per block
  bool b_shared;       // one B for every item (batch stride 0 or batch 1)
  bool widen;          // widens_inputs
  bool direct;         // float32 C, not read (beta == 0): the product goes straight into C
  bool epilogue;       // anything to do after the product
};

struct Scratch {
  AlignedArray<float> acc;  // block_rows x N product
  AlignedArray<float> a;    // block_rows x K widened rows of op(A)
  AlignedArray<float> b;    // K x N widened B, when B is not shared
};

Scratch make_scratch(const MatmulArgs& a, const Plan& plan) {
  const bool own_b = plan.widen && !plan.b_shared;
  return {aligned_array<float>(plan.direct ? 0 : plan.block_rows * a.N),
          aligned_array<float>(plan.widen ? plan.block_rows * a.K : 0),
          aligned_array<float>(own_b ? a.K * a.N : 0)};
}

// acc (m x N, leading dimension ld) = rows [i0, i0 + m) of op(A_p) op(B_p). b32 is B_p
// widened (when the inputs are widened).
void product_block(const MatmulArgs& a, int64_t p, int64_t i0, int64_t m, const float* b32,
                   Scratch& s, float* acc, int64_t ld, bool threaded) {
  const DType t = a.ab_dtype;
  // The block's rows of op(A): rows of A, or columns of A^T.
  const void* a_block = at(a.a, t, p * a.stride_a + (a.trans_a ? i0 : i0 * a.lda));
  const void* b_item = at(a.b, t, p * a.stride_b);
  if (use_bf16_kernel(a)) {
    bf16_gemm(m, a.N, a.K, static_cast<const uint16_t*>(a_block), a.lda, a.trans_a,
              static_cast<const uint16_t*>(b_item), a.ldb, a.trans_b, acc, ld);
    return;
  }
  GemmOperand<float> A{}, B{};
  if (t == DType::Float32) {
    A = operand_a(static_cast<const float*>(a_block), a.lda, a.trans_a);
    B = operand_b(static_cast<const float*>(b_item), a.ldb, a.trans_b);
  } else {
    if (a.trans_a)
      widen_matrix(t, a_block, a.K, m, a.lda, s.a.get(), threaded);
    else
      widen_matrix(t, a_block, m, a.K, a.lda, s.a.get(), threaded);
    A = operand_a(s.a.get(), a.trans_a ? m : a.K, a.trans_a);
    B = operand_b(b32, a.trans_b ? a.K : a.N, a.trans_b);
  }
  gemm<float>(m, a.N, a.K, A, B, acc, ld);
}

// Rows [i0, i0 + m) of item p: z = alpha acc + beta C + bias, preact = z, C = act(z) +
// residual, each stored value rounded once. acc (leading dimension ld) may be C itself.
void epilogue_block(const MatmulArgs& a, int64_t p, int64_t i0, int64_t m, const float* acc,
                    int64_t ld, const float* bias32, bool threaded) {
  const DType t = a.c_dtype;
  const int64_t N = a.N;
#pragma omp parallel for schedule(static) if (threaded && m * N > (int64_t(1) << 15))
  for (int64_t r = 0; r < m; ++r) {
    const int64_t i = i0 + r;
    void* c_row = at(a.c, t, p * a.stride_c + i * a.ldc);
    for (int64_t j0 = 0; j0 < N; j0 += kStrip) {
      const int64_t n = std::min(kStrip, N - j0);
      float z[kStrip], tmp[kStrip];
      const float* prod = acc + r * ld + j0;
      for (int64_t j = 0; j < n; ++j) z[j] = a.alpha * prod[j];
      if (a.beta != 0.0f) {  // beta == 0: C is not read (it may hold NaN)
        widen(t, at(c_row, t, j0), n, tmp);
        for (int64_t j = 0; j < n; ++j) z[j] += a.beta * tmp[j];
      }
      if (bias32)
        for (int64_t j = 0; j < n; ++j) z[j] += bias32[j0 + j];
      if (a.preact) narrow(t, z, n, at(a.preact, t, p * a.stride_preact + i * a.ld_preact + j0));
      for (int64_t j = 0; j < n; ++j) z[j] = activation_forward(a.act, z[j]);
      if (a.residual) {
        widen(t, at(a.residual, t, p * a.stride_residual + i * a.ld_residual + j0), n, tmp);
        for (int64_t j = 0; j < n; ++j) z[j] += tmp[j];
      }
      narrow(t, z, n, at(c_row, t, j0));
    }
  }
}

// One batch item, block by block. b32: B_p widened, when the inputs are widened.
void run_item(const MatmulArgs& a, const Plan& plan, int64_t p, const float* b32,
              const float* bias32, Scratch& s, bool threaded) {
  if (plan.widen && !plan.b_shared) {
    widen_matrix(a.ab_dtype, at(a.b, a.ab_dtype, p * a.stride_b), a.trans_b ? a.N : a.K,
                 a.trans_b ? a.K : a.N, a.ldb, s.b.get(), threaded);
    b32 = s.b.get();
  }
  for (int64_t i0 = 0; i0 < a.M; i0 += plan.block_rows) {
    const int64_t m = std::min(plan.block_rows, a.M - i0);
    float* acc = plan.direct ? static_cast<float*>(at(a.c, DType::Float32, p * a.stride_c + i0 * a.ldc))
                             : s.acc.get();
    const int64_t ld = plan.direct ? a.ldc : a.N;
    product_block(a, p, i0, m, b32, s, acc, ld, threaded);
    if (plan.epilogue) epilogue_block(a, p, i0, m, acc, ld, bias32, threaded);
  }
}

// bias_grad[i] = sum over p, then over k, of op(A_p)(i, k), in that order for every i.
void bias_grad(const MatmulArgs& a) {
  const DType t = a.ab_dtype;
  constexpr int64_t kRows = 64;
  const bool threaded = double(a.batch) * double(a.M) * double(a.K) > kParallelMinWork;
#pragma omp parallel for schedule(static) if (threaded)
  for (int64_t i0 = 0; i0 < a.M; i0 += kRows) {
    const int64_t n = std::min(kRows, a.M - i0);
    float sum[kRows] = {}, tmp[kStrip];
    for (int64_t p = 0; p < a.batch; ++p) {
      if (a.trans_a) {  // A_p is [K, M]: add a strip of each row k in turn
        for (int64_t k = 0; k < a.K; ++k) {
          widen(t, at(a.a, t, p * a.stride_a + k * a.lda + i0), n, tmp);
          for (int64_t r = 0; r < n; ++r) sum[r] += tmp[r];
        }
      } else {  // A_p is [M, K]: each row's own sum
        for (int64_t r = 0; r < n; ++r) {
          const void* row = at(a.a, t, p * a.stride_a + (i0 + r) * a.lda);
          for (int64_t k0 = 0; k0 < a.K; k0 += kStrip) {
            const int64_t kn = std::min(kStrip, a.K - k0);
            widen(t, at(row, t, k0), kn, tmp);
            for (int64_t k = 0; k < kn; ++k) sum[r] += tmp[k];
          }
        }
      }
    }
    std::copy(sum, sum + n, a.bias_grad + i0);
  }
}

}  // namespace

void matmul(const MatmulArgs& a) {
  if (a.bias_grad) bias_grad(a);
  if (a.batch <= 0 || a.M <= 0 || a.N <= 0) return;

  Plan plan{};
  plan.direct = a.c_dtype == DType::Float32 && a.beta == 0.0f;
  plan.block_rows = plan.direct ? a.M : std::min(a.M, std::max(kMinBlockRows, kScratchElems / a.N));
  plan.b_shared = a.batch == 1 || a.stride_b == 0;
  plan.widen = widens_inputs(a);
  plan.epilogue = !plan.direct || a.alpha != 1.0f || a.bias || a.act != Activation::None ||
                  a.residual || a.preact;

  // Allocate before any parallel region: nothing may throw inside one.
  AlignedArray<float> bias32 = aligned_array<float>(a.bias ? a.N : 0);
  if (a.bias) widen(a.bias_dtype, a.bias, a.N, bias32.get());
  const float* bias = a.bias ? bias32.get() : nullptr;
  AlignedArray<float> shared_b = aligned_array<float>(plan.widen && plan.b_shared ? a.K * a.N : 0);
  if (plan.widen && plan.b_shared)
    widen_matrix(a.ab_dtype, a.b, a.trans_b ? a.N : a.K, a.trans_b ? a.K : a.N, a.ldb,
                 shared_b.get(), true);

  const double item_work = double(a.M) * double(a.N) * double(std::max<int64_t>(a.K, 1));
  const int nt = a.batch > 1 && item_work < kParallelMinWork
                     ? int(std::min<int64_t>(max_threads(), a.batch))
                     : 1;
  if (nt == 1) {  // items one after the other, each one threaded inside
    Scratch s = make_scratch(a, plan);
    for (int64_t p = 0; p < a.batch; ++p) run_item(a, plan, p, shared_b.get(), bias, s, true);
    return;
  }
  // Small items: threads take whole items, each with its own scratch.
  std::vector<Scratch> scratch;
  for (int i = 0; i < nt; ++i) scratch.push_back(make_scratch(a, plan));
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t p = 0; p < a.batch; ++p)
    run_item(a, plan, p, shared_b.get(), bias, scratch[thread_id()], false);
}

}  // namespace unet::cpu
