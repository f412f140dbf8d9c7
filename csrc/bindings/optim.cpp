// unet._C.sgd_step / adam_step / unscale_and_check: validate the lists of arrays and the
// hyper-parameters, then run the CPU or the CUDA kernels (csrc/include/unet/optim.h)
// without the GIL.
#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "array.h"
#include "bindings.h"
#include "unet/optim.h"

namespace unet::bindings {
namespace {

std::string repr_str(py::handle obj) { return py::repr(obj); }

bool is_sequence(py::handle obj) { return py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj); }

std::string item(const std::string& name, size_t i) { return name + "[" + std::to_string(i) + "]"; }

// A list or tuple of `n` entries (n < 0: any length).
py::sequence parse_sequence(py::handle obj, const std::string& name, int64_t n, const char* what) {
  if (!is_sequence(obj))
    type_error(name, std::string("expected a list of ") + what + ", got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
  if (n >= 0 && static_cast<int64_t>(seq.size()) != n)
    value_error(name, "expected " + std::to_string(n) + " entries (one per parameter), got " +
                          std::to_string(seq.size()));
  return seq;
}

// Entry i of a per-tensor state list must match params[i] in shape (and, checked with the
// rest, dtype and device).
void check_like(const Array& a, const Array& param) {
  if (a.t.shape != param.t.shape)
    value_error(a.name, "expected shape " + shape_str(param.t.shape) + " like " + param.name +
                            ", got " + shape_str(a.t.shape));
}

std::vector<Array> parse_arrays(py::handle obj, const char* name, Role role, const std::vector<Array>* like) {
  py::sequence seq = parse_sequence(obj, name, like ? static_cast<int64_t>(like->size()) : -1, "arrays");
  std::vector<Array> out;
  out.reserve(seq.size());
  for (size_t i = 0; i < seq.size(); ++i) {
    const std::string n = item(name, i);
    out.push_back(parse_array(seq[i], n.c_str(), role));
    if (like) check_like(out.back(), (*like)[i]);
  }
  return out;
}

// None, or a list with an array or None per parameter.
std::vector<std::optional<Array>> parse_optional_arrays(py::handle obj, const char* name,
                                                        const std::vector<Array>& like) {
  std::vector<std::optional<Array>> out(like.size());
  if (obj.is_none()) return out;
  py::sequence seq = parse_sequence(obj, name, static_cast<int64_t>(like.size()), "arrays or None");
  for (size_t i = 0; i < seq.size(); ++i) {
    const std::string n = item(name, i);
    out[i] = parse_optional_array(seq[i], n.c_str(), Role::Output);
    if (out[i]) check_like(*out[i], like[i]);
  }
  return out;
}

// A hyper-parameter given once for all tensors or as a list with one value per tensor.
// Returns the value of each tensor and the name to blame for it ("lr" or "lr[3]").
template <typename V>
struct PerTensor {
  std::vector<V> values;
  std::vector<std::string> names;
};

template <typename V, typename Parse>
PerTensor<V> per_tensor(py::handle obj, const char* name, size_t n, Parse&& parse) {
  PerTensor<V> out;
  if (is_sequence(obj)) {
    py::sequence seq = parse_sequence(obj, name, static_cast<int64_t>(n), "values");
    for (size_t i = 0; i < n; ++i) {
      out.names.push_back(item(name, i));
      out.values.push_back(parse(seq[i], out.names.back()));
    }
  } else {
    const V v = parse(obj, name);
    out.values.assign(n, v);
    out.names.assign(n, name);
  }
  return out;
}

double parse_real(py::handle obj, const std::string& name) {
  if (py::isinstance<py::bool_>(obj) || !(py::isinstance<py::float_>(obj) || py::isinstance<py::int_>(obj)))
    type_error(name, "expected a number (or a list of one per parameter), got " + repr_str(obj));
  return obj.cast<double>();
}

// A finite number >= low and <= high (< high when high_open); high = inf: no upper bound.
PerTensor<double> parse_reals(py::handle obj, const char* name, size_t n, double low,
                              double high = INFINITY, bool high_open = false) {
  PerTensor<double> out = per_tensor<double>(obj, name, n, parse_real);
  for (size_t i = 0; i < n; ++i) {
    const double v = out.values[i];
    const bool fine = std::isfinite(v) && v >= low && (high_open ? v < high : v <= high);
    if (!fine) {
      std::string bounds = ">= " + repr_str(py::float_(low));
      if (std::isfinite(high))
        bounds = "in [" + repr_str(py::float_(low)) + ", " +
                 repr_str(py::float_(high)) + (high_open ? ")" : "]");
      value_error(out.names[i], "expected a finite number " + bounds + ", got " + repr_str(py::float_(v)));
    }
  }
  return out;
}

PerTensor<bool> parse_bools(py::handle obj, const char* name, size_t n) {
  return per_tensor<bool>(obj, name, n, [](py::handle o, const std::string& nm) {
    if (!py::isinstance<py::bool_>(o))
      type_error(nm, "expected a bool (or a list of one per parameter), got " + repr_str(o));
    return o.cast<bool>();
  });
}

PerTensor<int64_t> parse_steps(py::handle obj, size_t n) {
  return per_tensor<int64_t>(obj, "steps", n, [](py::handle o, const std::string& nm) {
    if (py::isinstance<py::bool_>(o) || !py::isinstance<py::int_>(o))
      type_error(nm, "expected an int (or a list of one per parameter), got " + repr_str(o));
    const long long v = PyLong_AsLongLong(o.ptr());
    if (v == -1 && PyErr_Occurred()) {
      PyErr_Clear();
      value_error(nm, "out of range: " + repr_str(o));
    }
    if (v < 1) value_error(nm, "expected a step count >= 1 (this step included), got " + repr_str(o));
    return static_cast<int64_t>(v);
  });
}

double parse_inv_scale(py::handle obj) {
  const double v = parse_real(obj, "inv_scale");
  if (!(std::isfinite(v) && v > 0))
    value_error("inv_scale", "expected a finite number > 0 (1.0: gradients as they are), got " + repr_str(obj));
  return v;
}

// The optional found_inf flag: one float32 element, written by the kernel.
std::optional<Array> parse_found_inf(py::handle obj) {
  std::optional<Array> a = parse_optional_array(obj, "found_inf", Role::Output);
  if (a && (a->t.dtype != DType::Float32 || a->t.numel() != 1))
    type_error("found_inf", std::string("expected a float32 array of one element, got a ") +
                                dtype_name(a->t.dtype) + " array of shape " + shape_str(a->t.shape));
  return a;
}

// No output (params, state, found_inf) may share memory with any other array; inputs
// (grads) may share with each other. Sorted by address, one sweep: O(n log n) for the
// thousands of arrays of a large model.
void check_disjoint(const std::vector<const Array*>& outputs, const std::vector<const Array*>& inputs) {
  struct Span {
    uintptr_t begin, end;
    const Array* array;
    bool output;
  };
  std::vector<Span> spans;
  for (const auto* list : {&outputs, &inputs})
    for (const Array* a : *list)
      if (a && a->t.numel() > 0) {
        const auto b = reinterpret_cast<uintptr_t>(a->t.ptr);
        spans.push_back({b, b + static_cast<uintptr_t>(a->t.nbytes()), a, list == &outputs});
      }
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.begin < y.begin; });
  const Span* reach_any = nullptr;  // the span seen so far that ends last
  const Span* reach_out = nullptr;  // the output span seen so far that ends last
  for (const Span& s : spans) {
    const Span* hit = nullptr;
    if (reach_out && s.begin < reach_out->end)
      hit = reach_out;
    else if (s.output && reach_any && s.begin < reach_any->end)
      hit = reach_any;
    if (hit) {
      const Span& out = hit->output ? *hit : s;
      const Span& other = hit->output ? s : *hit;
      value_error(out.array->name, "expected memory of its own, got memory shared with " +
                                       other.array->name + " (parameters and optimizer state must "
                                       "not overlap each other or a gradient)");
    }
    if (!reach_any || s.end > reach_any->end) reach_any = &s;
    if (s.output && (!reach_out || s.end > reach_out->end)) reach_out = &s;
  }
}

