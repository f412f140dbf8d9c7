// What the two CUDA recurrent paths share (cuda/rnn.cu: per-step path and dispatch,
// cuda/rnn_persistent.cu: persistent path): the cell math of one hidden unit and one batch
// row, the layout of workspace and scratch, and the entry points of the persistent path.
//
// Cell math (torch's gate order and formulas, see unet/rnn.h); σ and tanh are
// unet::sigmoid and unet::tanh_ of unet/activations.h, the functions the CPU kernels call:
//   LSTM  i,f,g,o = σ,σ,tanh,σ(pre);  c' = f*c + i*g;  m = o*tanh(c')
//         backward, given dm and the carried dc':  dc = dc' + dm*o*(1 - tanh²c');
//         d pre = (dc*g * i(1-i), dc*c * f(1-f), dc*i * (1-g²), dm*tanh c' * o(1-o));
//         dc_prev = dc*f
//   GRU   r,z = σ(x_r + h_r), σ(x_z + h_z);  n = tanh(x_n + r*hn);  h' = (1-z)*n + z*h
//         (hn = h W_hn^T + b_hn).  Backward, given dh': dn = dh'(1-z), dz = dh'(h-n),
//         dpn = dn(1-n²): d pre_x = (dpn*hn * r(1-r), dz * z(1-z), dpn), d pre_h the same but
//         dpn*r for n; the direct path to h is dh'*z.
//   RNN   h' = tanh(pre) or relu(pre); d pre = dh'(1-h'²) or dh' [h' > 0].
//
// Workspace (rnn_workspace_size = T*B*(G*H + 2H + P) elements), regions indexed by time t,
// not by processing order, so that weight gradients are single GEMMs over all T*B rows:
//   gates [T,B,G*H]  the summed pre-activations, overwritten by the activated gates (zeros
//                    on padded steps)
//   aux   [T,B,H]    LSTM: the cell after the step (carried on padded steps); GRU: hn
//   tanhc [T,B,H]    LSTM: tanh of the cell (zero on padded steps)
//   hprev [T,B,P]    the state before the step: h0 at the first processed step
// Scratch (rnn_backward_scratch_size = T*B*2*G*H + 4B(H+P)):
//   dgi [T,B,G*H]    d pre-activation on the input side (zero on padded steps)
//   dgh [T,B,G*H]    GRU: d pre-activation on the recurrent side (LSTM and RNN: dgi itself)
//   dh  [T,B,P]      LSTM with projection: dL/dh' (zero on padded steps), in dgh's place
//   dh_carry [B,P], dc_carry [B,H], dm [B,H]: the running state gradients, the projection's dm
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_check.cuh"
#include "unet/activations.h"
#include "unet/rnn.h"

