// unet._C.linear_forward / linear_backward: validate every argument, then run the CPU or
// the CUDA kernel (csrc/include/unet/linear.h) without the GIL.
#include <string>

#include "array.h"
#include "bindings.h"
#include "unet/linear.h"

namespace unet::bindings {
namespace {

void linear_forward(py::handle x_, py::handle weight_, py::handle bias_, py::handle out_,
                    py::handle preact_, py::handle activation_, py::handle stream_) {
  const Activation act = parse_activation(activation_);
  [[maybe_unused]] const uintptr_t stream = parse_stream(stream_);  // CUDA only
  const Array x = parse_array(x_, "x", Role::Input);
  const Array weight = parse_array(weight_, "weight", Role::Input);
  const std::optional<Array> bias = parse_optional_array(bias_, "bias", Role::Input);
  const Array out = parse_array(out_, "out", Role::Output);
  const std::optional<Array> preact = parse_optional_array(preact_, "preact", Role::Output);
  require_preact(preact, act);

  check_shape(x, {{"M"}, {"K"}});
  const int64_t M = x.t.shape[0], K = x.t.shape[1];
  check_shape(weight, {{"N"}, {"K", K}}, "matching " + describe(x, {"M", "K"}));
  const int64_t N = weight.t.shape[0];
  if (bias) check_shape(*bias, {{"N", N}}, "matching " + describe(weight, {"N", "K"}));
  const std::string x_and_w = "matching " + describe(x, {"M", "K"}) + " and " + describe(weight, {"N", "K"});
  check_shape(out, {{"M", M}, {"N", N}}, x_and_w);
  if (preact) check_shape(*preact, {{"M", M}, {"N", N}}, x_and_w);
  check_same_dtype(x, {&weight, ptr(bias), &out, ptr(preact)});
  [[maybe_unused]] const Device device = check_same_device({&x, &weight, ptr(bias), &out, ptr(preact)});
  check_no_overlap({&out, ptr(preact)}, {&x, &weight, ptr(bias)});
  if (all_empty({&out, ptr(preact)})) return;

  dispatch_dtype(x.t.dtype, [&](auto zero) {
    using T = decltype(zero);
    const LinearForwardArgs<T> args{M, N, K, x.t.data<T>(), weight.t.data<T>(), data<T>(bias),
                                    out.t.data<T>(), data<T>(preact), act};
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::linear_forward(args, stream, device.index);
#endif
    cpu::linear_forward(args);
  });
}

void linear_backward(py::handle grad_out_, py::handle x_, py::handle weight_, py::handle preact_,
                     py::handle activation_, py::handle grad_x_, py::handle grad_weight_,
                     py::handle grad_bias_, py::handle stream_) {
  const Activation act = parse_activation(activation_);
  [[maybe_unused]] const uintptr_t stream = parse_stream(stream_);  // CUDA only
  const Array grad_out = parse_array(grad_out_, "grad_out", Role::Input);
  const Array x = parse_array(x_, "x", Role::Input);
  const Array weight = parse_array(weight_, "weight", Role::Input);
  const std::optional<Array> preact = parse_optional_array(preact_, "preact", Role::Input);
  require_preact(preact, act);
  const std::optional<Array> grad_x = parse_optional_array(grad_x_, "grad_x", Role::Output);
  const std::optional<Array> grad_weight =
      parse_optional_array(grad_weight_, "grad_weight", Role::Output);
  const std::optional<Array> grad_bias = parse_optional_array(grad_bias_, "grad_bias", Role::Output);

  check_shape(x, {{"M"}, {"K"}});
  const int64_t M = x.t.shape[0], K = x.t.shape[1];
  const std::string match_x = "matching " + describe(x, {"M", "K"});
  check_shape(weight, {{"N"}, {"K", K}}, match_x);
  const int64_t N = weight.t.shape[0];
  const std::string match_w = "matching " + describe(weight, {"N", "K"});
  const std::string x_and_w = match_x + " and " + describe(weight, {"N", "K"});
  check_shape(grad_out, {{"M", M}, {"N", N}}, x_and_w);
  if (preact) check_shape(*preact, {{"M", M}, {"N", N}}, x_and_w);
  if (grad_x) check_shape(*grad_x, {{"M", M}, {"K", K}}, match_x);
  if (grad_weight) check_shape(*grad_weight, {{"N", N}, {"K", K}}, match_w);
  if (grad_bias) check_shape(*grad_bias, {{"N", N}}, match_w);
  check_same_dtype(x, {&grad_out, &weight, ptr(preact), ptr(grad_x), ptr(grad_weight), ptr(grad_bias)});
  [[maybe_unused]] const Device device = check_same_device(
      {&grad_out, &x, &weight, ptr(preact), ptr(grad_x), ptr(grad_weight), ptr(grad_bias)});
  check_no_overlap({ptr(grad_x), ptr(grad_weight), ptr(grad_bias)},
                   {&grad_out, &x, &weight, ptr(preact)});
  if (all_empty({ptr(grad_x), ptr(grad_weight), ptr(grad_bias)})) return;

  dispatch_dtype(x.t.dtype, [&](auto zero) {
    using T = decltype(zero);
    const LinearBackwardArgs<T> args{M, N, K, grad_out.t.data<T>(), x.t.data<T>(),
                                     weight.t.data<T>(), data<T>(preact), act, data<T>(grad_x),
                                     data<T>(grad_weight), data<T>(grad_bias)};
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::linear_backward(args, stream, device.index);
#endif
    cpu::linear_backward(args);
  });
}

}  // namespace

void register_linear(py::module_& m) {
  m.def("linear_forward", &linear_forward, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("out"), py::arg("preact"), py::arg("activation"), py::arg("stream") = 0,
        R"doc(Fused fully connected layer: out = act(x @ weight.T + bias).

x [M, K], weight [N, K], bias [N] or None, out [M, N]; preact [M, N] receives
x @ weight.T + bias and is required unless activation == "none" (it may be None then).
activation: "none", "relu", "gelu" (exact, erf form), "tanh" or "sigmoid".
All arrays: float32 or float64, one dtype, C-contiguous, all numpy (CPU) or all CUDA
arrays (__cuda_array_interface__) on one device; outputs are overwritten and must not
overlap the inputs. stream: cudaStream_t as int, used for CUDA arrays (0 = default).
CUDA calls are asynchronous on that stream. Returns None.)doc");
  m.def("linear_backward", &linear_backward, py::arg("grad_out"), py::arg("x"),
        py::arg("weight"), py::arg("preact"), py::arg("activation"), py::arg("grad_x"),
        py::arg("grad_weight"), py::arg("grad_bias"), py::arg("stream") = 0,
        R"doc(Backward of linear_forward, with g = grad_out * act'(preact) fused in:
grad_x = g @ weight [M, K], grad_weight = g.T @ x [N, K], grad_bias = g.sum(0) [N].

Each of grad_x, grad_weight, grad_bias may be None (not computed); outputs are
overwritten. preact may be None only when activation == "none". Same array rules as
linear_forward. Returns None.)doc");
}

}  // namespace unet::bindings
