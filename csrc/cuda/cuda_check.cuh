// Host-side helpers for CUDA launchers: error checks, the current-device guard and
// stream-ordered temporary memory.
#pragma once

#include <cuda_runtime.h>

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

// Temporary device memory, stream-ordered: allocated on `stream` and freed on it after the
// kernels queued before the destructor runs, also when a launch throws.
class Workspace {
 public:
  Workspace(size_t bytes, cudaStream_t stream, const char* what) : stream_(stream) {
    check(cudaMallocAsync(&ptr_, bytes, stream), what);
  }
  ~Workspace() { cudaFreeAsync(ptr_, stream_); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace unet::cuda
