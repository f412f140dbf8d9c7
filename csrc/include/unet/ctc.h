// Connectionist temporal classification (Graves et al. 2006) with torch.nn.CTCLoss's meaning.
//
// For sequence n: log_probs[t, n, c] for t < input_lengths[n] (later steps are padding),
// target labels y_1..y_S (S = target_lengths[n]) and the extended sequence
// l' = (blank, y_1, blank, y_2, ..., y_S, blank) of L = 2S + 1 labels. In log space:
//   alpha[0, 0] = lp[0, blank], alpha[0, 1] = lp[0, y_1], alpha[0, s > 1] = -inf
//   alpha[t, s] = lp[t, l'_s] + lse(alpha[t-1, s], alpha[t-1, s-1], alpha[t-1, s-2] if
//                 l'_s != blank and l'_s != l'_{s-2})   (a repeat needs a blank between)
//   loss[n] = -lse(alpha[Tn-1, L-1], alpha[Tn-1, L-2])
// beta is the mirror image, started at the last step (beta[t, s] includes lp[t, l'_s], so
// alpha + beta counts it twice). The gradient is the exact derivative of loss[n]:
//   d loss[n] / d lp[t, n, c] = -exp(lse_{s: l'_s = c}(alpha[t, s] + beta[t, s]) + loss[n]
//                                    - lp[t, n, c])      (minus the occupancy of class c)
// for t < Tn, 0 where no path goes through (t, c), and 0 for t >= Tn. (torch returns
// softmax(lp) minus the occupancy instead: the two agree after log_softmax's backward, which
// is how CTC is used; this one is also the true gradient for unnormalised log_probs.)
// Impossible alignments (Tn too short for the target, or every path through a -inf) give
// loss = inf and NaN gradients for t < Tn, as in torch; with zero_infinity, loss 0 and
// gradient 0. Tn = 0 gives loss 0 for an empty target, else inf.
//
// Targets are padded (targets[n * target_stride + i], target_stride >= max target length)
// or concatenated (target_stride < 0: sequence n starts after the first n target lengths).
// Both implementations run every sequence from its own lengths, one sequence per thread
// (CPU, OpenMP) or block (CUDA); results are run-to-run identical.
#pragma once

#include <cstdint>

namespace unet {

template <typename T>
struct CtcArgs {
  int64_t steps, batch, classes;  // log_probs [steps, batch, classes]
  int64_t max_target_length;      // S_max: the workspace's rows hold 2 * S_max + 1 labels
  int64_t target_stride;          // padded: the targets' row length; < 0: concatenated
  const T* log_probs;
  const int64_t* targets;
  int64_t targets_size;           // elements of targets (the CUDA kernel's bounds)
  const int64_t* input_lengths;   // [batch], each in [0, steps]
  const int64_t* target_lengths;  // [batch], each in [0, S_max] (and the padded row length)
  int64_t blank;                  // in [0, classes); never a target label
  bool zero_infinity;
  T* loss;       // [batch], the negative log-likelihood of each sequence (no reduction)
  T* grad;       // [steps, batch, classes] d loss[n] / d log_probs, or null: loss only
  T* workspace;  // [batch, steps + 2, 2 * S_max + 1]: alpha for every step, two rows of beta
};

// Elements of the workspace.
inline int64_t ctc_workspace_size(int64_t steps, int64_t batch, int64_t max_target_length) {
  return batch * (steps + 2) * (2 * max_target_length + 1);
}

// The CPU kernel trusts its arguments (the bindings check them).
namespace cpu {
template <typename T>
void ctc_loss(const CtcArgs<T>& args);
}  // namespace cpu

// Asynchronous: queued on `stream` (a cudaStream_t as an integer) of CUDA device `device`.
// The index arrays live on the device, where the bindings cannot read them: a sequence whose
// lengths or labels are out of range gets loss NaN and gradient NaN instead of a read out
// of bounds. Launch errors throw std::runtime_error; a target too long for the block's
// shared memory throws std::invalid_argument.
namespace cuda {
template <typename T>
void ctc_loss(const CtcArgs<T>& args, uintptr_t stream, int device);
}  // namespace cuda

}  // namespace unet
