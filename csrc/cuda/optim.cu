// CUDA fused optimizer steps (contract and math in unet/optim.h), the twin of cpu/optim.cpp.
//
// Multi-tensor apply: the host writes one entry per non-empty tensor (its pointers, size,
// coefficients rounded to T, and the index of its first chunk of kChunk elements) into a
// table that reaches the device by one asynchronous copy into stream-ordered memory, freed
// after the launches. Every block walks chunks blockIdx.x, + gridDim.x, ...; a binary
// search over the entries' first chunks finds each chunk's tensor. With found_inf, a first
// launch checks every gradient (a block that meets a non-finite value sets the flag) and
// the update launch returns at once when the flag is set: two launches for any number of
// tensors and no wait on the host. The math rounds each operation (optim.h), so the
// results are bitwise the CPU's.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "cuda_check.cuh"
#include "unet/optim.h"

namespace unet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 16 * kThreads;  // elements per chunk: 16 per thread, coalesced
constexpr int64_t kMaxBlocks = 2048;       // the grid-stride loop covers the rest

template <typename T>
struct SgdEntry {
  T* param;
  const T* grad;
  T* momentum_buffer;
  int64_t numel, first_chunk;
  optim::SgdCoefficients<T> c;
};

template <typename T>
struct AdamEntry {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  T* max_exp_avg_sq;
  int64_t numel, first_chunk;
  optim::AdamCoefficients<T> c;
};

struct UnscaleEntry {
  void* grad;
  int64_t numel, first_chunk;
  DType dtype;
};

// The entry holding chunk c: the last whose first chunk is <= c (every entry has one).
template <typename Entry>
__device__ const Entry& entry_of(const Entry* table, int n, int64_t c) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table[mid].first_chunk <= c)
      lo = mid;
    else
      hi = mid - 1;
  }
  return table[lo];
}

// fn(entry, i) for every element i of every tensor.
template <typename Entry, typename Fn>
__device__ void for_each_element(const Entry* table, int n, int64_t chunks, Fn&& fn) {
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const Entry& e = entry_of(table, n, c);
    const int64_t begin = (c - e.first_chunk) * kChunk;
    const int64_t end = begin + kChunk < e.numel ? begin + kChunk : e.numel;
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) fn(e, i);
  }
}

