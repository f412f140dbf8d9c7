// LSTM with layer normalization and zoneout, GRU with zoneout: one call per layer and
// direction for the whole sequence, beside the plain kernels of unet/rnn.h (same
// arguments, same padding and reverse rules; no projection).
//
// Layer normalization (Ba et al. 2016, recurrent networks), LSTM only:
//   LN(a; γ, β) = γ (a - mean(a)) / sqrt(var(a) + eps) + β      over the row's features
//   pre = LN(x W_ih^T; γ_ih, β_ih) + LN(h W_hh^T; γ_hh, β_hh) + b_ih + b_hh   (over 4H)
//   i,f,g,o = σ,σ,tanh,σ (pre);  c' = f*c + i*g;  h' = o * tanh(LN(c'; γ_c, β_c))  (over H)
// Without it the LSTM and GRU steps are those of unet/rnn.h. fwd.projection_dtype chooses
// how x W_ih^T is computed, as in unet/rnn.h (b_ih is added after the norm when there is one).
//
// Zoneout (Krueger et al. 2016): with keep factors k in [0, 1] per (t, b, unit),
//   h_t = k_h h_{t-1} + (1 - k_h) h'      c_t = k_c c_{t-1} + (1 - k_c) c'   (LSTM)
// Training passes 0/1 masks (1: the unit keeps its previous value); evaluation passes the
// probability p everywhere, the expectation. y_t = h_t.
//
// Workspace (rnn_ln_workspace_size elements) is written by forward and read by backward;
// scratch (rnn_ln_scratch_size) is backward's. Deterministic: every value is computed by one
// thread in one fixed order, whatever the thread count.
#pragma once

#include <cstdint>

#include "unet/activations.h"
#include "unet/rnn.h"

namespace unet {

inline int64_t rnn_ln_workspace_size(RnnMode mode, int64_t T, int64_t B, int64_t H,
                                     bool layer_norm) {
  const int64_t G = rnn_gate_count(mode);
  const int64_t row = mode == RnnMode::LSTM ? G * H + 3 * H + (layer_norm ? 2 * G * H + H + 3 : 0)
                                            : G * H + 2 * H;
  return T * B * row;
}

inline int64_t rnn_ln_scratch_size(RnnMode mode, int64_t T, int64_t B, int64_t H) {
  return T * B * (3 * rnn_gate_count(mode) * H + H);
}

template <typename T>
struct RnnLnArgs {
  // LSTM layer norm: all six, or all null (none).
  const T* ln_ih_weight;  // [4H] γ_ih
  const T* ln_ih_bias;    // [4H] β_ih
  const T* ln_hh_weight;  // [4H]
  const T* ln_hh_bias;    // [4H]
  const T* ln_c_weight;   // [H]
  const T* ln_c_bias;     // [H]
  T eps;
  const T* keep_h;        // [T, B, H] zoneout keep factors of h, or null (none)
  const T* keep_c;        // [T, B, H] of c (LSTM), or null
};

template <typename T>
struct RnnLnGrads {
  T *ln_ih_weight, *ln_ih_bias, *ln_hh_weight, *ln_hh_bias, *ln_c_weight, *ln_c_bias;  // each optional
};

// mode: LSTM or GRU; fwd.w_hr must be null (P == H). Layer norm needs LSTM.
// The step -> row map and the workspace planes of one call, shared by cpu/rnn_ln.cpp and
// cuda/rnn_ln.cu. Planes: gates, hprev, aux, cprev (LSTM), then with layer norm xih, xhh
// (the normalised products), xc (the normalised cell) and rstd.
template <typename T>
struct RnnLnLayout {
  int64_t steps, B, I, H, GH, TB;
  bool lstm, ln, reverse;
  const int64_t* lengths;
  T *gates, *hprev, *aux, *cprev, *xih, *xhh, *xc, *rstd;

  RnnLnLayout(const RnnForwardArgs<T>& a, const RnnLnArgs<T>& e)
      : steps(a.steps), B(a.batch), I(a.input_size), H(a.hidden_size),
        GH(rnn_gate_count(a.mode) * a.hidden_size), TB(a.steps * a.batch),
        lstm(a.mode == RnnMode::LSTM), ln(e.ln_ih_weight != nullptr), reverse(a.reverse),
        lengths(a.lengths) {
    gates = a.workspace;
    hprev = gates + TB * GH;
    aux = hprev + TB * H;
    cprev = aux + TB * H;
    xih = cprev + TB * H;
    xhh = xih + TB * GH;
    xc = xhh + TB * GH;
    rstd = xc + TB * H;
  }
  // Clamped to [0, T]: on a GPU the binding cannot check lengths in device memory.
  UNET_HD int64_t length(int64_t b) const {
    const int64_t L = lengths ? lengths[b] : steps;
    return L < 0 ? 0 : (L > steps ? steps : L);
  }
  // Row index (t * B + b) of sequence b at step s.
  UNET_HD int64_t row(int64_t s, int64_t b) const {
    const int64_t L = length(b);
    return (reverse && s < L ? L - 1 - s : s) * B + b;
  }
};

namespace cpu {
template <typename T>
void rnn_ln_forward(const RnnForwardArgs<T>& fwd, const RnnLnArgs<T>& ext);
// bwd.scratch holds rnn_ln_scratch_size elements; bwd.fwd.workspace is the forward's.
template <typename T>
void rnn_ln_backward(const RnnBackwardArgs<T>& bwd, const RnnLnArgs<T>& ext,
                     const RnnLnGrads<T>& grads);
}  // namespace cpu

// Asynchronous on `stream` of CUDA device `device` (per step: a recurrent GEMM and one block
// per sequence); launch errors throw std::runtime_error.
namespace cuda {
template <typename T>
void rnn_ln_forward(const RnnForwardArgs<T>& fwd, const RnnLnArgs<T>& ext, uintptr_t stream,
                    int device);
template <typename T>
void rnn_ln_backward(const RnnBackwardArgs<T>& bwd, const RnnLnArgs<T>& ext,
                     const RnnLnGrads<T>& grads, uintptr_t stream, int device);
}  // namespace cuda

}  // namespace unet
