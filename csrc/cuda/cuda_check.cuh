// Host-side helpers for CUDA launchers: error checks, the current-device guard and
// stream-ordered temporary memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace unet::cuda {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Makes `device` current for the launches and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    changed_ = previous_ != device;
    if (changed_) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

// n elements of T of temporary device memory, stream-ordered: allocated on `stream` and
// freed on it after the kernels queued before the destructor runs, also when a launch
// throws. No synchronisation. n == 0: none (p is null).
template <typename T>
struct DeviceBuffer {
  T* p = nullptr;
  cudaStream_t s;
  DeviceBuffer(int64_t n, cudaStream_t stream, const char* what = "temporary device memory (cudaMallocAsync)")
      : s(stream) {
    if (n > 0) check(cudaMallocAsync(&p, size_t(n) * sizeof(T), s), what);
  }
  ~DeviceBuffer() {
    if (p) cudaFreeAsync(p, s);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace unet::cuda
