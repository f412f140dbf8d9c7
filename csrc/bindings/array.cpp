#include "array.h"

#include <sstream>
#include <utility>
#include <vector>

#ifdef UNET_WITH_CUDA
#include "unet/cuda_device.h"
#endif

namespace unet::bindings {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '(';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << (shape.size() == 1 ? ",)" : ")");
  return s.str();
}

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

bool all_empty(std::initializer_list<const Array*> outputs) {
  for (const Array* a : outputs)
    if (a && a->t.numel() > 0) return false;
  return true;
}

void type_error(const std::string& name, const std::string& msg) { throw py::type_error(name + ": " + msg); }
void value_error(const std::string& name, const std::string& msg) { throw py::value_error(name + ": " + msg); }

namespace {

// What numpy calls the array's dtype, for messages; falls back to the buffer format.
std::string dtype_of(py::handle obj, const std::string& fallback) {
  try {
    if (py::hasattr(obj, "dtype")) return py::str(obj.attr("dtype"));
  } catch (const py::error_already_set&) {
  }
  return fallback;
}

// What an array argument may hold: float32/float64 (every kernel but matmul), int64
// (indices), the matmul's float32/float16/bfloat16, or any of the four float dtypes (the
// kernels with a mixed-precision form).
enum class Kind { Float, Int64, Matrix, AnyFloat };

bool takes_float64(Kind kind) { return kind == Kind::Float || kind == Kind::AnyFloat; }
bool takes_16bit(Kind kind) { return kind == Kind::Matrix || kind == Kind::AnyFloat; }

const char* expected_dtypes(Kind kind) {
  switch (kind) {
    case Kind::Float: return "a float32 or float64 array";
    case Kind::Int64: return "an int64 array";
    case Kind::AnyFloat: return "a float32, float64, float16 or bfloat16 array";
    default: return "a float32, float16 or bfloat16 array";
  }
}

// Layout and access checks shared by every kind of array: C-contiguous, except for matmul
// matrices, whose rows must be contiguous (see parse_optional_matrix_array).
void check_layout(const Array& a, Role role, Kind kind) {
  for (int64_t s : a.t.shape)
    if (s < 0) value_error(a.name, "negative dimension in shape " + shape_str(a.t.shape));
  if (kind == Kind::Matrix) {
    const int64_t size = dtype_size(a.t.dtype);
    bool ok = true;
    for (int64_t d = 0; d < a.t.ndim(); ++d)
      ok = ok && a.t.strides[d] >= 0 && a.t.strides[d] % size == 0;
    if (a.t.ndim() > 0 && a.t.shape.back() > 1) ok = ok && a.t.strides.back() == size;
    if (!ok)
      value_error(a.name, "expected contiguous rows (last stride " + std::to_string(size) +
                              " bytes, every stride a non-negative multiple of it), got strides " +
                              shape_str(a.t.strides) + " (bytes) for shape " + shape_str(a.t.shape));
  } else if (!a.t.is_contiguous()) {
    value_error(a.name, "expected a C-contiguous array, got strides " + shape_str(a.t.strides) +
                            " (bytes) for shape " + shape_str(a.t.shape) +
                            "; make a contiguous copy (np.ascontiguousarray) first");
  }
  if (role == Role::Output && !a.t.writeable)
    value_error(a.name, "expected a writeable array (it is an output), got a read-only one");
}

// ml_dtypes.bfloat16, in numpy or CuPy: its dtype's name (the typestr is a bare '<V2').
bool is_bfloat16(py::handle obj) {
  try {
    return py::hasattr(obj, "dtype") && std::string(py::str(obj.attr("dtype"))) == "bfloat16";
  } catch (const py::error_already_set&) {
    return false;
  }
}

// Native int64 in the buffer protocol's format codes: 'l' or 'q' (numpy writes 'l' on
// LP64 systems), maybe with a native or little-endian byte-order prefix.
bool is_int64_format(std::string f, py::ssize_t itemsize) {
  if (!f.empty() && (f[0] == '@' || f[0] == '=' || f[0] == '<')) f.erase(0, 1);
  return itemsize == 8 && (f == "l" || f == "q");
}

Array parse_buffer(py::handle obj, const std::string& name, Kind kind) {
  Array a{name, {}, std::nullopt};
  try {
    a.buffer = py::reinterpret_borrow<py::buffer>(obj).request(/*writable=*/false);
  } catch (const py::error_already_set& e) {  // e.g. object or datetime arrays
    type_error(name, std::string("expected ") + expected_dtypes(kind) + ", got " +
                         dtype_of(obj, type_name(obj)) + " (" + e.what() + ")");
  }
  const py::buffer_info& b = *a.buffer;
  const bool floats = kind != Kind::Int64;
  if (kind == Kind::Int64 && is_int64_format(b.format, b.itemsize)) {
    a.t.dtype = DType::Float64;
    a.is_int64 = true;
  } else if (floats && b.format == py::format_descriptor<float>::format() && b.itemsize == 4) {
    a.t.dtype = DType::Float32;
  } else if (takes_float64(kind) && b.format == py::format_descriptor<double>::format() &&
             b.itemsize == 8) {
    a.t.dtype = DType::Float64;
  } else if (takes_16bit(kind) && b.format == "e" && b.itemsize == 2) {
    a.t.dtype = DType::Float16;
  } else {
    type_error(name, std::string("expected ") + expected_dtypes(kind) + ", got " +
                         dtype_of(obj, "buffer format '" + b.format + "'"));
  }
  a.t.ptr = b.ptr;
  a.t.shape.assign(b.shape.begin(), b.shape.end());
  a.t.strides.assign(b.strides.begin(), b.strides.end());
  a.t.device = {DeviceType::CPU, 0};
  a.t.writeable = !b.readonly;
  return a;
}

// The entries __array_interface__ and __cuda_array_interface__ (versions 2 and 3) share:
// shape, data=(ptr, readonly), strides (None when C-contiguous), mask (must be None). The
// dtype is the caller's business. Throws py::cast_error / py::error_already_set when
// malformed.
void read_array_interface(const py::dict& ai, Array& a) {
  if (ai.contains("mask") && !ai["mask"].is_none())
    value_error(a.name, "masked arrays are not supported");
  for (py::handle s : py::tuple(ai["shape"])) a.t.shape.push_back(s.cast<int64_t>());
  py::tuple data = ai["data"];
  a.t.ptr = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
  a.t.writeable = !data[1].cast<bool>();
  if (ai.contains("strides") && !ai["strides"].is_none()) {
    for (py::handle s : py::tuple(ai["strides"])) a.t.strides.push_back(s.cast<int64_t>());
  } else {  // C-contiguous
    a.t.strides.assign(a.t.shape.size(), dtype_size(a.t.dtype));
    for (int64_t d = a.t.ndim() - 2; d >= 0; --d)
      a.t.strides[d] = a.t.strides[d + 1] * a.t.shape[d + 1];
  }
  if (a.t.strides.size() != a.t.shape.size())
    value_error(a.name, "malformed array interface: strides and shape differ in length");
}

// A bfloat16 numpy array: numpy's buffer protocol cannot export ml_dtypes' types, so its
// __array_interface__ is read instead, and the array is held by a reference.
Array parse_bfloat16_numpy(py::handle obj, const std::string& name) {
  Array a{name, {}, std::nullopt};
  a.t.dtype = DType::BFloat16;
  a.owner = py::reinterpret_borrow<py::object>(obj);
  try {
    read_array_interface(obj.attr("__array_interface__"), a);
  } catch (const py::cast_error& e) {
    type_error(name, std::string("expected a well-formed __array_interface__, got: ") + e.what());
  } catch (const py::error_already_set& e) {
    type_error(name, std::string("expected a well-formed __array_interface__, got: ") + e.what());
  }
  a.t.device = {DeviceType::CPU, 0};
  return a;
}

// __cuda_array_interface__: see read_array_interface. Its 'stream' entry is not used:
// the caller names the stream to run on, and no synchronisation is hidden here.
Array parse_cuda_array(py::handle obj, const std::string& name, Kind kind) {
#ifndef UNET_WITH_CUDA
  (void)obj;
  (void)kind;
  value_error(name, "expected a CPU array, got a CUDA array, but unet._C was built without "
                    "CUDA (reinstall with nvcc on the PATH, or UNET_CUDA=ON)");
#else
  Array a{name, {}, std::nullopt};
  try {
    py::dict cai = obj.attr("__cuda_array_interface__");
    const std::string typestr = py::str(cai["typestr"]);
    if (kind == Kind::Int64 && typestr == "<i8") {
      a.t.dtype = DType::Float64;
      a.is_int64 = true;
    } else if (kind != Kind::Int64 && typestr == "<f4") {
      a.t.dtype = DType::Float32;
    } else if (takes_float64(kind) && typestr == "<f8") {
      a.t.dtype = DType::Float64;
    } else if (takes_16bit(kind) && typestr == "<f2") {
      a.t.dtype = DType::Float16;
    } else if (takes_16bit(kind) && (typestr == "<V2" || typestr == "|V2") && is_bfloat16(obj)) {
      a.t.dtype = DType::BFloat16;
    } else {
      type_error(name, std::string("expected ") + expected_dtypes(kind) + ", got " +
                           dtype_of(obj, "typestr '" + typestr + "'"));
    }
    read_array_interface(cai, a);
  } catch (const py::cast_error& e) {
    type_error(name, std::string("expected a well-formed __cuda_array_interface__, got: ") + e.what());
  } catch (const py::error_already_set& e) {
    type_error(name, std::string("expected a well-formed __cuda_array_interface__, got: ") + e.what());
  }
  // Empty arrays may carry a null pointer; they pin no device (index -1).
  a.t.device = {DeviceType::CUDA, -1};
  if (a.t.numel() > 0) {
    a.t.device.index = cuda::pointer_device(a.t.ptr);
    if (a.t.device.index < 0)
      value_error(name, "expected a __cuda_array_interface__ pointer to CUDA device memory, got one "
                        "that is not");
  }
  return a;
#endif
}

std::string device_str(const Device& d) {
  if (d.type == DeviceType::CPU) return "the CPU";
  return "CUDA device " + std::to_string(d.index);
}

// hasattr without the AttributeError that py::hasattr builds and drops for every numpy
// array (a formatted message: most of the cost of parsing a small array).
bool has_cuda_array_interface(py::handle obj) {
  PyObject* value = nullptr;
#if PY_VERSION_HEX >= 0x030D0000
  const int found = PyObject_GetOptionalAttrString(obj.ptr(), "__cuda_array_interface__", &value);
#else
  static PyObject* const key = PyUnicode_InternFromString("__cuda_array_interface__");
  const int found = _PyObject_LookupAttr(obj.ptr(), key, &value);
#endif
  Py_XDECREF(value);
  if (found < 0) throw py::error_already_set();
  return found == 1;
}

std::optional<Array> parse_any_array(py::handle obj, const char* name, Role role, Kind kind) {
  if (obj.is_none()) return std::nullopt;
  Array a;
  if (has_cuda_array_interface(obj))
    a = parse_cuda_array(obj, name, kind);
  else if (takes_16bit(kind) && py::hasattr(obj, "__array_interface__") && is_bfloat16(obj))
    a = parse_bfloat16_numpy(obj, name);
  else if (PyObject_CheckBuffer(obj.ptr()))
    a = parse_buffer(obj, name, kind);
  else
    type_error(name, std::string("expected a numpy ") + (kind == Kind::Int64 ? "int64 " : "") +
                         "array (or a CUDA array such as CuPy's), got " + type_name(obj));
  check_layout(a, role, kind);
  return a;
}

}  // namespace

