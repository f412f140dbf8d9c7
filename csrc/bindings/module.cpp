// The extension module unet._C: build information plus one register_* per kernel family.
#include <pybind11/pybind11.h>

#include <limits>
#include <string>
#include <utility>

#include "bindings.h"
#include "../cpu/gemm.h"
#include "../cpu/matmul_bf16.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef UNET_WITH_CUDA
#include "unet/cuda_device.h"
#endif

namespace py = pybind11;

namespace {

py::list cpu_features() {
  py::list out;
#if defined(__x86_64__) || defined(__i386__)
  // __builtin_cpu_supports takes only literals, hence the table.
  const std::pair<const char*, bool> features[] = {
      {"sse4.2", __builtin_cpu_supports("sse4.2")},
      {"avx", __builtin_cpu_supports("avx")},
      {"avx2", __builtin_cpu_supports("avx2")},
      {"fma", __builtin_cpu_supports("fma")},
      {"avx512f", __builtin_cpu_supports("avx512f")},
      {"avx512bw", __builtin_cpu_supports("avx512bw")},
      {"avx512vl", __builtin_cpu_supports("avx512vl")},
      {"avx512bf16", __builtin_cpu_supports("avx512bf16")},
  };
  for (const auto& [name, present] : features)
    if (present) out.append(name);
#endif
  return out;
}

py::dict info() {
  py::dict d;
  d["version"] = UNET_VERSION;
  py::list archs, devices;
#ifdef UNET_WITH_CUDA
  d["cuda_compiled"] = true;
  const std::string csv = UNET_CUDA_ARCHS;
  for (size_t start = 0; start <= csv.size();) {
    const size_t end = std::min(csv.find(',', start), csv.size());
    archs.append(csv.substr(start, end - start));
    start = end + 1;
  }
  for (const auto& p : unet::cuda::devices()) {
    py::dict dev;
    dev["name"] = p.name;
    dev["compute_capability"] = std::to_string(p.major) + "." + std::to_string(p.minor);
    dev["total_memory"] = p.total_memory;
    devices.append(dev);
  }
#else
  d["cuda_compiled"] = false;
#endif
  d["cuda_archs"] = archs;
  d["cuda_devices"] = devices;
  d["cpu_features"] = cpu_features();
  d["cpu_gemm_kernel"] = unet::cpu::gemm_kernel_isa();
  d["cpu_matmul_bf16_kernel"] = unet::cpu::bf16_kernel_isa();
#ifdef _OPENMP
  d["openmp_threads"] = omp_get_max_threads();
#else
  d["openmp_threads"] = 1;
#endif
  return d;
}

#ifdef UNET_SANITIZE_CANARY
// Deliberate faults that a sanitizer build must report: "heap" reads one element past a
// heap array (AddressSanitizer), "overflow" overflows a signed int (UBSan).
int sanitizer_canary(const std::string& kind, int value) {
  if (kind == "overflow") return value + std::numeric_limits<int>::max();
  int* data = new int[4]();
  asm volatile("" : "+r"(data));  // hide the allocation's size from UBSan's object-size check
  const int past_the_end = data[4];
  delete[] data;
  return past_the_end;
}
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "unet's compiled kernels (C++ with OpenMP, and CUDA when built with it).";
  m.def("info", &info,
        "Build and machine facts: version, cuda_compiled, cuda_archs, cuda_devices, "
        "cpu_features, cpu_gemm_kernel (the GEMM micro-kernel in use), cpu_matmul_bf16_kernel "
        "(what bfloat16 matmul inputs run on), openmp_threads.");
#ifdef UNET_SANITIZE_CANARY
  m.def("_sanitizer_canary", &sanitizer_canary, "Test-only faults: kind 'heap' or 'overflow'.");
#endif
  unet::bindings::register_linear(m);
  unet::bindings::register_matmul(m);
  unet::bindings::register_rnn(m);
  unet::bindings::register_rnn_ln(m);
  unet::bindings::register_conv(m);
  unet::bindings::register_ctc(m);
  unet::bindings::register_optim(m);
}