// dtype of params[0] for every array, one device for all; returns the device.
Device check_dtype_and_device(const std::vector<Array>& params, const std::vector<const Array*>& all,
                              const std::optional<Array>& found_inf) {
  for (const Array* a : all)
    if (a) check_same_dtype(params[0], {a});
  std::vector<const Array*> with_flag(all);
  with_flag.push_back(ptr(found_inf));
  return check_same_device(with_flag);
}

// The checks every step shares: one dtype and one device for all arrays, and no output
// (parameters, state, found_inf) overlapping an input or another output. Returns the device.
Device check_step_arrays(const std::vector<Array>& params, std::vector<const Array*> outputs,
                         const std::vector<const Array*>& inputs, const std::optional<Array>& found_inf) {
  std::vector<const Array*> all(outputs);
  all.insert(all.end(), inputs.begin(), inputs.end());
  const Device device = check_dtype_and_device(params, all, found_inf);
  outputs.push_back(ptr(found_inf));
  check_disjoint(outputs, inputs);
  return device;
}

template <typename Tensor>
FusedStepArgs<Tensor> step_args(const std::vector<Array>& params, double inv_scale,
                                const std::optional<Array>& found_inf) {
  FusedStepArgs<Tensor> args;
  args.dtype = params[0].t.dtype;
  args.inv_scale = inv_scale;
  args.found_inf = found_inf ? found_inf->t.data<float>() : nullptr;
  return args;
}

