// unet._C.rnn_ln_forward / rnn_ln_backward and their buffer sizes: the LSTM with layer
// normalization and/or zoneout, the GRU with zoneout (csrc/include/unet/rnn_ln.h). Every
// argument is validated, then the CPU kernel runs without the GIL.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "array.h"
#include "bindings.h"
#include "rnn_projection.h"
#include "unet/rnn_ln.h"

namespace unet::bindings {
namespace {

RnnMode parse_mode(py::handle obj) {
  if (!py::isinstance<py::str>(obj))
    type_error("mode", "expected a str, 'lstm' or 'gru', got " + type_name(obj));
  const std::string s = obj.cast<std::string>();
  if (s == "lstm") return RnnMode::LSTM;
  if (s == "gru") return RnnMode::GRU;
  value_error("mode", "expected 'lstm' or 'gru', got '" + s + "'");
}

int64_t parse_size(py::handle obj, const char* name) {
  const int64_t v = parse_int(obj, name);
  if (v < 0 || v >= (int64_t(1) << 40))
    value_error(name, "expected a size in [0, 2**40), got " + std::to_string(v));
  return v;
}

// Sizes up to 2**40 each: T * B * (13 H + 3) fits int64 only for modest products, so check.
int64_t product(std::initializer_list<int64_t> factors, const char* what) {
  int64_t r = 1;
  for (int64_t f : factors)
    if (__builtin_mul_overflow(r, f, &r)) value_error(what, "expected sizes whose product fits int64, got an overflow");
  return r;
}
int64_t workspace_elems(RnnMode mode, int64_t T, int64_t B, int64_t H, bool ln, const char* what) {
  product({T, B, 16, H + 1}, what);  // every row is narrower than 16 (H + 1)
  return rnn_ln_workspace_size(mode, T, B, H, ln);
}
int64_t scratch_elems(RnnMode mode, int64_t T, int64_t B, int64_t H, const char* what) {
  product({T, B, 16, H}, what);
  return rnn_ln_scratch_size(mode, T, B, H);
}

int64_t workspace_size(py::handle mode, py::handle steps, py::handle batch, py::handle hidden,
                       py::handle layer_norm) {
  const RnnMode m = parse_mode(mode);
  const bool ln = parse_bool(layer_norm, "layer_norm");
  if (ln && m != RnnMode::LSTM) value_error("layer_norm", "expected False for mode 'gru' (layer norm is for the LSTM), got True");
  return workspace_elems(m, parse_size(steps, "steps"), parse_size(batch, "batch"),
                         parse_size(hidden, "hidden_size"), ln, "rnn_ln_workspace_size");
}

int64_t scratch_size(py::handle mode, py::handle steps, py::handle batch, py::handle hidden) {
  return scratch_elems(parse_mode(mode), parse_size(steps, "steps"), parse_size(batch, "batch"),
                       parse_size(hidden, "hidden_size"), "rnn_ln_scratch_size");
}

double parse_eps(py::handle obj) {
  if (!(PyFloat_Check(obj.ptr()) || PyLong_Check(obj.ptr())) || PyBool_Check(obj.ptr()))
    type_error("eps", "expected a float, got " + type_name(obj));
  const double v = obj.cast<double>();
  if (!(v > 0) || !std::isfinite(v))
    value_error("eps", "expected a finite float > 0, got " + std::string(py::str(obj)));
  return v;
}

constexpr const char* kLnNames[6] = {"ln_ih_weight", "ln_ih_bias", "ln_hh_weight",
                                     "ln_hh_bias",   "ln_c_weight", "ln_c_bias"};

// The arguments forward and backward share, parsed and checked against each other.
struct Layer {
  RnnMode mode;
  bool reverse;
  int64_t steps, B, I, H, G;
  double eps;
  Array x, w_ih, w_hh;
  std::optional<Array> b_ih, b_hh;
  Array h0;
  std::optional<Array> c0, lengths;
  std::optional<Array> ln[6];
  std::optional<Array> keep_h, keep_c;
  std::string ctx;

