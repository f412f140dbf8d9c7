// Recurrent layers, one call per layer and direction for the whole sequence.
//
// Shapes: T steps, B batch, I input features, H hidden size, P output/state size
// (P = proj_size for an LSTM with projection, else P = H), G gates (LSTM 4, GRU 3, RNN 1).
// Gate order and formulas are torch's:
//   LSTM  i,f,g,o = σ,σ,tanh,σ (x W_ih^T + b_ih + h W_hh^T + b_hh)
//         c' = f*c + i*g;  m = o*tanh(c');  h' = m (P == H) or m W_hr^T (projection)
//   GRU   r,z = σ(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z})
//         n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn));  h' = (1-z)*n + z*h
//   RNN   h' = tanh or relu (x W_ih^T + b_ih + h W_hh^T + b_hh)
//
// Variable lengths: sequence b is valid for steps t < lengths[b] (1 <= lengths[b] <= T,
// any order). Padded steps leave the state unchanged, write y = 0 and get no gradient; the
// final state is the one after each sequence's own last step. A reverse direction runs
// t = lengths[b]-1 down to 0 for sequence b.
//
// All arrays are contiguous row-major, preallocated by the caller, on one device; outputs
// are overwritten. `workspace` (rnn_workspace_size elements) is written by forward and read
// by backward; `scratch` (rnn_backward_scratch_size elements) is backward's temporary
// memory. What lies inside them is each implementation's own business (CPU and CUDA may
// differ), within these sizes. Results are deterministic: bitwise the same for the same
// inputs on the same device and build.
#pragma once

#include <cstdint>

#include "unet/tensor.h"

namespace unet {

enum class RnnMode : int8_t { LSTM, GRU, RNN_TANH, RNN_RELU };

inline int64_t rnn_gate_count(RnnMode mode) {
  return mode == RnnMode::LSTM ? 4 : mode == RnnMode::GRU ? 3 : 1;
}

inline int64_t rnn_workspace_size(RnnMode mode, int64_t T, int64_t B, int64_t H, int64_t P) {
  return T * B * (rnn_gate_count(mode) * H + 2 * H + P);
}

inline int64_t rnn_backward_scratch_size(RnnMode mode, int64_t T, int64_t B, int64_t H, int64_t P) {
  return T * B * 2 * rnn_gate_count(mode) * H + 4 * B * (H + P);
}

template <typename T>
struct RnnForwardArgs {
  RnnMode mode;
  int64_t steps, batch, input_size, hidden_size, proj_size;  // T, B, I, H, P
  bool reverse;
  const T* x;               // [T, B, I]
  const T* w_ih;            // [G*H, I]
  const T* w_hh;            // [G*H, P]
  const T* b_ih;            // [G*H] or null
  const T* b_hh;            // [G*H] or null
  const T* w_hr;            // [P, H]; LSTM with projection only, else null
  const T* h0;              // [B, P]
  const T* c0;              // [B, H]; LSTM only, else null
  const int64_t* lengths;   // [B], on the same device as x, or null (every sequence has T steps)
  T* y;                     // [T, B, P]
  T* h_n;                   // [B, P]
  T* c_n;                   // [B, H]; LSTM only, else null
  T* workspace;             // rnn_workspace_size(...)
  // How the forward computes the input projection x W_ih^T + b_ih. Float32 (the default): in
  // T. Float16 or BFloat16 (T = float only, else std::invalid_argument): x and w_ih hold
  // values exactly representable in that dtype (autocast rounded them), and the projection
  // may run as the mixed-precision matmul of unet/matmul.h on 16-bit copies of them (CUDA:
  // tensor cores; CPU: bfloat16 where the AVX-512 BF16 kernel is), or as the float32 GEMM
  // on them as they are: the same exact products, summed in float32 in another order, then
  // b_ih added in float32. (Where copies are made, other values are rounded to nearest even.)
  // Backward's products with x and w_ih (grad_x = dG W_ih, grad_w_ih = dG^T x) stay in T:
  // dG is not rounded.
  DType projection_dtype = DType::Float32;
};

template <typename T>
struct RnnBackwardArgs {
  RnnForwardArgs<T> fwd;    // the forward call's arguments; y and workspace as it left them
  const T* grad_y;          // [T, B, P]
  const T* grad_h_n;        // [B, P] or null (zero)
  const T* grad_c_n;        // [B, H] or null (zero); LSTM only
  // Gradients, each overwritten, each optional (null: not wanted).
  T* grad_x;                // [T, B, I]
  T* grad_w_ih;             // [G*H, I]
  T* grad_w_hh;             // [G*H, P]
  T* grad_b_ih;             // [G*H]
  T* grad_b_hh;             // [G*H]
  T* grad_w_hr;             // [P, H]
  T* grad_h0;               // [B, P]
  T* grad_c0;               // [B, H]
  T* scratch;               // rnn_backward_scratch_size(...)
};

namespace cpu {
template <typename T>
void rnn_forward(const RnnForwardArgs<T>& args);
template <typename T>
void rnn_backward(const RnnBackwardArgs<T>& args);
}  // namespace cpu

// Asynchronous on `stream` of CUDA device `device`; launch errors throw std::runtime_error.
// The per-step path (batched input GEMM, then per step a recurrent GEMM and one fused gate
// kernel) or the persistent path (recurrent weights kept on chip across all steps, a
// grid-wide barrier between steps) is chosen per shape.
namespace cuda {
template <typename T>
void rnn_forward(const RnnForwardArgs<T>& args, uintptr_t stream, int device);
template <typename T>
void rnn_backward(const RnnBackwardArgs<T>& args, uintptr_t stream, int device);
}  // namespace cuda

}  // namespace unet
