// The input projection of the CPU recurrent layers (rnn.cpp, rnn_ln.cpp): the one GEMM over
// all T*B rows that starts a forward pass.
#pragma once

#include "unet/rnn.h"

namespace unet::cpu {

// gates [T*B, G*H] (row-major, overwritten) = x W_ih^T + bias (bias [G*H] or null), as
// a.projection_dtype asks (unet/rnn.h): bfloat16 runs matmul()'s AVX-512 BF16 kernel where
// the CPU has it; otherwise the float32 GEMM. The same result for any thread count.
template <typename T>
void rnn_input_projection(const RnnForwardArgs<T>& a, const T* bias, T* gates);

}  // namespace unet::cpu