namespace unet::cuda::rnn {

// unet::rnn_gate_count for device code.
UNET_HD int64_t gate_count(RnnMode mode) {
  return mode == RnnMode::LSTM ? 4 : mode == RnnMode::GRU ? 3 : 1;
}

// ---- forward cells: pre-activations in, activated gates and new state out ----

template <typename T>
UNET_HD void lstm_cell_forward(const T pre[4], T c_prev, T gate[4], T& c, T& tanh_c) {
  gate[0] = sigmoid(pre[0]);
  gate[1] = sigmoid(pre[1]);
  gate[2] = tanh_(pre[2]);
  gate[3] = sigmoid(pre[3]);
  c = gate[1] * c_prev + gate[0] * gate[2];
  tanh_c = tanh_(c);
}

// pre_r, pre_z: x and h parts summed; x_n without the h part; hn = h W_hn^T + b_hn.
template <typename T>
UNET_HD T gru_cell_forward(T pre_r, T pre_z, T x_n, T hn, T h_prev, T gate[3]) {
  gate[0] = sigmoid(pre_r);
  gate[1] = sigmoid(pre_z);
  gate[2] = tanh_(x_n + gate[0] * hn);
  return (T(1) - gate[1]) * gate[2] + gate[1] * h_prev;
}

template <typename T>
UNET_HD T rnn_cell_forward(bool relu, T pre) {
  return relu ? (pre > T(0) ? pre : T(0)) : tanh_(pre);
}

// ---- backward cells ----

// dc: in, the gradient carried into c'; out, the gradient of the previous cell.
template <typename T>
UNET_HD void lstm_cell_backward(const T gate[4], T c_prev, T tanh_c, T dm, T& dc, T dpre[4]) {
  const T i = gate[0], f = gate[1], g = gate[2], o = gate[3];
  const T dcell = dc + dm * o * (T(1) - tanh_c * tanh_c);
  dpre[0] = dcell * g * i * (T(1) - i);
  dpre[1] = dcell * c_prev * f * (T(1) - f);
  dpre[2] = dcell * i * (T(1) - g * g);
  dpre[3] = dm * tanh_c * o * (T(1) - o);
  dc = dcell * f;
}

// Returns the direct gradient of h (dh' * z); dgi/dgh: input-side and recurrent-side
// pre-activation gradients.
template <typename T>
UNET_HD T gru_cell_backward(const T gate[3], T hn, T h_prev, T dh, T dgi[3], T dgh[3]) {
  const T r = gate[0], z = gate[1], n = gate[2];
  const T dpn = dh * (T(1) - z) * (T(1) - n * n);
  dgi[0] = dgh[0] = dpn * hn * r * (T(1) - r);
  dgi[1] = dgh[1] = dh * (h_prev - n) * z * (T(1) - z);
  dgi[2] = dpn;
  dgh[2] = dpn * r;
  return dh * z;
}

template <typename T>
UNET_HD T rnn_cell_backward(bool relu, T out, T dh) {
  return relu ? (out > T(0) ? dh : T(0)) : dh * (T(1) - out * out);
}

// ---- layout ----

struct Layout {
  int64_t T, B, H, P, G, GH;
  bool reverse;
  UNET_HD Layout(RnnMode mode, int64_t steps, int64_t batch, int64_t hidden, int64_t proj, bool rev)
      : T(steps), B(batch), H(hidden), P(proj), G(gate_count(mode)), GH(G * hidden),
        reverse(rev) {}
  // The time processed at step s (0 <= s < T) of the recurrence.
  UNET_HD int64_t time(int64_t s) const { return reverse ? T - 1 - s : s; }
  // Workspace offsets (elements).
  int64_t gates() const { return 0; }
  int64_t aux() const { return T * B * GH; }
  int64_t tanhc() const { return T * B * (GH + H); }
  int64_t hprev() const { return T * B * (GH + 2 * H); }
  // Scratch offsets (elements).
  int64_t dgi() const { return 0; }
  int64_t dgh() const { return T * B * GH; }
  int64_t dh() const { return T * B * GH; }
  int64_t dh_carry() const { return 2 * T * B * GH; }
  int64_t dc_carry() const { return 2 * T * B * GH + B * P; }
  int64_t dm() const { return 2 * T * B * GH + B * (P + H); }
};

// ---- host helpers ----

// ---- the persistent path (cuda/rnn_persistent.cu) ----
//
// Runs the whole recurrence in one cooperative kernel, after the per-step path's input
// projection has filled the gates region (forward), or before its weight-gradient GEMMs
// (backward: fills dgi/dgh, grad_h0, grad_c0). Returns false without launching anything
// when the shape does not fit (projection, batch > 32, recurrent weights too large for the
// grid's shared memory, no cooperative launch); `why` then says why.
template <typename T>
bool persistent_forward(const RnnForwardArgs<T>& a, cudaStream_t stream, std::string* why);
template <typename T>
bool persistent_backward(const RnnBackwardArgs<T>& a, T* dgi, T* dgh, cudaStream_t stream,
                         std::string* why);

}  // namespace unet::cuda::rnn