void sgd_step(py::handle params_, py::handle grads_, py::handle momentum_buffers_, py::handle lr_,
              py::handle momentum_, py::handle dampening_, py::handle weight_decay_,
              py::handle nesterov_, py::handle maximize_, py::handle is_first_step_,
              py::handle inv_scale_, py::handle found_inf_, py::handle stream_) {
  [[maybe_unused]] const uintptr_t stream = parse_stream(stream_);
  const std::vector<Array> params = parse_arrays(params_, "params", Role::Output, nullptr);
  const size_t n = params.size();
  const std::vector<Array> grads = parse_arrays(grads_, "grads", Role::Input, &params);
  const std::vector<std::optional<Array>> bufs = parse_optional_arrays(momentum_buffers_, "momentum_buffers", params);
  const PerTensor<double> lr = parse_reals(lr_, "lr", n, 0);
  const PerTensor<double> momentum = parse_reals(momentum_, "momentum", n, 0);
  const PerTensor<double> dampening = parse_reals(dampening_, "dampening", n, 0, 1);
  const PerTensor<double> weight_decay = parse_reals(weight_decay_, "weight_decay", n, 0);
  const PerTensor<bool> nesterov = parse_bools(nesterov_, "nesterov", n);
  const PerTensor<bool> maximize = parse_bools(maximize_, "maximize", n);
  const PerTensor<bool> first = parse_bools(is_first_step_, "is_first_step", n);
  const double inv_scale = parse_inv_scale(inv_scale_);
  const std::optional<Array> found_inf = parse_found_inf(found_inf_);
  for (size_t i = 0; i < n; ++i) {
    if (nesterov.values[i] && (momentum.values[i] <= 0 || dampening.values[i] != 0))
      value_error(nesterov.names[i], "needs momentum > 0 and dampening == 0, got momentum=" +
                                         repr_str(py::float_(momentum.values[i])) + ", dampening=" +
                                         repr_str(py::float_(dampening.values[i])));
    if ((momentum.values[i] != 0) != bufs[i].has_value())
      value_error(item("momentum_buffers", i),
                  momentum.values[i] != 0 ? "expected an array (momentum is " + repr_str(py::float_(momentum.values[i])) + "), got None"
                                          : std::string("expected None (momentum is 0), got an array"));
  }
  if (n == 0) return;

  std::vector<const Array*> outputs, inputs;
  for (size_t i = 0; i < n; ++i) {
    outputs.push_back(&params[i]);
    outputs.push_back(ptr(bufs[i]));
    inputs.push_back(&grads[i]);
  }
  [[maybe_unused]] const Device device = check_step_arrays(params, outputs, inputs, found_inf);
  auto args = step_args<SgdTensor>(params, inv_scale, found_inf);
  for (size_t i = 0; i < n; ++i) {
    SgdTensor t;
    t.param = params[i].t.ptr;
    t.grad = grads[i].t.ptr;
    t.momentum_buffer = bufs[i] ? bufs[i]->t.ptr : nullptr;
    t.numel = params[i].t.numel();
    t.lr = lr.values[i];
    t.momentum = momentum.values[i];
    t.dampening = dampening.values[i];
    t.weight_decay = weight_decay.values[i];
    t.nesterov = nesterov.values[i];
    t.maximize = maximize.values[i];
    t.is_first_step = first.values[i];
    args.tensors.push_back(t);
  }
  py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
  if (device.type == DeviceType::CUDA) return cuda::sgd_step(args, stream, device.index);
#endif
  cpu::sgd_step(args);
}

