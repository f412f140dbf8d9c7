// unet._C.conv_forward / conv_backward: validate every argument, then run the CPU or the
// CUDA kernel (csrc/include/unet/conv.h) without the GIL.
#include <string>
#include <vector>

#include "array.h"
#include "bindings.h"
#include "unet/conv.h"

namespace unet::bindings {
namespace {

// Settings larger than this are refused, so that no size arithmetic can overflow.
constexpr int64_t kMaxSetting = int64_t(1) << 31;

// A tuple or list of `count` ints, each at least `min`.
std::vector<int64_t> parse_ints(py::handle obj, const char* name, size_t count, int64_t min) {
  const std::string expected = "expected a tuple of " + std::to_string(count) + " ints >= " +
                               std::to_string(min);
  if (!py::isinstance<py::tuple>(obj) && !py::isinstance<py::list>(obj))
    throw py::type_error(std::string(name) + ": " + expected + ", got " + type_name(obj));
  const py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
  if (seq.size() != count)
    throw py::value_error(std::string(name) + ": " + expected + ", got " +
                          std::to_string(seq.size()) + " values");
  std::vector<int64_t> out;
  for (const py::handle item : seq) {
    if (!PyLong_Check(item.ptr()) || PyBool_Check(item.ptr()))
      throw py::type_error(std::string(name) + ": " + expected + ", got an item of type " +
                           type_name(item));
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(item.ptr(), &overflow);
    if (overflow || v < min || v >= kMaxSetting)
      throw py::value_error(std::string(name) + ": " + expected + " (and < 2**31), got " +
                            std::string(py::str(obj)));
    out.push_back(v);
  }
  return out;
}

int64_t parse_groups(py::handle obj) {
  return parse_ints(py::make_tuple(obj), "groups", 1, 1)[0];
}

// The geometry from the input's shape [N, C_in, H, W], the weight [C_out, C_in/groups, KH, KW]
// and the settings; checks that they fit together.
ConvGeometry geometry(const std::vector<int64_t>& input_shape, const char* input_name,
                      const Array& weight, py::handle stride_, py::handle padding_,
                      py::handle dilation_, py::handle groups_) {
  const std::vector<int64_t> stride = parse_ints(stride_, "stride", 2, 1);
  const std::vector<int64_t> padding = parse_ints(padding_, "padding", 4, 0);
  const std::vector<int64_t> dilation = parse_ints(dilation_, "dilation", 2, 1);
  const int64_t groups = parse_groups(groups_);
  check_shape(weight, {{"C_out"}, {"C_in/groups"}, {"KH"}, {"KW"}});
  ConvGeometry g{input_shape[0], input_shape[1], input_shape[2], input_shape[3],
                 weight.t.shape[0], weight.t.shape[2], weight.t.shape[3],
                 stride[0], stride[1], padding[0], padding[1], padding[2], padding[3],
                 dilation[0], dilation[1], groups};
  if (g.C_in % groups != 0)
    throw py::value_error("groups: expected a divisor of " + std::string(input_name) + "'s C_in=" +
                          std::to_string(g.C_in) + ", got " + std::to_string(groups));
  if (g.C_out % groups != 0)
    throw py::value_error("groups: expected a divisor of weight's C_out=" + std::to_string(g.C_out) +
                          ", got " + std::to_string(groups));
  if (weight.t.shape[1] != g.C_in / groups || g.KH == 0 || g.KW == 0)
    throw py::value_error("weight: expected shape (C_out, C_in/groups=" +
                          std::to_string(g.C_in / groups) + ", KH >= 1, KW >= 1) for " +
                          input_name + " with C_in=" + std::to_string(g.C_in) + " and groups=" +
                          std::to_string(groups) + ", got (" + std::to_string(weight.t.shape[0]) +
                          ", " + std::to_string(weight.t.shape[1]) + ", " +
                          std::to_string(g.KH) + ", " + std::to_string(g.KW) + ")");
  const int64_t span_h = g.dilation_h * (g.KH - 1) + 1, span_w = g.dilation_w * (g.KW - 1) + 1;
  const int64_t padded_h = g.H + g.pad_top + g.pad_bottom, padded_w = g.W + g.pad_left + g.pad_right;
  if (span_h > padded_h || span_w > padded_w)
    throw py::value_error("weight: expected a dilated kernel no larger than the padded input (" +
                          std::to_string(padded_h) + " x " + std::to_string(padded_w) + "), got " +
                          std::to_string(span_h) + " x " + std::to_string(span_w));
  return g;
}

bool is_16bit(DType d) { return d == DType::Float16 || d == DType::BFloat16; }

// The inputs share ref's dtype. With 32/64-bit inputs so do the others; with 16-bit ones
// (the mixed-precision form) the others are float32.
void check_conv_dtypes(const Array& ref, std::initializer_list<const Array*> inputs,
                       std::initializer_list<const Array*> others) {
  check_same_dtype(ref, inputs);
  if (!is_16bit(ref.t.dtype)) return check_same_dtype(ref, others);
  for (const Array* a : others)
    if (a && a->t.dtype != DType::Float32)
      type_error(a->name, std::string("expected float32 with ") + dtype_name(ref.t.dtype) + " " +
                              ref.name + " (the mixed-precision convolution), got " +
                              dtype_name(a->t.dtype));
}

std::string out_context(const ConvGeometry& g) {
  return "for N=" + std::to_string(g.N) + ", C_out=" + std::to_string(g.C_out) + " and the " +
         "convolution's output size " + std::to_string(g.H_out()) + " x " + std::to_string(g.W_out());
}

void conv_forward(py::handle x_, py::handle weight_, py::handle bias_, py::handle out_,
                  py::handle preact_, py::handle activation_, py::handle stride_,
                  py::handle padding_, py::handle dilation_, py::handle groups_,
                  py::handle stream_) {
  const Activation act = parse_activation(activation_);
  [[maybe_unused]] const uintptr_t stream = parse_stream(stream_);  // CUDA only
  const Array x = parse_any_float_array(x_, "x", Role::Input);
  const Array weight = parse_any_float_array(weight_, "weight", Role::Input);
  const std::optional<Array> bias = parse_optional_array(bias_, "bias", Role::Input);
  const Array out = parse_array(out_, "out", Role::Output);
  const std::optional<Array> preact = parse_optional_array(preact_, "preact", Role::Output);
  require_preact(preact, act);

  check_shape(x, {{"N"}, {"C_in"}, {"H"}, {"W"}});
  const ConvGeometry g = geometry(x.t.shape, "x", weight, stride_, padding_, dilation_, groups_);
  if (bias) check_shape(*bias, {{"C_out", g.C_out}}, "matching weight");
  const std::string ctx = out_context(g);
  check_shape(out, {{"N", g.N}, {"C_out", g.C_out}, {"H_out", g.H_out()}, {"W_out", g.W_out()}}, ctx);
  if (preact)
    check_shape(*preact, {{"N", g.N}, {"C_out", g.C_out}, {"H_out", g.H_out()}, {"W_out", g.W_out()}}, ctx);
  check_conv_dtypes(x, {&weight}, {ptr(bias), &out, ptr(preact)});
  [[maybe_unused]] const Device device = check_same_device({&x, &weight, ptr(bias), &out, ptr(preact)});
  check_no_overlap({&out, ptr(preact)}, {&x, &weight, ptr(bias)});
  if (out.t.numel() == 0) return;

  if (is_16bit(x.t.dtype)) {
    const ConvMixedForwardArgs args{g, x.t.dtype, x.t.ptr, weight.t.ptr, data<float>(bias),
                                    out.t.data<float>(), data<float>(preact), act};
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::conv_forward_mixed(args, stream, device.index);
#endif
    return cpu::conv_forward_mixed(args);
  }
  dispatch_dtype(x.t.dtype, [&](auto zero) {
    using T = decltype(zero);
    const ConvForwardArgs<T> args{g, x.t.data<T>(), weight.t.data<T>(), data<T>(bias),
                                  out.t.data<T>(), data<T>(preact), act};
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::conv_forward(args, stream, device.index);
#endif
    cpu::conv_forward(args);
  });
}

void conv_backward(py::handle grad_out_, py::handle x_, py::handle weight_, py::handle preact_,
                   py::handle activation_, py::handle grad_x_, py::handle grad_weight_,
                   py::handle grad_bias_, py::handle stride_, py::handle padding_,
                   py::handle dilation_, py::handle groups_, py::handle stream_) {
  const Activation act = parse_activation(activation_);
  [[maybe_unused]] const uintptr_t stream = parse_stream(stream_);  // CUDA only
  const Array grad_out = parse_any_float_array(grad_out_, "grad_out", Role::Input);
  const std::optional<Array> x = parse_optional_any_float_array(x_, "x", Role::Input);
  const Array weight = parse_any_float_array(weight_, "weight", Role::Input);
  const std::optional<Array> preact = parse_optional_array(preact_, "preact", Role::Input);
  require_preact(preact, act);
  const std::optional<Array> grad_x = parse_optional_array(grad_x_, "grad_x", Role::Output);
  const std::optional<Array> grad_weight =
      parse_optional_array(grad_weight_, "grad_weight", Role::Output);
  const std::optional<Array> grad_bias = parse_optional_array(grad_bias_, "grad_bias", Role::Output);

  // The input's shape comes from x, or from grad_x where x is not needed (the transposed
  // convolution's forward pass has no x).
  if (!x && grad_weight)
    throw py::value_error("x: expected an array when grad_weight is computed, got None");
  if (!x && !grad_x)
    throw py::value_error("x: expected an array when grad_x is None (the input's shape comes from one of them), got None");
  const Array& input = x ? *x : *grad_x;
  check_shape(input, {{"N"}, {"C_in"}, {"H"}, {"W"}});
  const char* input_name = x ? "x" : "grad_x";
  const ConvGeometry g = geometry(input.t.shape, input_name, weight, stride_, padding_, dilation_, groups_);
  if (x && grad_x)
    check_shape(*grad_x, {{"N", g.N}, {"C_in", g.C_in}, {"H", g.H}, {"W", g.W}}, "matching x");
  const std::string ctx = out_context(g);
  check_shape(grad_out, {{"N", g.N}, {"C_out", g.C_out}, {"H_out", g.H_out()}, {"W_out", g.W_out()}}, ctx);
  if (preact)
    check_shape(*preact, {{"N", g.N}, {"C_out", g.C_out}, {"H_out", g.H_out()}, {"W_out", g.W_out()}}, ctx);
  if (grad_weight)
    check_shape(*grad_weight, {{"C_out", g.C_out}, {"C_in/groups", g.C_in_group()}, {"KH", g.KH}, {"KW", g.KW}},
                "matching weight");
  if (grad_bias) check_shape(*grad_bias, {{"C_out", g.C_out}}, "matching weight");
  check_conv_dtypes(weight, {&grad_out, ptr(x)}, {ptr(preact), ptr(grad_x), ptr(grad_weight), ptr(grad_bias)});
  [[maybe_unused]] const Device device = check_same_device(
      {&grad_out, ptr(x), &weight, ptr(preact), ptr(grad_x), ptr(grad_weight), ptr(grad_bias)});
  check_no_overlap({ptr(grad_x), ptr(grad_weight), ptr(grad_bias)},
                   {&grad_out, ptr(x), &weight, ptr(preact)});
  if (all_empty({ptr(grad_x), ptr(grad_weight), ptr(grad_bias)})) return;

  if (is_16bit(weight.t.dtype)) {
    const ConvMixedBackwardArgs args{g, weight.t.dtype, grad_out.t.ptr, x ? x->t.ptr : nullptr,
                                     weight.t.ptr, data<float>(preact), act, data<float>(grad_x),
                                     data<float>(grad_weight), data<float>(grad_bias)};
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::conv_backward_mixed(args, stream, device.index);
#endif
    return cpu::conv_backward_mixed(args);
  }
  dispatch_dtype(weight.t.dtype, [&](auto zero) {
    using T = decltype(zero);
    const ConvBackwardArgs<T> args{g, grad_out.t.data<T>(), data<T>(x), weight.t.data<T>(),
                                   data<T>(preact), act, data<T>(grad_x), data<T>(grad_weight),
                                   data<T>(grad_bias)};
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::conv_backward(args, stream, device.index);
#endif
    cpu::conv_backward(args);
  });
}

}  // namespace

void register_conv(py::module_& m) {
  m.def("conv_forward", &conv_forward, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("out"), py::arg("preact"), py::arg("activation"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("stream") = 0,
        R"doc(Fused 2-D convolution (NCHW; 1-D as H = 1): out = act(conv(x, weight) + bias).

x [N, C_in, H, W], weight [C_out, C_in/groups, KH, KW], bias [C_out] or None,
out [N, C_out, H_out, W_out]; preact (same shape as out) receives conv + bias and is
required unless activation == "none". stride (sh, sw) >= 1, padding (top, bottom, left,
right) >= 0, dilation (dh, dw) >= 1, groups >= 1 dividing C_in and C_out.
activation: "none", "relu", "gelu", "tanh" or "sigmoid". Arrays: float32 or float64,
one dtype, C-contiguous, all numpy (CPU) or all CUDA arrays on one device; outputs are
overwritten and must not overlap the inputs. Mixed precision: float16 or bfloat16 x and
weight, float32 bias, out and preact (16-bit products summed in float32; tensor cores on
CUDA). stream: cudaStream_t as int (CUDA only).)doc");
  m.def("conv_backward", &conv_backward, py::arg("grad_out"), py::arg("x"), py::arg("weight"),
        py::arg("preact"), py::arg("activation"), py::arg("grad_x"), py::arg("grad_weight"),
        py::arg("grad_bias"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        py::arg("groups"), py::arg("stream") = 0,
        R"doc(Backward of conv_forward, with g = grad_out * act'(preact) fused in.

grad_x [N, C_in, H, W] (backward-data: also the transposed convolution's forward),
grad_weight [C_out, C_in/groups, KH, KW], grad_bias [C_out]: each may be None (not
computed). x may be None when grad_weight is None; the input's shape then comes from
grad_x. Same settings and array rules as conv_forward; in the mixed-precision form
grad_out, x and weight are float16 or bfloat16, the rest float32, and g is rounded to the
16-bit dtype before it enters the products. Returns None.)doc");
}

}  // namespace unet::bindings
