// What the kernels know about an array: a raw pointer, its element type, shape, strides
// and device. The bindings build these from numpy / CuPy arrays (csrc/bindings/array.cpp);
// nothing below the bindings sees a Python object.
#pragma once

#include <cstdint>
#include <vector>

namespace unet {

// Float16 is IEEE binary16, BFloat16 the top half of a float32 (ml_dtypes.bfloat16 in
// Python). Only the mixed-precision kernels take the 16-bit types; the others check.
enum class DType : int8_t { Float32, Float64, Float16, BFloat16 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Float16: return "float16";
    default: return "bfloat16";
  }
}
inline int64_t dtype_size(DType d) {
  switch (d) {
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    default: return 2;
  }
}

enum class DeviceType : int8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;  // CUDA ordinal; 0 on the CPU
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

struct TensorArg {
  void* ptr = nullptr;
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in bytes, as numpy and __cuda_array_interface__ give them
  Device device;
  bool writeable = false;

  int64_t ndim() const { return static_cast<int64_t>(shape.size()); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  int64_t nbytes() const { return numel() * dtype_size(dtype); }
  // Row-major without gaps. Strides of size-1 dims, and of empty arrays, do not matter.
  bool is_contiguous() const {
    if (numel() == 0) return true;
    int64_t expected = dtype_size(dtype);
    for (int64_t d = ndim() - 1; d >= 0; --d) {
      if (shape[d] != 1 && strides[d] != expected) return false;
      expected *= shape[d];
    }
    return true;
  }
  template <typename T>
  T* data() const { return static_cast<T*>(ptr); }
};

}  // namespace unet