void adam_step(py::handle params_, py::handle grads_, py::handle exp_avgs_, py::handle exp_avg_sqs_,
               py::handle max_exp_avg_sqs_, py::handle steps_, py::handle lr_, py::handle beta1_,
               py::handle beta2_, py::handle eps_, py::handle weight_decay_,
               py::handle decoupled_weight_decay_, py::handle maximize_, py::handle inv_scale_,
               py::handle found_inf_, py::handle stream_) {
  [[maybe_unused]] const uintptr_t stream = parse_stream(stream_);
  const std::vector<Array> params = parse_arrays(params_, "params", Role::Output, nullptr);
  const size_t n = params.size();
  const std::vector<Array> grads = parse_arrays(grads_, "grads", Role::Input, &params);
  const std::vector<Array> exp_avgs = parse_arrays(exp_avgs_, "exp_avgs", Role::Output, &params);
  const std::vector<Array> exp_avg_sqs = parse_arrays(exp_avg_sqs_, "exp_avg_sqs", Role::Output, &params);
  const std::vector<std::optional<Array>> max_sqs = parse_optional_arrays(max_exp_avg_sqs_, "max_exp_avg_sqs", params);
  const PerTensor<int64_t> steps = parse_steps(steps_, n);
  const PerTensor<double> lr = parse_reals(lr_, "lr", n, 0);
  const PerTensor<double> beta1 = parse_reals(beta1_, "beta1", n, 0, 1, true);
  const PerTensor<double> beta2 = parse_reals(beta2_, "beta2", n, 0, 1, true);
  const PerTensor<double> eps = parse_reals(eps_, "eps", n, 0);
  const PerTensor<double> weight_decay = parse_reals(weight_decay_, "weight_decay", n, 0);
  const PerTensor<bool> decoupled = parse_bools(decoupled_weight_decay_, "decoupled_weight_decay", n);
  const PerTensor<bool> maximize = parse_bools(maximize_, "maximize", n);
  const double inv_scale = parse_inv_scale(inv_scale_);
  const std::optional<Array> found_inf = parse_found_inf(found_inf_);
  if (n == 0) return;

  std::vector<const Array*> outputs, inputs;
  for (size_t i = 0; i < n; ++i) {
    outputs.insert(outputs.end(), {&params[i], &exp_avgs[i], &exp_avg_sqs[i], ptr(max_sqs[i])});
    inputs.push_back(&grads[i]);
  }
  [[maybe_unused]] const Device device = check_step_arrays(params, outputs, inputs, found_inf);
  auto args = step_args<AdamTensor>(params, inv_scale, found_inf);
  for (size_t i = 0; i < n; ++i) {
    AdamTensor t;
    t.param = params[i].t.ptr;
    t.grad = grads[i].t.ptr;
    t.exp_avg = exp_avgs[i].t.ptr;
    t.exp_avg_sq = exp_avg_sqs[i].t.ptr;
    t.max_exp_avg_sq = max_sqs[i] ? max_sqs[i]->t.ptr : nullptr;
    t.numel = params[i].t.numel();
    t.step = steps.values[i];
    t.lr = lr.values[i];
    t.beta1 = beta1.values[i];
    t.beta2 = beta2.values[i];
    t.eps = eps.values[i];
    t.weight_decay = weight_decay.values[i];
    t.decoupled_weight_decay = decoupled.values[i];
    t.maximize = maximize.values[i];
    args.tensors.push_back(t);
  }
  py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
  if (device.type == DeviceType::CUDA) return cuda::adam_step(args, stream, device.index);
#endif
  cpu::adam_step(args);
}

