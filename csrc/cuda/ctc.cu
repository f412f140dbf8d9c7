// CUDA CTC loss and gradient (math in unet/ctc.h), the twin of cpu/ctc.cpp.
//
// One block per sequence, its threads over the extended labels s. Alpha for every step goes
// to the workspace (one __syncthreads per step); beta runs backwards in two workspace rows,
// and after each beta row the gradient row: every class that occurs in l' has one "head"
// thread (its first position s), which sums the occupancies exp(alpha + beta - lp + nll) over
// the class's positions along a linked list in ascending s, the order of the CPU kernel, so
// results are run-to-run identical. The labels and the links live in shared memory (8 bytes per extended label).
// The index arrays are device memory the bindings could not read: lengths and labels are
// checked here, and a sequence with one out of range gets NaN instead of a bad read.
#include <cuda_runtime.h>
#include <math_constants.h>

#include <climits>
#include <stdexcept>
#include <string>

#include "cuda_check.cuh"
#include "unet/ctc.h"

namespace unet::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -CUDART_INF_F;
}
template <>
__device__ __forceinline__ double neg_inf<double>() {
  return -CUDART_INF;
}

template <typename T>
__device__ __forceinline__ T log_add(T a, T b) {
  const T m = a > b ? a : b;
  if (m == neg_inf<T>()) return m;
  return m + log1p(exp((a > b ? b : a) - m));
}

template <typename T>
__device__ __forceinline__ T log_add3(T a, T b, T c) {
  T m = a > b ? a : b;
  m = m > c ? m : c;
  if (m == neg_inf<T>()) return m;
  return m + log(exp(a - m) + exp(b - m) + exp(c - m));
}

// Fills rows [t0, t1) of sequence n's gradient with v.
template <typename T>
__device__ void fill_rows(const CtcArgs<T>& a, int64_t n, int64_t t0, int64_t t1, T v) {
  const int64_t count = (t1 - t0) * a.classes;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x)
    a.grad[((t0 + i / a.classes) * a.batch + n) * a.classes + i % a.classes] = v;
}