std::optional<Array> parse_optional_array(py::handle obj, const char* name, Role role) {
  return parse_any_array(obj, name, role, Kind::Float);
}

std::optional<Array> parse_optional_int64_array(py::handle obj, const char* name) {
  return parse_any_array(obj, name, Role::Input, Kind::Int64);
}

Array parse_array(py::handle obj, const char* name, Role role) {
  if (obj.is_none()) type_error(name, "expected an array, got None");
  return *parse_optional_array(obj, name, role);
}

std::optional<Array> parse_optional_matrix_array(py::handle obj, const char* name, Role role) {
  return parse_any_array(obj, name, role, Kind::Matrix);
}

Array parse_matrix_array(py::handle obj, const char* name, Role role) {
  if (obj.is_none()) type_error(name, "expected an array, got None");
  return *parse_optional_matrix_array(obj, name, role);
}

std::optional<Array> parse_optional_any_float_array(py::handle obj, const char* name, Role role) {
  return parse_any_array(obj, name, role, Kind::AnyFloat);
}

Array parse_any_float_array(py::handle obj, const char* name, Role role) {
  if (obj.is_none()) type_error(name, "expected an array, got None");
  return *parse_optional_any_float_array(obj, name, role);
}

void check_shape(const Array& a, std::initializer_list<Dim> dims, const std::string& context) {
  bool ok = a.t.ndim() == static_cast<int64_t>(dims.size());
  std::ostringstream want;
  want << '(';
  int64_t d = 0;
  for (const Dim& dim : dims) {
    want << (d ? ", " : "") << dim.name;
    if (dim.size >= 0) want << '=' << dim.size;
    if (ok && dim.size >= 0 && a.t.shape[d] != dim.size) ok = false;
    ++d;
  }
  want << (dims.size() == 1 ? ",)" : ")");
  if (!ok)
    value_error(a.name, "expected a " + std::to_string(dims.size()) + "-D array of shape " +
                            want.str() + (context.empty() ? "" : " " + context) +
                            ", got shape " + shape_str(a.t.shape));
}