bool unscale_and_check(py::handle grads_, py::handle inv_scale_, py::handle in_place_, py::handle stream_) {
  [[maybe_unused]] const uintptr_t stream = parse_stream(stream_);
  if (!py::isinstance<py::bool_>(in_place_))
    type_error("in_place", "expected a bool, got " + repr_str(in_place_));
  const bool in_place = in_place_.cast<bool>();
  const std::vector<Array> grads = parse_arrays(grads_, "grads", in_place ? Role::Output : Role::Input, nullptr);
  const double inv_scale = parse_inv_scale(inv_scale_);
  if (grads.empty()) return false;
  std::vector<const Array*> all;
  for (const Array& g : grads) all.push_back(&g);
  [[maybe_unused]] const Device device = check_same_device(all);
  if (in_place) check_disjoint(all, {});

  UnscaleArgs args;
  args.inv_scale = inv_scale;
  args.in_place = in_place;
  for (const Array& g : grads) args.tensors.push_back({g.t.ptr, g.t.dtype, g.t.numel()});
  py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
  if (device.type == DeviceType::CUDA) return cuda::unscale_and_check(args, stream, device.index);
#endif
  return cpu::unscale_and_check(args);
}

}  // namespace

void register_optim(py::module_& m) {
  m.def("sgd_step", &sgd_step, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"),
        py::kw_only(), py::arg("lr"), py::arg("momentum") = 0.0, py::arg("dampening") = 0.0,
        py::arg("weight_decay") = 0.0, py::arg("nesterov") = false, py::arg("maximize") = false,
        py::arg("is_first_step") = false, py::arg("inv_scale") = 1.0,
        py::arg("found_inf") = py::none(), py::arg("stream") = 0,
        R"doc(Fused SGD step (torch.optim.SGD's math) over every tensor in one pass, in place.

params, grads: lists of arrays, grads[i] shaped like params[i]; momentum_buffers: None
(momentum 0 everywhere) or a list with an array where momentum > 0 and None elsewhere.
lr, momentum, dampening, weight_decay (numbers), nesterov, maximize, is_first_step (bools):
one value for all tensors or a list with one per tensor. is_first_step: the buffer is new;
it is set to the gradient (it may hold anything before). Gradients are used as
grad * inv_scale (> 0). found_inf: None (no check) or a float32 array of one element: every
grad * inv_scale is checked first; any inf or NaN sets found_inf to 1, and when found_inf is
then non-zero nothing changes. Every array but found_inf has one dtype (float32 or float64);
all contiguous, on the CPU or on one CUDA device (stream: its cudaStream_t as int, 0 =
default; CUDA calls are asynchronous). Parameters and state overlap nothing. Returns None.)doc");
  m.def("adam_step", &adam_step, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
        py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("steps"), py::kw_only(),
        py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::arg("weight_decay") = 0.0, py::arg("decoupled_weight_decay") = false,
        py::arg("maximize") = false, py::arg("inv_scale") = 1.0, py::arg("found_inf") = py::none(),
        py::arg("stream") = 0,
        R"doc(Fused Adam / AdamW step (torch.optim.Adam's math) over every tensor in one pass, in place.

params, grads, exp_avgs, exp_avg_sqs: lists of arrays shaped like params; max_exp_avg_sqs:
None, or a list with an array for each amsgrad tensor and None for the others. steps: the
count of this step (from 1) for all tensors or per tensor. lr, beta1, beta2 (in [0, 1)),
eps, weight_decay (numbers), decoupled_weight_decay (AdamW), maximize (bools): one value for
all tensors or a list with one per tensor. inv_scale, found_inf, stream and the array rules:
as in sgd_step. Returns None.)doc");
  m.def("unscale_and_check", &unscale_and_check, py::arg("grads"), py::arg("inv_scale"),
        py::arg("in_place") = true, py::arg("stream") = 0,
        R"doc(Multiplies every array of grads by inv_scale in place (with in_place=False: only
looks) and returns True if any product is inf or NaN, in one pass.

grads: a list of float32 / float64 contiguous arrays (dtypes may mix), all on the CPU or on
one CUDA device; inv_scale: a finite number > 0. On a GPU it waits for `stream` to read the
answer.)doc");
}

}  // namespace unet::bindings