// Where sequence n's targets start, or -1 when a length on the way is out of range.
template <typename T>
__device__ int64_t target_offset(const CtcArgs<T>& a, int64_t n) {
  if (a.target_stride >= 0) return n * a.target_stride;
  int64_t sum = 0;
  for (int64_t m = 0; m < n; ++m) {
    const int64_t len = a.target_lengths[m];
    if (len < 0 || len > a.max_target_length) return -1;
    sum += len;
  }
  return sum;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) ctc_kernel(CtcArgs<T> a) {
  extern __shared__ int shared[];
  const int64_t ld = 2 * a.max_target_length + 1;
  int* lab = shared;       // l'_s
  int* link = shared + ld; // (next position with the same label + 1) * 2 + (s is the head)
  __shared__ int64_t offset;
  __shared__ T nll;

  const int64_t n = blockIdx.x;
  const int64_t steps = a.input_lengths[n], S = a.target_lengths[n], L = 2 * S + 1;
  if (threadIdx.x == 0) offset = target_offset(a, n);
  __syncthreads();
  bool bad = steps < 0 || steps > a.steps || S < 0 || S > a.max_target_length || offset < 0 ||
             (a.target_stride >= 0 && S > a.target_stride) || offset + S > a.targets_size;
  if (!bad) {
    for (int64_t s = threadIdx.x; s < L; s += blockDim.x) {
      const int64_t c = s % 2 == 0 ? a.blank : a.targets[offset + s / 2];
      bad |= c < 0 || c >= a.classes || (s % 2 == 1 && c == a.blank);
      lab[s] = static_cast<int>(c);
    }
  }
  if (__syncthreads_or(bad)) {
    const T nan = T(CUDART_NAN);
    if (threadIdx.x == 0) a.loss[n] = nan;
    if (a.grad) fill_rows(a, n, 0, a.steps, nan);
    return;
  }
  for (int64_t s = threadIdx.x; s < L; s += blockDim.x) {
    int64_t next = -1;
    bool head = true;
    for (int64_t r = s + 2; r < L && next < 0; r += 2)
      if (lab[r] == lab[s]) next = r;
    for (int64_t r = s - 2; r >= 0 && head; r -= 2) head = lab[r] != lab[s];
    link[s] = static_cast<int>((next + 1) * 2 + head);
  }

  auto lp = [&](int64_t t, int64_t c) { return a.log_probs[(t * a.batch + n) * a.classes + c]; };
  // The skip from s - 2 over a blank, allowed between two labels that differ.
  auto can_skip = [&](int64_t s) { return s % 2 == 1 && s >= 2 && lab[s] != lab[s - 2]; };
  T* alpha = a.workspace + n * (a.steps + 2) * ld;
  if (steps > 0) {
    for (int64_t s = threadIdx.x; s < L; s += blockDim.x)
      alpha[s] = s < 2 ? lp(0, lab[s]) : neg_inf<T>();
    __syncthreads();
    for (int64_t t = 1; t < steps; ++t) {
      const T* prev = alpha + (t - 1) * ld;
      for (int64_t s = threadIdx.x; s < L; s += blockDim.x) {
        const T step = s > 0 ? prev[s - 1] : neg_inf<T>();
        const T skip = can_skip(s) ? prev[s - 2] : neg_inf<T>();
        alpha[t * ld + s] = log_add3(prev[s], step, skip) + lp(t, lab[s]);
      }
      __syncthreads();
    }
  }
  if (threadIdx.x == 0) {
    const T* last = alpha + (steps - 1) * ld;
    const T inf = -neg_inf<T>();
    nll = steps == 0 ? (S == 0 ? T(0) : inf) : -(L > 1 ? log_add(last[L - 1], last[L - 2]) : last[0]);
    a.loss[n] = nll == inf && a.zero_infinity ? T(0) : nll;
  }
  __syncthreads();
  if (!a.grad) return;
  fill_rows(a, n, steps, a.steps, T(0));
  if (steps == 0) return;
  if (nll == -neg_inf<T>()) {
    fill_rows(a, n, 0, steps, a.zero_infinity ? T(0) : T(CUDART_NAN));
    return;
  }

  T* cur = alpha + a.steps * ld;
  T* next = cur + ld;
  for (int64_t t = steps - 1; t >= 0; --t) {
    for (int64_t s = threadIdx.x; s < L; s += blockDim.x) {
      if (t == steps - 1) {
        cur[s] = s >= L - 2 ? lp(t, lab[s]) : neg_inf<T>();
      } else {
        const T step = s + 1 < L ? next[s + 1] : neg_inf<T>();
        const T skip = s + 2 < L && can_skip(s + 2) ? next[s + 2] : neg_inf<T>();
        cur[s] = log_add3(next[s], step, skip) + lp(t, lab[s]);
      }
    }
    T* g = a.grad + (t * a.batch + n) * a.classes;
    for (int64_t c = threadIdx.x; c < a.classes; c += blockDim.x) g[c] = T(0);
    __syncthreads();  // beta row t complete; the zeros written before the heads' values
    const T* at = alpha + t * ld;
    for (int64_t s = threadIdx.x; s < L; s += blockDim.x) {
      if (!(link[s] & 1)) continue;
      const T lp_c = lp(t, lab[s]);
      T occupancy = T(0);
      for (int64_t r = s; r >= 0; r = (link[r] >> 1) - 1) {
        const T both = at[r] + cur[r];  // -inf where no path passes (r, t); lp_c may be -inf there
        if (both != neg_inf<T>()) occupancy += exp(both + nll - lp_c);
      }
      g[lab[s]] = -occupancy;
    }
    T* done = next;  // read by no one from here on: the next step's row
    next = cur;
    cur = done;
  }
}

}  // namespace

template <typename T>
void ctc_loss(const CtcArgs<T>& a, uintptr_t stream, int device) {
  if (a.batch == 0) return;
  const int64_t ld = 2 * a.max_target_length + 1;
  if (a.classes > INT_MAX)
    throw std::invalid_argument("ctc_loss (CUDA): at most " + std::to_string(INT_MAX) +
                                " classes, got " + std::to_string(a.classes));
  if (a.batch > INT_MAX)
    throw std::invalid_argument("ctc_loss (CUDA): at most " + std::to_string(INT_MAX) +
                                " sequences, got " + std::to_string(a.batch));
  DeviceGuard guard(device);
  const int64_t smem = 2 * ld * static_cast<int64_t>(sizeof(int));
  if (smem > 48 * 1024) {
    int optin = 0;
    check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
          "ctc_loss (CUDA): cudaDeviceGetAttribute");
    if (smem > optin)
      throw std::invalid_argument("ctc_loss (CUDA): targets up to " +
                                  std::to_string((optin / 8 - 1) / 2) +
                                  " labels fit this GPU's shared memory, got S=" +
                                  std::to_string(a.max_target_length));
    check(cudaFuncSetAttribute(ctc_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)),
          "ctc_loss (CUDA): cudaFuncSetAttribute");
  }
  ctc_kernel<T><<<static_cast<unsigned>(a.batch), kThreads, static_cast<size_t>(smem),
                  reinterpret_cast<cudaStream_t>(stream)>>>(a);
  check(cudaGetLastError(), "ctc_kernel launch");
}

template void ctc_loss<float>(const CtcArgs<float>&, uintptr_t, int);
template void ctc_loss<double>(const CtcArgs<double>&, uintptr_t, int);

}  // namespace unet::cuda
