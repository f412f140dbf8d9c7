// The CPU GEMM behind every matrix product of the CPU kernels:
//
//   C[i,j] = epilogue( sum_k A(i,k) * B(j,k) )      i < M, j < N, k < K
//
// Both operands are addressed "row by k", A(i,k) = a.data[i*a.row_stride + k*a.k_stride]
// and B(j,k) likewise, so that x W^T, g W and g^T x are all the same call with different
// strides. C is row-major with leading dimension ldc and is overwritten.
//
// The result depends only on the inputs, never on the number of threads: threads split
// M and N, and every C element is summed over k in the same fixed order.
#pragma once

#include <cstdint>
#include <memory>

#include "unet/activations.h"

namespace unet::cpu {

template <typename T>
struct GemmOperand {
  const T* data;
  int64_t row_stride, k_stride;
  // When set, each value is multiplied by activation_derivative(dact, dpre[same offset])
  // as it is read: the backward pass's g = grad_out * act'(preact) without storing g.
  const T* dpre = nullptr;
  Activation dact = Activation::None;
};

// z = acc + bias[j]; preact[i*ldc + j] = z; C = act(z). Every part optional.
template <typename T>
struct GemmEpilogue {
  const T* bias = nullptr;
  Activation act = Activation::None;
  T* preact = nullptr;
};

// K == 0 is valid and gives C = act(bias) (zeros without bias and activation).
template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const GemmOperand<T>& A, const GemmOperand<T>& B,
          T* C, int64_t ldc, const GemmEpilogue<T>& epilogue = {});

struct AlignedFree {
  void operator()(void* p) const;
};
// 64-byte aligned, uninitialised storage for n elements (throws std::bad_alloc).
template <typename T>
using AlignedArray = std::unique_ptr<T[], AlignedFree>;
template <typename T>
AlignedArray<T> aligned_array(int64_t n);

// The B operand (N x K) packed once in the micro-kernel's order, for many products with
// the same matrix: a recurrent layer multiplies by its weights at every step, and packing
// them each time would read and write the whole matrix once more per step.
template <typename T>
struct PackedOperand {
  int64_t N = 0, K = 0;
  AlignedArray<T> data;
};
template <typename T>
PackedOperand<T> pack_operand(int64_t N, int64_t K, const GemmOperand<T>& B);

// gemm(M, B.N, B.K, A, <the operand B was packed from>, C, ldc, epilogue), bit for bit.
template <typename T>
void gemm(int64_t M, const GemmOperand<T>& A, const PackedOperand<T>& B, T* C, int64_t ldc,
          const GemmEpilogue<T>& epilogue = {});

// The same product cut by columns and run by the calling thread alone, for callers that
// share out the columns among their own threads inside one parallel region (a recurrent
// layer's time loop): pack_rows packs A (M x K) into packed_rows_size(M, K) elements, once
// for any number of gemm_packed_columns calls, which write the columns [j0, j1) of C (and
// their epilogue). j0 is a multiple of gemm_panel_width(), j1 too or B.N. Bit for bit the
// same values as gemm(M, A, B, ...). No allocation, no threads.
template <typename T>
int64_t gemm_panel_width();
template <typename T>
int64_t packed_rows_size(int64_t M, int64_t K);
template <typename T>
void pack_rows(int64_t M, int64_t K, const GemmOperand<T>& A, T* dst);
template <typename T>
void gemm_packed_columns(int64_t M, const T* a_packed, const PackedOperand<T>& B, int64_t j0,
                         int64_t j1, T* C, int64_t ldc, const GemmEpilogue<T>& epilogue = {});

// Which micro-kernel runtime dispatch chose on this CPU: "avx512", "avx2" or "generic"
// (the environment variable UNET_CPU_ISA=avx2|generic, read once, asks for a narrower one).
const char* gemm_kernel_isa();

}  // namespace unet::cpu
