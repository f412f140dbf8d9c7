// Python arguments -> TensorArg, and the checks every binding shares. This is the one
// place that knows numpy's buffer protocol and CuPy's __cuda_array_interface__.
// Every failure raises TypeError (wrong kind of object, wrong dtype) or ValueError (wrong
// shape, layout, device, aliasing, value) with a message that starts with the argument's
// name and says what was expected and what came.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "unet/activations.h"
#include "unet/tensor.h"

namespace unet::bindings {

namespace py = pybind11;

enum class Role { Input, Output };

// An array argument. For numpy arrays the exported buffer is held while this lives, so
// the array cannot be resized under a running kernel (a bfloat16 numpy array, which has no
// buffer, is held by a reference instead). Destroy with the GIL held.
struct Array {
  std::string name;
  TensorArg t;  // for an int64 array t.dtype is Float64: the same 8-byte elements
  std::optional<py::buffer_info> buffer;
  bool is_int64 = false;  // an index array from parse_optional_int64_array
  py::object owner{};     // the array itself, where there is no buffer to hold
};

// Parses `obj` (numpy array or any buffer, or an object with __cuda_array_interface__):
// float32/float64, C-contiguous, writeable when it is an Output. None gives nullopt.
// 16-bit arrays are refused here (TypeError): only the mixed-precision matmul takes them.
std::optional<Array> parse_optional_array(py::handle obj, const char* name, Role role);
Array parse_array(py::handle obj, const char* name, Role role);

// The same for the mixed-precision matmul's matrices: float32, float16 (numpy 'e', CUDA
// typestr '<f2') or bfloat16, and strided: every stride a non-negative multiple of the
// element size and the last one the element size, so that rows may be padded (a view into
// a wider array) and a batch stride may be 0 (np.broadcast_to). bfloat16 is an array whose
// dtype is ml_dtypes.bfloat16: a numpy array (read through __array_interface__, as it has
// no buffer-protocol format), or a CuPy array (CuPy >= 14 knows ml_dtypes.bfloat16; older
// CuPy has no bfloat16 at all). A uint16 array is never taken for bfloat16: the dtype
// says what the bits mean, not an extra argument.
std::optional<Array> parse_optional_matrix_array(py::handle obj, const char* name, Role role);
Array parse_matrix_array(py::handle obj, const char* name, Role role);
// The same as parse_optional_array for the kernels with a mixed-precision form (the
// convolutions): float32, float64, float16 or bfloat16 (as parse_optional_matrix_array
// reads them), C-contiguous.
std::optional<Array> parse_optional_any_float_array(py::handle obj, const char* name, Role role);
Array parse_any_float_array(py::handle obj, const char* name, Role role);
// The same for an int64 input array (indices, lengths); the shape and device checks below
// accept it, and it counts in the overlap checks.
std::optional<Array> parse_optional_int64_array(py::handle obj, const char* name);

// One expected dimension: its name and size, or size < 0 for "any".
struct Dim {
  const char* name;
  int64_t size = -1;
};
// Checks ndim and sizes, e.g. "weight: expected a 2-D array of shape (N, K=3) matching
// x (M=2, K=3), got shape (4, 5)". `context` may be empty.
void check_shape(const Array& a, std::initializer_list<Dim> dims, const std::string& context = "");
// "(2, 3)", "(4,)": a shape as Python writes it.
// The name of obj's type, for messages ("int", "ndarray", ...).
std::string type_name(py::handle obj);
// TypeError / ValueError "<name>: <msg>": every rejection names the argument.
[[noreturn]] void type_error(const std::string& name, const std::string& msg);
[[noreturn]] void value_error(const std::string& name, const std::string& msg);

std::string shape_str(const std::vector<int64_t>& shape);
// "x (M=2, K=3)": an already checked array with its dimension names, for contexts.
std::string describe(const Array& a, std::initializer_list<const char*> dim_names);

// Whether every given output (null: absent) has no elements: nothing to compute.
bool all_empty(std::initializer_list<const Array*> outputs);

// Null entries (absent optional arguments) are skipped by the checks below.
// Float arrays only.
void check_same_dtype(const Array& ref, std::initializer_list<const Array*> others);
// All arrays on the CPU, or all on one CUDA device (empty arrays may be anywhere).
// Returns that device.
Device check_same_device(std::initializer_list<const Array*> arrays);
Device check_same_device(const std::vector<const Array*>& arrays);
// No output may share memory with an input or with another output (memory spans from the
// first to the last element, so strided arrays count with their gaps).
void check_no_overlap(std::initializer_list<const Array*> outputs,
                      std::initializer_list<const Array*> inputs);

Activation parse_activation(py::handle obj);
const char* activation_name(Activation act);
// ValueError naming preact when an activation is given without it (backward needs it).
void require_preact(const std::optional<Array>& preact, Activation act);
// A cudaStream_t as a Python int (e.g. cupy.cuda.get_current_stream().ptr); 0 = default.
uintptr_t parse_stream(py::handle obj);
// A Python bool (TypeError otherwise).
bool parse_bool(py::handle obj, const char* name);
// A Python int (not a bool) that fits int64 (TypeError / ValueError otherwise).
int64_t parse_int(py::handle obj, const char* name);

inline const Array* ptr(const std::optional<Array>& a) { return a ? &*a : nullptr; }

template <typename T>
T* data(const std::optional<Array>& a) {
  return a ? a->t.data<T>() : nullptr;
}

// Calls f(T{}) with T the C++ type of `dtype`, float32 or float64 (what parse_array takes).
template <typename F>
void dispatch_dtype(DType dtype, F&& f) {
  if (dtype == DType::Float32)
    f(float{});
  else if (dtype == DType::Float64)
    f(double{});
  else
    throw py::type_error(std::string("expected float32 or float64, got ") + dtype_name(dtype));
}

}  // namespace unet::bindings