template <typename Entry>
__global__ void __launch_bounds__(kThreads)
    check_kernel(const Entry* __restrict__ table, int n, int64_t chunks, float* found_inf) {
  if (*found_inf != 0.0f) return;  // already set (by an earlier unscale): nothing to learn
  bool bad = false;
  for_each_element(table, n, chunks, [&](const Entry& e, int64_t i) {
    bad |= !optim::is_finite_(optim::mul_(e.grad[i], e.c.grad_scale));
  });
  if (__syncthreads_or(bad) && threadIdx.x == 0) *found_inf = 1.0f;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sgd_kernel(const SgdEntry<T>* __restrict__ table, int n, int64_t chunks, const float* found_inf) {
  if (found_inf && *found_inf != 0.0f) return;
  for_each_element(table, n, chunks, [](const SgdEntry<T>& e, int64_t i) {
    const optim::SgdCoefficients<T>& c = e.c;
    T p = e.param[i];
    T buf = c.momentum_on && !c.first ? e.momentum_buffer[i] : T(0);
    optim::sgd_element(c, c.l2, c.momentum_on, c.first, c.nesterov, p, e.grad[i], buf);
    e.param[i] = p;
    if (c.momentum_on) e.momentum_buffer[i] = buf;
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    adam_kernel(const AdamEntry<T>* __restrict__ table, int n, int64_t chunks, const float* found_inf) {
  if (found_inf && *found_inf != 0.0f) return;
  for_each_element(table, n, chunks, [](const AdamEntry<T>& e, int64_t i) {
    const optim::AdamCoefficients<T>& c = e.c;
    T p = e.param[i], m = e.exp_avg[i], v = e.exp_avg_sq[i];
    T v_max = c.amsgrad ? e.max_exp_avg_sq[i] : T(0);
    optim::adam_element(c, c.l2, c.amsgrad, p, e.grad[i], m, v, v_max);
    e.param[i] = p;
    e.exp_avg[i] = m;
    e.exp_avg_sq[i] = v;
    if (c.amsgrad) e.max_exp_avg_sq[i] = v_max;
  });
}

template <typename T>
__device__ bool unscale_one(T* g, double inv_scale, bool in_place) {
  const T v = optim::mul_(*g, T(inv_scale));
  if (in_place) *g = v;
  return !optim::is_finite_(v);
}

__global__ void __launch_bounds__(kThreads)
    unscale_kernel(const UnscaleEntry* __restrict__ table, int n, int64_t chunks, double inv_scale,
                   bool in_place, float* found_inf) {
  bool bad = false;
  for_each_element(table, n, chunks, [&](const UnscaleEntry& e, int64_t i) {
    bad |= e.dtype == DType::Float64
               ? unscale_one(static_cast<double*>(e.grad) + i, inv_scale, in_place)
               : unscale_one(static_cast<float*>(e.grad) + i, inv_scale, in_place);
  });
  if (__syncthreads_or(bad) && threadIdx.x == 0) *found_inf = 1.0f;
}

// Stream-ordered device memory, freed (in stream order) when it goes out of scope.
class StreamBuffer {
 public:
  StreamBuffer(size_t bytes, cudaStream_t stream) : stream_(stream) {
    check(cudaMallocAsync(&ptr_, bytes, stream), "optim (CUDA): cudaMallocAsync");
  }
  ~StreamBuffer() { cudaFreeAsync(ptr_, stream_); }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  template <typename T>
  T* get() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

// Sets each entry's first chunk (entries must be non-empty tensors); returns the total.
template <typename Entry>
int64_t number_chunks(std::vector<Entry>& entries) {
  int64_t chunks = 0;
  for (Entry& e : entries) {
    e.first_chunk = chunks;
    chunks += (e.numel + kChunk - 1) / kChunk;
  }
  return chunks;
}

// Copies `entries` to the device and runs the check (when found_inf is given) and the
// update kernel over them on `stream`.
template <typename Entry, typename Update>
void multi_tensor_apply(std::vector<Entry>& entries, float* found_inf, cudaStream_t stream,
                        Update update) {
  const int64_t chunks = number_chunks(entries);
  if (chunks == 0) return;
  const size_t bytes = entries.size() * sizeof(Entry);
  StreamBuffer table(bytes, stream);
  // From pageable memory the copy is staged before the call returns: `entries` may go.
  check(cudaMemcpyAsync(table.get<Entry>(), entries.data(), bytes, cudaMemcpyHostToDevice, stream),
        "optim (CUDA): table copy");
  const int n = static_cast<int>(entries.size());
  const auto blocks = static_cast<unsigned>(std::min(chunks, kMaxBlocks));
  if (found_inf) {
    check_kernel<Entry><<<blocks, kThreads, 0, stream>>>(table.get<Entry>(), n, chunks, found_inf);
    check(cudaGetLastError(), "optim (CUDA): check_kernel launch");
  }
  update<<<blocks, kThreads, 0, stream>>>(table.get<Entry>(), n, chunks, found_inf);
  check(cudaGetLastError(), "optim (CUDA): update kernel launch");
}

template <typename T>
void sgd_step_typed(const FusedStepArgs<SgdTensor>& a, cudaStream_t stream) {
  std::vector<SgdEntry<T>> entries;
  for (const SgdTensor& t : a.tensors)
    if (t.numel > 0)
      entries.push_back({static_cast<T*>(t.param), static_cast<const T*>(t.grad),
                         static_cast<T*>(t.momentum_buffer), t.numel, 0,
                         optim::sgd_coefficients<T>(t, a.inv_scale)});
  multi_tensor_apply(entries, a.found_inf, stream, sgd_kernel<T>);
}

template <typename T>
void adam_step_typed(const FusedStepArgs<AdamTensor>& a, cudaStream_t stream) {
  std::vector<AdamEntry<T>> entries;
  for (const AdamTensor& t : a.tensors)
    if (t.numel > 0)
      entries.push_back({static_cast<T*>(t.param), static_cast<const T*>(t.grad),
                         static_cast<T*>(t.exp_avg), static_cast<T*>(t.exp_avg_sq),
                         static_cast<T*>(t.max_exp_avg_sq), t.numel, 0,
                         optim::adam_coefficients<T>(t, a.inv_scale)});
  multi_tensor_apply(entries, a.found_inf, stream, adam_kernel<T>);
}

}  // namespace

void sgd_step(const FusedStepArgs<SgdTensor>& args, uintptr_t stream, int device) {
  DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (args.dtype == DType::Float64)
    sgd_step_typed<double>(args, s);
  else
    sgd_step_typed<float>(args, s);
}

void adam_step(const FusedStepArgs<AdamTensor>& args, uintptr_t stream, int device) {
  DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (args.dtype == DType::Float64)
    adam_step_typed<double>(args, s);
  else
    adam_step_typed<float>(args, s);
}

bool unscale_and_check(const UnscaleArgs& args, uintptr_t stream, int device) {
  DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  std::vector<UnscaleEntry> entries;
  for (const UnscaleTensor& t : args.tensors)
    if (t.numel > 0) entries.push_back({t.grad, t.numel, 0, t.dtype});
  const int64_t chunks = number_chunks(entries);
  if (chunks == 0) return false;
  const size_t bytes = entries.size() * sizeof(UnscaleEntry);
  StreamBuffer table(bytes, s), flag(sizeof(float), s);
  check(cudaMemsetAsync(flag.get<float>(), 0, sizeof(float), s), "unscale_and_check (CUDA): flag");
  check(cudaMemcpyAsync(table.get<UnscaleEntry>(), entries.data(), bytes, cudaMemcpyHostToDevice, s),
        "unscale_and_check (CUDA): table copy");
  const auto blocks = static_cast<unsigned>(std::min(chunks, kMaxBlocks));
  unscale_kernel<<<blocks, kThreads, 0, s>>>(table.get<UnscaleEntry>(), static_cast<int>(entries.size()),
                                             chunks, args.inv_scale, args.in_place, flag.get<float>());
  check(cudaGetLastError(), "unscale_and_check (CUDA): launch");
  float found = 0.0f;
  check(cudaMemcpyAsync(&found, flag.get<float>(), sizeof(float), cudaMemcpyDeviceToHost, s),
        "unscale_and_check (CUDA): flag copy");
  check(cudaStreamSynchronize(s), "unscale_and_check (CUDA): cudaStreamSynchronize");
  return found != 0.0f;
}

}  // namespace unet::cuda