std::string describe(const Array& a, std::initializer_list<const char*> dim_names) {
  std::ostringstream s;
  s << a.name << " (";
  int64_t d = 0;
  for (const char* n : dim_names) {
    s << (d ? ", " : "") << n << '=' << a.t.shape[d];
    ++d;
  }
  s << ')';
  return s.str();
}

void check_same_dtype(const Array& ref, std::initializer_list<const Array*> others) {
  for (const Array* a : others)
    if (a && (a->t.dtype != ref.t.dtype || a->is_int64 != ref.is_int64))
      type_error(a->name, std::string("expected ") + dtype_name(ref.t.dtype) + " like " +
                              ref.name + ", got " + dtype_name(a->t.dtype));
}

Device check_same_device(std::initializer_list<const Array*> arrays) {
  return check_same_device(std::vector<const Array*>(arrays));
}

Device check_same_device(const std::vector<const Array*>& arrays) {
  const Array* ref = nullptr;  // the first array that pins a device
  const Array* first = nullptr;
  for (const Array* a : arrays) {
    if (!a) continue;
    if (!first) first = a;
    if (a->t.device.type != first->t.device.type)
      value_error(a->name, std::string("expected an array on ") +
                               (first->t.device.type == DeviceType::CPU ? "the CPU" : "a CUDA device") +
                               " like " + first->name + ", got one on " +
                               (a->t.device.type == DeviceType::CPU ? "the CPU" : "a CUDA device") +
                               " (no implicit copies between devices)");
    if (a->t.device.index < 0) continue;
    if (!ref) ref = a;
    if (a->t.device != ref->t.device)
      value_error(a->name, "expected an array on " + device_str(ref->t.device) + " like " +
                               ref->name + ", got one on " + device_str(a->t.device));
  }
  return ref ? ref->t.device : first->t.device;
}