  bool lstm() const { return mode == RnnMode::LSTM; }
  bool layer_norm() const { return ln[0].has_value(); }
  std::vector<const Array*> inputs() const {
    std::vector<const Array*> v = {&x, &w_ih, &w_hh, ptr(b_ih), ptr(b_hh), &h0, ptr(c0),
                                   ptr(lengths), ptr(keep_h), ptr(keep_c)};
    for (const auto& a : ln) v.push_back(ptr(a));
    return v;
  }
  template <typename T>
  RnnLnArgs<T> ext() const {
    return {data<T>(ln[0]), data<T>(ln[1]), data<T>(ln[2]), data<T>(ln[3]), data<T>(ln[4]),
            data<T>(ln[5]), T(eps), data<T>(keep_h), data<T>(keep_c)};
  }
  template <typename T>
  RnnForwardArgs<T> forward_args(T* y, T* h_n, T* c_n, T* workspace) const {
    return {mode, steps, B, I, H, H, reverse, x.t.data<T>(), w_ih.t.data<T>(), w_hh.t.data<T>(),
            data<T>(b_ih), data<T>(b_hh), nullptr, h0.t.data<T>(), data<T>(c0),
            lengths ? lengths->t.data<int64_t>() : nullptr, y, h_n, c_n, workspace};
  }
};

Layer parse_layer(const py::tuple& args) {
  // mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, 6 ln arrays, eps, keep_h, keep_c
  Layer L;
  L.mode = parse_mode(args[0]);
  L.x = parse_array(args[1], "x", Role::Input);
  L.w_ih = parse_array(args[2], "w_ih", Role::Input);
  L.w_hh = parse_array(args[3], "w_hh", Role::Input);
  L.b_ih = parse_optional_array(args[4], "b_ih", Role::Input);
  L.b_hh = parse_optional_array(args[5], "b_hh", Role::Input);
  L.h0 = parse_array(args[6], "h0", Role::Input);
  L.c0 = parse_optional_array(args[7], "c0", Role::Input);
  L.lengths = parse_optional_int64_array(args[8], "lengths");
  L.reverse = parse_bool(args[9], "reverse");
  for (int k = 0; k < 6; ++k) L.ln[k] = parse_optional_array(args[10 + k], kLnNames[k], Role::Input);
  L.eps = parse_eps(args[16]);
  L.keep_h = parse_optional_array(args[17], "keep_h", Role::Input);
  L.keep_c = parse_optional_array(args[18], "keep_c", Role::Input);
  L.G = rnn_gate_count(L.mode);
  const std::string m = L.lstm() ? "'lstm'" : "'gru'";

  if (L.b_ih.has_value() != L.b_hh.has_value())
    value_error(L.b_ih ? "b_hh" : "b_ih", "expected both biases or neither, got one");
  if (L.c0.has_value() != L.lstm())
    value_error("c0", L.lstm() ? "expected the initial cell state (B, H) of an LSTM, got None"
                               : "only an LSTM has a cell state, not mode 'gru'; expected None, got an array");
  for (int k = 1; k < 6; ++k)
    if (L.ln[k].has_value() != L.ln[0].has_value())
      value_error(kLnNames[L.ln[0] ? k : 0],
                  "expected all six layer-norm arrays or none, got some");
  if (L.ln[0] && !L.lstm())
    value_error("ln_ih_weight", "layer norm is for mode 'lstm' only, not 'gru'; expected None, got an array");
  if (L.keep_c && !L.lstm())
    value_error("keep_c", "only an LSTM has a cell state, not mode 'gru'; expected None, got an array");

  check_shape(L.x, {{"T"}, {"B"}, {"I"}});
  L.steps = L.x.t.shape[0], L.B = L.x.t.shape[1], L.I = L.x.t.shape[2];
  check_shape(L.w_ih, {{"G*H"}, {"I", L.I}}, "matching " + describe(L.x, {"T", "B", "I"}));
  const int64_t GH = L.w_ih.t.shape[0];
  if (GH % L.G != 0)
    value_error("w_ih", "expected a first dimension G*H divisible by G=" + std::to_string(L.G) +
                            " (the gates of mode " + m + "), got " + std::to_string(GH));
  L.H = GH / L.G;
  L.ctx = "for mode " + m + " (G=" + std::to_string(L.G) + ") with T=" + std::to_string(L.steps) +
          ", B=" + std::to_string(L.B) + ", I=" + std::to_string(L.I) + " (x), H=" +
          std::to_string(L.H) + " (w_ih)";
  check_shape(L.w_hh, {{"G*H", GH}, {"H", L.H}}, L.ctx);
  if (L.b_ih) check_shape(*L.b_ih, {{"G*H", GH}}, L.ctx);
  if (L.b_hh) check_shape(*L.b_hh, {{"G*H", GH}}, L.ctx);
  check_shape(L.h0, {{"B", L.B}, {"H", L.H}}, L.ctx);
  if (L.c0) check_shape(*L.c0, {{"B", L.B}, {"H", L.H}}, L.ctx);
  if (L.lengths) check_shape(*L.lengths, {{"B", L.B}}, L.ctx);
  for (int k = 0; k < 6; ++k)
    if (L.ln[k]) check_shape(*L.ln[k], {{k < 4 ? "G*H" : "H", k < 4 ? GH : L.H}}, L.ctx);
  if (L.keep_h) check_shape(*L.keep_h, {{"T", L.steps}, {"B", L.B}, {"H", L.H}}, L.ctx);
  if (L.keep_c) check_shape(*L.keep_c, {{"T", L.steps}, {"B", L.B}, {"H", L.H}}, L.ctx);
  check_same_dtype(L.x, {&L.w_ih, &L.w_hh, ptr(L.b_ih), ptr(L.b_hh), &L.h0, ptr(L.c0), ptr(L.ln[0]),
                         ptr(L.ln[1]), ptr(L.ln[2]), ptr(L.ln[3]), ptr(L.ln[4]), ptr(L.ln[5]),
                         ptr(L.keep_h), ptr(L.keep_c)});
  return L;
}

// Host checks: the lengths in [1, T], the keep factors in [0, 1], where they are host memory
// (CUDA arrays cannot be read here without a hidden copy; the CUDA kernel clamps lengths).
void check_values(const Layer& L) {
  if (L.x.t.device.type != DeviceType::CPU) return;
  if (L.lengths) {
    const int64_t* len = L.lengths->t.data<int64_t>();
    for (int64_t b = 0; b < L.B; ++b)
      if (len[b] < 1 || len[b] > L.steps)
        value_error("lengths", "expected values in [1, T=" + std::to_string(L.steps) + "], got lengths[" +
                                   std::to_string(b) + "] = " + std::to_string(len[b]));
  }
  for (const auto* keep : {ptr(L.keep_h), ptr(L.keep_c)}) {
    if (!keep) continue;
    dispatch_dtype(keep->t.dtype, [&](auto zero) {
      using T = decltype(zero);
      const T* k = keep->t.data<T>();
      const int64_t n = keep->t.numel();
      // A branch-free scan first (it vectorizes: the arrays are T*B*H, checked every call),
      // then the first bad index for the message.
      int bad = 0;
#pragma omp simd reduction(| : bad)
      for (int64_t i = 0; i < n; ++i) bad |= !((k[i] >= T(0)) & (k[i] <= T(1)));
      if (!bad) return;
      for (int64_t i = 0; i < n; ++i)
        if (!(k[i] >= T(0) && k[i] <= T(1)))
          value_error(keep->name, "expected keep factors in [0, 1], got " + std::to_string(double(k[i])) +
                                      " at flat index " + std::to_string(i));
    });
  }
}

Device check_device(const std::vector<const Array*>& all) {
  const Device device = check_same_device(all);
#ifndef UNET_WITH_CUDA
  if (device.type != DeviceType::CPU)
    value_error("x", "expected CPU arrays (this build has no CUDA), got arrays on a CUDA device");
#endif
  return device;
}

const std::vector<std::string> kInputNames = {
    "mode", "x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0", "lengths", "reverse", kLnNames[0],
    kLnNames[1], kLnNames[2], kLnNames[3], kLnNames[4], kLnNames[5], "eps", "keep_h", "keep_c"};

std::vector<std::string> with_names(std::vector<std::string> names,
                                    std::initializer_list<const char*> more) {
  names.insert(names.end(), more.begin(), more.end());
  return names;
}
const std::vector<std::string> kForwardNames =
    with_names(kInputNames, {"y", "h_n", "c_n", "workspace", "stream", "projection_dtype"});
const std::vector<std::string> kBackwardNames = with_names(
    kInputNames, {"y", "workspace", "grad_y", "grad_h_n", "grad_c_n", "grad_x", "grad_w_ih",
                  "grad_w_hh", "grad_b_ih", "grad_b_hh", "grad_h0", "grad_c0", "grad_ln_ih_weight",
                  "grad_ln_ih_bias", "grad_ln_hh_weight", "grad_ln_hh_bias", "grad_ln_c_weight",
                  "grad_ln_c_bias", "scratch", "stream"});

// Positional and keyword arguments in `names` order, as a tuple: every one required but
// "stream" (default 0) and "projection_dtype" (default None).
py::tuple in_order(const char* fn, const py::args& args, const py::kwargs& kwargs,
                   const std::vector<std::string>& names) {
  if (args.size() > names.size())
    throw py::type_error(std::string(fn) + ": expected at most " + std::to_string(names.size()) +
                         " arguments, got " + std::to_string(args.size()));
  py::tuple out(names.size());
  for (size_t k = 0; k < names.size(); ++k) {
    const bool named = kwargs.contains(names[k].c_str());
    if (k < args.size() && named)
      throw py::type_error(std::string(fn) + ": got two values for argument " + names[k]);
    const bool optional = names[k] == "stream" || names[k] == "projection_dtype";
    if (k >= args.size() && !named && !optional)
      throw py::type_error(std::string(fn) + ": missing argument " + names[k]);
    if (k < args.size())
      out[k] = args[k];
    else if (named)
      out[k] = kwargs[names[k].c_str()];
    else
      out[k] = names[k] == "stream" ? py::object(py::int_(0)) : py::object(py::none());
  }
  for (const auto& item : kwargs) {
    const std::string key = py::str(item.first);
    if (std::find(names.begin(), names.end(), key) == names.end())
      throw py::type_error(std::string(fn) + ": unexpected argument " + key);
  }
  return out;
}

void forward(const py::tuple& args) {
  const Layer L = parse_layer(args);
  const Array y = parse_array(args[19], "y", Role::Output);
  const Array h_n = parse_array(args[20], "h_n", Role::Output);
  const std::optional<Array> c_n = parse_optional_array(args[21], "c_n", Role::Output);
  const Array workspace = parse_array(args[22], "workspace", Role::Output);
  if (c_n.has_value() != L.lstm())
    value_error("c_n", L.lstm() ? "expected an output (B, H) for the final cell state, got None"
                                : "only an LSTM has a cell state; expected None, got an array");
  check_shape(y, {{"T", L.steps}, {"B", L.B}, {"H", L.H}}, L.ctx);
  check_shape(h_n, {{"B", L.B}, {"H", L.H}}, L.ctx);
  if (c_n) check_shape(*c_n, {{"B", L.B}, {"H", L.H}}, L.ctx);
  check_shape(workspace, {{"rnn_ln_workspace_size", workspace_elems(L.mode, L.steps, L.B, L.H, L.layer_norm(), "workspace")}},
              L.ctx);
  check_same_dtype(L.x, {&y, &h_n, ptr(c_n), &workspace});
  std::vector<const Array*> all = L.inputs();
  all.insert(all.end(), {&y, &h_n, ptr(c_n), &workspace});
  [[maybe_unused]] const Device device = check_device(all);
  const uintptr_t stream = parse_stream(args[23]);
  const DType projection_dtype = parse_projection_dtype(args[24], L.x.t.dtype);
  const std::vector<const Array*> in = L.inputs();
  for (const Array* out : {&y, &h_n, ptr(c_n), &workspace}) {
    if (!out) continue;
    for (const Array* i : in)
      if (i) check_no_overlap({out}, {i});
  }
  check_no_overlap({&y, &h_n, ptr(c_n), &workspace}, {});
  check_values(L);
  if (L.B == 0 || L.H == 0) return;
  dispatch_dtype(L.x.t.dtype, [&](auto zero) {
    using T = decltype(zero);
    RnnForwardArgs<T> f = L.forward_args<T>(y.t.data<T>(), h_n.t.data<T>(), data<T>(c_n),
                                            workspace.t.data<T>());
    f.projection_dtype = projection_dtype;
    const RnnLnArgs<T> e = L.ext<T>();
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::rnn_ln_forward(f, e, stream, device.index);
#endif
    (void)stream;
    cpu::rnn_ln_forward(f, e);
  });
}

void backward(const py::tuple& args) {
  const Layer L = parse_layer(args);
  const Array y = parse_array(args[19], "y", Role::Input);
  const Array workspace = parse_array(args[20], "workspace", Role::Input);
  const Array grad_y = parse_array(args[21], "grad_y", Role::Input);
  const std::optional<Array> grad_h_n = parse_optional_array(args[22], "grad_h_n", Role::Input);
  const std::optional<Array> grad_c_n = parse_optional_array(args[23], "grad_c_n", Role::Input);
  const char* out_names[14] = {"grad_x", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh",
                               "grad_h0", "grad_c0", "grad_ln_ih_weight", "grad_ln_ih_bias",
                               "grad_ln_hh_weight", "grad_ln_hh_bias", "grad_ln_c_weight",
                               "grad_ln_c_bias", "scratch"};
  std::optional<Array> out[14];
  for (int k = 0; k < 13; ++k) out[k] = parse_optional_array(args[24 + k], out_names[k], Role::Output);
  out[13] = parse_array(args[37], "scratch", Role::Output);
  auto& [gx, gw_ih, gw_hh, gb_ih, gb_hh, gh0, gc0, g_lnih_w, g_lnih_b, g_lnhh_w, g_lnhh_b, g_lnc_w,
         g_lnc_b, scratch] = out;

  const int64_t GH = L.G * L.H;
  if (grad_c_n && !L.lstm()) value_error("grad_c_n", "only an LSTM has a cell state; expected None, got an array");
  if (gc0 && !L.lstm()) value_error("grad_c0", "only an LSTM has a cell state; expected None, got an array");
  if ((gb_ih || gb_hh) && !L.b_ih)
    value_error(gb_ih ? "grad_b_ih" : "grad_b_hh", "the layer has no bias; expected None, got an array");
  for (int k = 7; k < 13; ++k)
    if (out[k] && !L.layer_norm())
      value_error(out_names[k], "the layer has no layer norm; expected None, got an array");
  check_shape(y, {{"T", L.steps}, {"B", L.B}, {"H", L.H}}, L.ctx);
  check_shape(workspace, {{"rnn_ln_workspace_size", workspace_elems(L.mode, L.steps, L.B, L.H, L.layer_norm(), "workspace")}},
              L.ctx);
  check_shape(grad_y, {{"T", L.steps}, {"B", L.B}, {"H", L.H}}, L.ctx);
  if (grad_h_n) check_shape(*grad_h_n, {{"B", L.B}, {"H", L.H}}, L.ctx);
  if (grad_c_n) check_shape(*grad_c_n, {{"B", L.B}, {"H", L.H}}, L.ctx);
  if (gx) check_shape(*gx, {{"T", L.steps}, {"B", L.B}, {"I", L.I}}, L.ctx);
  if (gw_ih) check_shape(*gw_ih, {{"G*H", GH}, {"I", L.I}}, L.ctx);
  if (gw_hh) check_shape(*gw_hh, {{"G*H", GH}, {"H", L.H}}, L.ctx);
  for (auto* g : {&gb_ih, &gb_hh, &g_lnih_w, &g_lnih_b, &g_lnhh_w, &g_lnhh_b})
    if (*g) check_shape(**g, {{"G*H", GH}}, L.ctx);
  for (auto* g : {&g_lnc_w, &g_lnc_b})
    if (*g) check_shape(**g, {{"H", L.H}}, L.ctx);
  for (auto* g : {&gh0, &gc0})
    if (*g) check_shape(**g, {{"B", L.B}, {"H", L.H}}, L.ctx);
  check_shape(*scratch, {{"rnn_ln_scratch_size", scratch_elems(L.mode, L.steps, L.B, L.H, "scratch")}}, L.ctx);

  std::vector<const Array*> outputs;
  for (const auto& o : out) outputs.push_back(ptr(o));
  check_same_dtype(L.x, {&y, &workspace, &grad_y, ptr(grad_h_n), ptr(grad_c_n)});
  for (const Array* o : outputs)
    if (o) check_same_dtype(L.x, {o});
  std::vector<const Array*> all = L.inputs();
  all.insert(all.end(), {&y, &workspace, &grad_y, ptr(grad_h_n), ptr(grad_c_n)});
  all.insert(all.end(), outputs.begin(), outputs.end());
  [[maybe_unused]] const Device device = check_device(all);
  const uintptr_t stream = parse_stream(args[38]);
  std::vector<const Array*> in = L.inputs();
  in.insert(in.end(), {&y, &workspace, &grad_y, ptr(grad_h_n), ptr(grad_c_n)});
  for (size_t k = 0; k < outputs.size(); ++k) {
    if (!outputs[k]) continue;
    for (const Array* i : in)
      if (i) check_no_overlap({outputs[k]}, {i});
    for (size_t k2 = k + 1; k2 < outputs.size(); ++k2)
      if (outputs[k2]) check_no_overlap({outputs[k], outputs[k2]}, {});
  }
  check_values(L);
  bool wanted = false;
  for (int k = 0; k < 13; ++k)
    if (out[k] && out[k]->t.numel() > 0) wanted = true;
  if (!wanted) return;
  dispatch_dtype(L.x.t.dtype, [&](auto zero) {
    using T = decltype(zero);
    const RnnBackwardArgs<T> b{L.forward_args<T>(y.t.data<T>(), nullptr, nullptr, workspace.t.data<T>()),
                               grad_y.t.data<T>(), data<T>(grad_h_n), data<T>(grad_c_n),
                               data<T>(gx), data<T>(gw_ih), data<T>(gw_hh), data<T>(gb_ih),
                               data<T>(gb_hh), nullptr, data<T>(gh0), data<T>(gc0),
                               scratch->t.data<T>()};
    const RnnLnGrads<T> g{data<T>(g_lnih_w), data<T>(g_lnih_b), data<T>(g_lnhh_w),
                          data<T>(g_lnhh_b), data<T>(g_lnc_w), data<T>(g_lnc_b)};
    const RnnLnArgs<T> e = L.ext<T>();
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::rnn_ln_backward(b, e, g, stream, device.index);
#endif
    (void)stream;
    cpu::rnn_ln_backward(b, e, g);
  });
}

}  // namespace

void register_rnn_ln(py::module_& m) {
  m.def("rnn_ln_workspace_size", &workspace_size, py::arg("mode"), py::arg("steps"),
        py::arg("batch"), py::arg("hidden_size"), py::arg("layer_norm"),
        R"doc(Elements of the `workspace` rnn_ln_forward fills and rnn_ln_backward reads:
steps * batch * (7 H [+ 9 H + 3 with layer_norm]) for 'lstm', steps * batch * 5 H for 'gru'.)doc");
  m.def("rnn_ln_scratch_size", &scratch_size, py::arg("mode"), py::arg("steps"), py::arg("batch"),
        py::arg("hidden_size"),
        R"doc(Elements of the `scratch` rnn_ln_backward uses: steps * batch * (3 G + 1) * hidden_size.)doc");
  m.def("rnn_ln_forward", [](const py::args& args, const py::kwargs& kwargs) {
          forward(in_order("rnn_ln_forward", args, kwargs, kForwardNames));
        },
        R"doc(rnn_ln_forward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse,
    ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias, ln_c_weight, ln_c_bias, eps,
    keep_h, keep_c, y, h_n, c_n, workspace, stream=0, projection_dtype=None)

One LSTM layer with layer normalization and/or zoneout, or one GRU layer with zoneout, in
one direction over a whole sequence (math in csrc/include/unet/rnn_ln.h; no projection).
mode 'lstm' or 'gru'; x [T, B, I]; w_ih [G*H, I]; w_hh [G*H, H]; b_ih, b_hh [G*H] or None
(both or neither); h0 [B, H]; c0 [B, H] (lstm) or None; lengths None or int64 [B] in [1, T];
reverse bool. ln_*: the six LSTM layer-norm gains and biases (ih, hh [4H]; c [H]) or all
None; eps > 0. keep_h, keep_c [T, B, H]: zoneout keep factors in [0, 1] (keep_c lstm only),
or None. Outputs: y [T, B, H], h_n [B, H], c_n [B, H] (lstm) or None, workspace
[rnn_ln_workspace_size(mode, T, B, H, layer_norm)]. float32/float64 arrays, contiguous, all on
the CPU or all on one CUDA device; stream: cudaStream_t as int (0 = default).
projection_dtype: None, or 'float16' / 'bfloat16' with float32 arrays whose x and w_ih hold
values of that dtype: x W_ih^T may run on 16-bit copies with float32 sums (the
mixed-precision matmul), as in rnn_forward.)doc");
  m.def("rnn_ln_backward", [](const py::args& args, const py::kwargs& kwargs) {
          backward(in_order("rnn_ln_backward", args, kwargs, kBackwardNames));
        },
        R"doc(rnn_ln_backward(<the 19 inputs of rnn_ln_forward>, y, workspace, grad_y, grad_h_n,
    grad_c_n, grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_h0, grad_c0,
    grad_ln_ih_weight, grad_ln_ih_bias, grad_ln_hh_weight, grad_ln_hh_bias, grad_ln_c_weight,
    grad_ln_c_bias, scratch)

Backward through time of rnn_ln_forward. grad_y [T, B, H] required; grad_h_n, grad_c_n
or None (zero). Each gradient is overwritten, or None when not wanted. scratch:
[rnn_ln_scratch_size(mode, T, B, H)]; stream as in rnn_ln_forward.)doc");
}

}  // namespace unet::bindings
