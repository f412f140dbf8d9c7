// Host-side queries of the CUDA runtime used by the bindings (csrc/cuda/device.cpp).
// Only compiled with UNET_WITH_CUDA. None of these fails without a GPU or a driver.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace unet::cuda {

struct DeviceProperties {
  std::string name;
  int major = 0, minor = 0;  // compute capability
  int64_t total_memory = 0;  // bytes
};

// Every visible device; empty when there is no GPU or no usable driver.
std::vector<DeviceProperties> devices();

// Ordinal of the device that owns `ptr` (device or managed memory), or -1 when `ptr`
// is not GPU memory the runtime knows.
int pointer_device(const void* ptr);

}  // namespace unet::cuda