void check_no_overlap(std::initializer_list<const Array*> outputs,
                      std::initializer_list<const Array*> inputs) {
  // Bytes from the first element to past the last; strides are non-negative here.
  auto span = [](const Array& a) {
    int64_t bytes = dtype_size(a.t.dtype);
    for (int64_t d = 0; d < a.t.ndim(); ++d) bytes += (a.t.shape[d] - 1) * a.t.strides[d];
    return static_cast<uintptr_t>(bytes);
  };
  auto overlap = [&span](const Array& a, const Array& b) {
    if (a.t.numel() == 0 || b.t.numel() == 0) return false;
    const auto a0 = reinterpret_cast<uintptr_t>(a.t.ptr), b0 = reinterpret_cast<uintptr_t>(b.t.ptr);
    return a0 < b0 + span(b) && b0 < a0 + span(a);
  };
  for (const Array* out : outputs) {
    if (!out) continue;
    for (const Array* in : inputs)
      if (in && overlap(*out, *in))
        value_error(out->name, "expected memory of its own, got memory shared with the input " +
                                   in->name + " (outputs must not overlap inputs)");
    for (const Array* other : outputs)
      if (other && other != out && overlap(*out, *other))
        value_error(out->name, "expected memory of its own, got memory shared with the output " +
                                   other->name + " (outputs must not overlap each other)");
  }
}

