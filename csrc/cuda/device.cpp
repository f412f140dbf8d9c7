// Runtime queries for info() and for checking where CUDA arrays live. Plain C++ against
// the CUDA runtime API: no kernels here.
#include "unet/cuda_device.h"

#include <cuda_runtime_api.h>

namespace unet::cuda {

std::vector<DeviceProperties> devices() {
  std::vector<DeviceProperties> out;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver / no device: clear the error, report none
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    out.push_back({p.name, p.major, p.minor, static_cast<int64_t>(p.totalGlobalMem)});
  }
  return out;
}

int pointer_device(const void* ptr) {
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  const bool on_gpu = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
  return on_gpu ? attr.device : -1;
}

}  // namespace unet::cuda