namespace {
const std::pair<const char*, Activation> kActivations[] = {
    {"none", Activation::None}, {"relu", Activation::ReLU},       {"gelu", Activation::GELU},
    {"tanh", Activation::Tanh}, {"sigmoid", Activation::Sigmoid},
};
const char* kActivationList = "'none', 'relu', 'gelu', 'tanh', 'sigmoid'";
}  // namespace

Activation parse_activation(py::handle obj) {
  if (!py::isinstance<py::str>(obj))
    type_error("activation", std::string("expected a str, one of ") + kActivationList + ", got " +
                                 type_name(obj));
  const std::string s = obj.cast<std::string>();
  for (const auto& [name, act] : kActivations)
    if (s == name) return act;
  value_error("activation", std::string("expected one of ") + kActivationList + ", got '" + s + "'");
}

void require_preact(const std::optional<Array>& preact, Activation act) {
  if (!preact && act != Activation::None)
    value_error("preact", std::string("expected an array when activation is '") + activation_name(act) +
                              "' (the pre-activation is stored there for backward), got None");
}

const char* activation_name(Activation act) {
  for (const auto& [name, a] : kActivations)
    if (a == act) return name;
  return "?";
}

uintptr_t parse_stream(py::handle obj) {
  if (!py::isinstance<py::int_>(obj))
    type_error("stream", "expected an int (a cudaStream_t such as "
                         "cupy.cuda.get_current_stream().ptr; 0 for the default stream), got " +
                             type_name(obj));
  const long long v = PyLong_AsLongLong(obj.ptr());
  if (v == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    value_error("stream", "expected a stream handle that fits 64 bits, got " +
                              std::string(py::str(obj)));
  }
  if (v < 0) value_error("stream", "expected a non-negative stream handle, got " + std::to_string(v));
  return static_cast<uintptr_t>(v);
}

bool parse_bool(py::handle obj, const char* name) {
  if (!PyBool_Check(obj.ptr())) type_error(name, "expected a bool, got " + type_name(obj));
  return obj.ptr() == Py_True;
}

int64_t parse_int(py::handle obj, const char* name) {
  if (!PyLong_Check(obj.ptr()) || PyBool_Check(obj.ptr()))
    type_error(name, "expected an int, got " + type_name(obj));
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
  if (overflow) value_error(name, "expected an int64 value, got " + std::string(py::str(obj)));
  return v;
}

}  // namespace unet::bindings
