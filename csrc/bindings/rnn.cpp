// unet._C.rnn_forward / rnn_backward and their buffer sizes: validate every argument, then
// run the CPU or the CUDA kernel (csrc/include/unet/rnn.h) without the GIL.
#include <string>
#include <utility>
#include <vector>

#include "array.h"
#include "bindings.h"
#include "rnn_projection.h"
#include "unet/rnn.h"

namespace unet::bindings {
namespace {

const std::pair<const char*, RnnMode> kModes[] = {
    {"lstm", RnnMode::LSTM}, {"gru", RnnMode::GRU},
    {"rnn_tanh", RnnMode::RNN_TANH}, {"rnn_relu", RnnMode::RNN_RELU},
};
const char* kModeList = "'lstm', 'gru', 'rnn_tanh', 'rnn_relu'";

RnnMode parse_mode(py::handle obj) {
  if (!py::isinstance<py::str>(obj))
    type_error("mode", std::string("expected a str, one of ") + kModeList + ", got " +
                           type_name(obj));
  const std::string s = obj.cast<std::string>();
  for (const auto& [name, mode] : kModes)
    if (s == name) return mode;
  value_error("mode", std::string("expected one of ") + kModeList + ", got '" + s + "'");
}

std::string mode_str(RnnMode mode) {
  for (const auto& [name, m] : kModes)
    if (m == mode) return std::string("'") + name + "'";
  return "?";
}

// A size argument: a Python int (not a bool) in [0, 2^62).
int64_t parse_size(py::handle obj, const char* name) {
  if (!PyLong_Check(obj.ptr()) || PyBool_Check(obj.ptr()))
    type_error(name, "expected an int, got " + type_name(obj));
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
  if (overflow || v >= (int64_t(1) << 62))
    value_error(name, "expected a size below 2**62, got " + std::string(py::str(obj)));
  if (v < 0) value_error(name, "expected a non-negative size, got " + std::to_string(v));
  return v;
}

// a * b + c ... without int64 overflow (sizes come from arrays that may be empty and huge).
int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) value_error(what, "expected sizes whose product fits int64, got an overflow");
  return r;
}
int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) value_error(what, "expected sizes whose product fits int64, got an overflow");
  return r;
}

// rnn_workspace_size / rnn_backward_scratch_size of rnn.h, overflow-checked.
int64_t workspace_elems(RnnMode mode, int64_t T, int64_t B, int64_t H, int64_t P,
                        const char* what) {
  const int64_t G = rnn_gate_count(mode);
  const int64_t row = checked_add(checked_mul(G + 2, H, what), P, what);
  return checked_mul(checked_mul(T, B, what), row, what);
}
int64_t scratch_elems(RnnMode mode, int64_t T, int64_t B, int64_t H, int64_t P, const char* what) {
  const int64_t G = rnn_gate_count(mode);
  const int64_t steps = checked_mul(checked_mul(checked_mul(T, B, what), 2 * G, what), H, what);
  return checked_add(steps, checked_mul(4 * B, checked_add(H, P, what), what), what);
}

// P == H, or an LSTM projection 1 <= P < H.
void check_proj_size(RnnMode mode, int64_t H, int64_t P) {
  if (P == H) return;
  if (mode != RnnMode::LSTM)
    value_error("proj_size", "expected P == hidden_size=" + std::to_string(H) + " for mode " +
                                 mode_str(mode) + " (only an LSTM has a projection), got " +
                                 std::to_string(P));
  if (P < 1 || P > H)
    value_error("proj_size", "expected P == hidden_size or 1 <= P < hidden_size=" +
                                 std::to_string(H) + ", got " + std::to_string(P));
}

int64_t workspace_size(py::handle mode_, py::handle steps_, py::handle batch_, py::handle hidden_,
                       py::handle proj_) {
  const RnnMode mode = parse_mode(mode_);
  const int64_t T = parse_size(steps_, "steps"), B = parse_size(batch_, "batch");
  const int64_t H = parse_size(hidden_, "hidden_size"), P = parse_size(proj_, "proj_size");
  check_proj_size(mode, H, P);
  return workspace_elems(mode, T, B, H, P, "rnn_workspace_size");
}

int64_t scratch_size(py::handle mode_, py::handle steps_, py::handle batch_, py::handle hidden_,
                     py::handle proj_) {
  const RnnMode mode = parse_mode(mode_);
  const int64_t T = parse_size(steps_, "steps"), B = parse_size(batch_, "batch");
  const int64_t H = parse_size(hidden_, "hidden_size"), P = parse_size(proj_, "proj_size");
  check_proj_size(mode, H, P);
  return scratch_elems(mode, T, B, H, P, "rnn_backward_scratch_size");
}

// An optional argument that exists only for some modes or layers: given iff `wanted`.
void check_presence(const std::optional<Array>& a, const char* name, bool wanted,
                    const std::string& why_not, const std::string& what) {
  if (a && !wanted) value_error(name, why_not + "; expected None, got an array");
  if (!a && wanted) value_error(name, "expected " + what + ", got None");
}

// The arguments forward and backward share, parsed and checked against each other.
struct Layer {
  RnnMode mode;
  bool reverse;
  uintptr_t stream;
  int64_t T, B, I, H, P, G;
  Array x, w_ih, w_hh;
  std::optional<Array> b_ih, b_hh, w_hr;
  Array h0;
  std::optional<Array> c0, lengths;
  std::string ctx;  // "for mode 'lstm' (G=4) with ...", for shape messages

  bool lstm() const { return mode == RnnMode::LSTM; }
  bool bias() const { return b_ih.has_value(); }
  std::vector<const Array*> inputs() const {
    return {&x, &w_ih, &w_hh, ptr(b_ih), ptr(b_hh), ptr(w_hr), &h0, ptr(c0), ptr(lengths)};
  }
};

Layer parse_layer(py::handle mode_, py::handle x_, py::handle w_ih_, py::handle w_hh_,
                  py::handle b_ih_, py::handle b_hh_, py::handle w_hr_, py::handle h0_,
                  py::handle c0_, py::handle lengths_, py::handle reverse_, py::handle stream_) {
  Layer L;
  L.mode = parse_mode(mode_);
  L.reverse = parse_bool(reverse_, "reverse");
  L.stream = parse_stream(stream_);
  L.x = parse_array(x_, "x", Role::Input);
  L.w_ih = parse_array(w_ih_, "w_ih", Role::Input);
  L.w_hh = parse_array(w_hh_, "w_hh", Role::Input);
  L.b_ih = parse_optional_array(b_ih_, "b_ih", Role::Input);
  L.b_hh = parse_optional_array(b_hh_, "b_hh", Role::Input);
  L.w_hr = parse_optional_array(w_hr_, "w_hr", Role::Input);
  L.h0 = parse_array(h0_, "h0", Role::Input);
  L.c0 = parse_optional_array(c0_, "c0", Role::Input);
  L.lengths = parse_optional_int64_array(lengths_, "lengths");
  const std::string m = mode_str(L.mode);
  L.G = rnn_gate_count(L.mode);

  if (L.b_ih && !L.b_hh)
    value_error("b_hh", "expected an array when b_ih is given (both biases or neither), got None");
  if (!L.b_ih && L.b_hh)
    value_error("b_ih", "expected an array when b_hh is given (both biases or neither), got None");
  if (L.w_hr && !L.lstm())
    value_error("w_hr",
                "only an LSTM has a projection, not mode " + m + "; expected None, got an array");
  check_presence(L.c0, "c0", L.lstm(), "only an LSTM has a cell state, not mode " + m,
                 "the initial cell state (B, H) of an LSTM");

  check_shape(L.x, {{"T"}, {"B"}, {"I"}});
  L.T = L.x.t.shape[0], L.B = L.x.t.shape[1], L.I = L.x.t.shape[2];
  check_shape(L.w_ih, {{"G*H"}, {"I", L.I}}, "matching " + describe(L.x, {"T", "B", "I"}));
  const int64_t GH = L.w_ih.t.shape[0];
  if (GH % L.G != 0)
    value_error("w_ih", "expected a first dimension G*H divisible by G=" + std::to_string(L.G) +
                            " (the gates of mode " + m + "), got " + std::to_string(GH));
  L.H = GH / L.G;
  if (L.w_hr) {
    check_shape(*L.w_hr, {{"P"}, {"H", L.H}}, "(H from w_ih)");
    L.P = L.w_hr->t.shape[0];
    if (L.P < 1 || L.P >= L.H)
      value_error("w_hr", "expected P rows with 1 <= P < H=" + std::to_string(L.H) +
                              " (a projection to a smaller size, torch's proj_size; None when "
                              "P == H), got P=" + std::to_string(L.P));
  } else {
    L.P = L.H;
  }
  L.ctx = "for mode " + m + " (G=" + std::to_string(L.G) + ") with T=" + std::to_string(L.T) +
          ", B=" + std::to_string(L.B) + ", I=" + std::to_string(L.I) + " (x), H=" +
          std::to_string(L.H) + " (w_ih), P=" + std::to_string(L.P) +
          (L.w_hr ? " (w_hr)" : " (= H, no w_hr)");
  check_shape(L.w_hh, {{"G*H", GH}, {"P", L.P}}, L.ctx);
  if (L.b_ih) check_shape(*L.b_ih, {{"G*H", GH}}, L.ctx);
  if (L.b_hh) check_shape(*L.b_hh, {{"G*H", GH}}, L.ctx);
  check_shape(L.h0, {{"B", L.B}, {"P", L.P}}, L.ctx);
  if (L.c0) check_shape(*L.c0, {{"B", L.B}, {"H", L.H}}, L.ctx);
  if (L.lengths) check_shape(*L.lengths, {{"B", L.B}}, L.ctx);
  check_same_dtype(L.x,
                   {&L.w_ih, &L.w_hh, ptr(L.b_ih), ptr(L.b_hh), ptr(L.w_hr), &L.h0, ptr(L.c0)});
  return L;
}

// Lengths in [1, T], read where they are host memory. (CUDA lengths cannot be read here
// without a hidden device-to-host copy; the CUDA kernels must not trust them.)
void check_lengths(const Layer& L) {
  if (!L.lengths || L.lengths->t.device.type != DeviceType::CPU) return;
  const int64_t* len = L.lengths->t.data<int64_t>();
  for (int64_t b = 0; b < L.B; ++b)
    if (len[b] < 1 || len[b] > L.T)
      value_error("lengths", "expected values in [1, T=" + std::to_string(L.T) + "], got lengths[" +
                                 std::to_string(b) + "] = " + std::to_string(len[b]));
}

template <typename T>
RnnForwardArgs<T> forward_args(const Layer& L, const Array& y, T* h_n, T* c_n, T* workspace) {
  return {L.mode, L.T, L.B, L.I, L.H, L.P, L.reverse, L.x.t.data<T>(), L.w_ih.t.data<T>(),
          L.w_hh.t.data<T>(), data<T>(L.b_ih), data<T>(L.b_hh), data<T>(L.w_hr), L.h0.t.data<T>(),
          data<T>(L.c0), L.lengths ? L.lengths->t.data<int64_t>() : nullptr, y.t.data<T>(), h_n,
          c_n, workspace};
}

void rnn_forward(py::handle mode_, py::handle x_, py::handle w_ih_, py::handle w_hh_,
                 py::handle b_ih_, py::handle b_hh_, py::handle w_hr_, py::handle h0_,
                 py::handle c0_, py::handle lengths_, py::handle reverse_, py::handle y_,
                 py::handle h_n_, py::handle c_n_, py::handle workspace_, py::handle stream_,
                 py::handle projection_dtype_) {
  const Layer L = parse_layer(mode_, x_, w_ih_, w_hh_, b_ih_, b_hh_, w_hr_, h0_, c0_, lengths_,
                              reverse_, stream_);
  const DType projection_dtype = parse_projection_dtype(projection_dtype_, L.x.t.dtype);
  const Array y = parse_array(y_, "y", Role::Output);
  const Array h_n = parse_array(h_n_, "h_n", Role::Output);
  const std::optional<Array> c_n = parse_optional_array(c_n_, "c_n", Role::Output);
  const Array workspace = parse_array(workspace_, "workspace", Role::Output);
  check_presence(c_n, "c_n", L.lstm(),
                 "only an LSTM has a cell state, not mode " + mode_str(L.mode),
                 "an output for the final cell state (B, H) of an LSTM");

  check_shape(y, {{"T", L.T}, {"B", L.B}, {"P", L.P}}, L.ctx);
  check_shape(h_n, {{"B", L.B}, {"P", L.P}}, L.ctx);
  if (c_n) check_shape(*c_n, {{"B", L.B}, {"H", L.H}}, L.ctx);
  const int64_t ws = workspace_elems(L.mode, L.T, L.B, L.H, L.P, "workspace");
  check_shape(workspace, {{"rnn_workspace_size", ws}}, L.ctx);
  check_same_dtype(L.x, {&y, &h_n, ptr(c_n), &workspace});
  std::vector<const Array*> all = L.inputs();
  all.insert(all.end(), {&y, &h_n, ptr(c_n), &workspace});
  [[maybe_unused]] const Device device = check_same_device(all);
  check_no_overlap({&y, &h_n, ptr(c_n), &workspace},
                   {&L.x, &L.w_ih, &L.w_hh, ptr(L.b_ih), ptr(L.b_hh), ptr(L.w_hr), &L.h0, ptr(L.c0),
                    ptr(L.lengths)});
  check_lengths(L);
  if (h_n.t.numel() == 0 && y.t.numel() == 0) return;  // B == 0, or H == 0

  dispatch_dtype(L.x.t.dtype, [&](auto zero) {
    using T = decltype(zero);
    RnnForwardArgs<T> args =
        forward_args<T>(L, y, h_n.t.data<T>(), data<T>(c_n), workspace.t.data<T>());
    args.projection_dtype = projection_dtype;
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::rnn_forward(args, L.stream, device.index);
#endif
    cpu::rnn_forward(args);
  });
}

void rnn_backward(py::handle mode_, py::handle x_, py::handle w_ih_, py::handle w_hh_,
                  py::handle b_ih_, py::handle b_hh_, py::handle w_hr_, py::handle h0_,
                  py::handle c0_, py::handle lengths_, py::handle reverse_, py::handle y_,
                  py::handle workspace_, py::handle grad_y_, py::handle grad_h_n_,
                  py::handle grad_c_n_, py::handle grad_x_, py::handle grad_w_ih_,
                  py::handle grad_w_hh_, py::handle grad_b_ih_, py::handle grad_b_hh_,
                  py::handle grad_w_hr_, py::handle grad_h0_, py::handle grad_c0_,
                  py::handle scratch_, py::handle stream_) {
  const Layer L = parse_layer(mode_, x_, w_ih_, w_hh_, b_ih_, b_hh_, w_hr_, h0_, c0_, lengths_,
                              reverse_, stream_);
  const std::string m = mode_str(L.mode);
  const Array y = parse_array(y_, "y", Role::Input);
  const Array workspace = parse_array(workspace_, "workspace", Role::Input);
  const Array grad_y = parse_array(grad_y_, "grad_y", Role::Input);
  const std::optional<Array> grad_h_n = parse_optional_array(grad_h_n_, "grad_h_n", Role::Input);
  const std::optional<Array> grad_c_n = parse_optional_array(grad_c_n_, "grad_c_n", Role::Input);
  const std::optional<Array> grad_x = parse_optional_array(grad_x_, "grad_x", Role::Output);
  const std::optional<Array> grad_w_ih =
      parse_optional_array(grad_w_ih_, "grad_w_ih", Role::Output);
  const std::optional<Array> grad_w_hh =
      parse_optional_array(grad_w_hh_, "grad_w_hh", Role::Output);
  const std::optional<Array> grad_b_ih =
      parse_optional_array(grad_b_ih_, "grad_b_ih", Role::Output);
  const std::optional<Array> grad_b_hh =
      parse_optional_array(grad_b_hh_, "grad_b_hh", Role::Output);
  const std::optional<Array> grad_w_hr =
      parse_optional_array(grad_w_hr_, "grad_w_hr", Role::Output);
  const std::optional<Array> grad_h0 = parse_optional_array(grad_h0_, "grad_h0", Role::Output);
  const std::optional<Array> grad_c0 = parse_optional_array(grad_c0_, "grad_c0", Role::Output);
  const Array scratch = parse_array(scratch_, "scratch", Role::Output);

  const std::string no_cell = "only an LSTM has a cell state, not mode " + m;
  if (grad_c_n && !L.lstm()) value_error("grad_c_n", no_cell + "; expected None, got an array");
  if (grad_c0 && !L.lstm()) value_error("grad_c0", no_cell + "; expected None, got an array");
  if (grad_b_ih && !L.bias())
    value_error("grad_b_ih", "the layer has no bias (b_ih is None); expected None, got an array");
  if (grad_b_hh && !L.bias())
    value_error("grad_b_hh", "the layer has no bias (b_hh is None); expected None, got an array");
  if (grad_w_hr && !L.w_hr)
    value_error("grad_w_hr",
                "the layer has no projection (w_hr is None); expected None, got an array");

  const int64_t GH = L.G * L.H;
  check_shape(y, {{"T", L.T}, {"B", L.B}, {"P", L.P}}, L.ctx);
  const int64_t ws = workspace_elems(L.mode, L.T, L.B, L.H, L.P, "workspace");
  check_shape(workspace, {{"rnn_workspace_size", ws}}, L.ctx);
  check_shape(grad_y, {{"T", L.T}, {"B", L.B}, {"P", L.P}}, L.ctx);
  if (grad_h_n) check_shape(*grad_h_n, {{"B", L.B}, {"P", L.P}}, L.ctx);
  if (grad_c_n) check_shape(*grad_c_n, {{"B", L.B}, {"H", L.H}}, L.ctx);
  if (grad_x) check_shape(*grad_x, {{"T", L.T}, {"B", L.B}, {"I", L.I}}, L.ctx);
  if (grad_w_ih) check_shape(*grad_w_ih, {{"G*H", GH}, {"I", L.I}}, L.ctx);
  if (grad_w_hh) check_shape(*grad_w_hh, {{"G*H", GH}, {"P", L.P}}, L.ctx);
  if (grad_b_ih) check_shape(*grad_b_ih, {{"G*H", GH}}, L.ctx);
  if (grad_b_hh) check_shape(*grad_b_hh, {{"G*H", GH}}, L.ctx);
  if (grad_w_hr) check_shape(*grad_w_hr, {{"P", L.P}, {"H", L.H}}, L.ctx);
  if (grad_h0) check_shape(*grad_h0, {{"B", L.B}, {"P", L.P}}, L.ctx);
  if (grad_c0) check_shape(*grad_c0, {{"B", L.B}, {"H", L.H}}, L.ctx);
  const int64_t ss = scratch_elems(L.mode, L.T, L.B, L.H, L.P, "scratch");
  check_shape(scratch, {{"rnn_backward_scratch_size", ss}}, L.ctx);

  const std::initializer_list<const Array*> outputs = {
      ptr(grad_x), ptr(grad_w_ih), ptr(grad_w_hh), ptr(grad_b_ih), ptr(grad_b_hh),
      ptr(grad_w_hr), ptr(grad_h0), ptr(grad_c0), &scratch};
  check_same_dtype(L.x, {&y, &workspace, &grad_y, ptr(grad_h_n), ptr(grad_c_n), ptr(grad_x),
                         ptr(grad_w_ih), ptr(grad_w_hh), ptr(grad_b_ih), ptr(grad_b_hh),
                         ptr(grad_w_hr), ptr(grad_h0), ptr(grad_c0), &scratch});
  std::vector<const Array*> all = L.inputs();
  all.insert(all.end(), {&y, &workspace, &grad_y, ptr(grad_h_n), ptr(grad_c_n)});
  all.insert(all.end(), outputs);
  [[maybe_unused]] const Device device = check_same_device(all);
  check_no_overlap(outputs, {&L.x, &L.w_ih, &L.w_hh, ptr(L.b_ih), ptr(L.b_hh), ptr(L.w_hr), &L.h0,
                             ptr(L.c0), ptr(L.lengths), &y, &workspace, &grad_y, ptr(grad_h_n),
                             ptr(grad_c_n)});
  check_lengths(L);
  bool wanted = false;
  for (const Array* a : outputs)
    if (a && a != &scratch && a->t.numel() > 0) wanted = true;
  if (!wanted) return;

  dispatch_dtype(L.x.t.dtype, [&](auto zero) {
    using T = decltype(zero);
    // In backward the forward's outputs are inputs: h_n, c_n are not used.
    const RnnBackwardArgs<T> args{
        forward_args<T>(L, y, nullptr, nullptr, workspace.t.data<T>()),
        grad_y.t.data<T>(), data<T>(grad_h_n), data<T>(grad_c_n), data<T>(grad_x),
        data<T>(grad_w_ih), data<T>(grad_w_hh), data<T>(grad_b_ih), data<T>(grad_b_hh),
        data<T>(grad_w_hr), data<T>(grad_h0), data<T>(grad_c0), scratch.t.data<T>()};
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::rnn_backward(args, L.stream, device.index);
#endif
    cpu::rnn_backward(args);
  });
}

}  // namespace

void register_rnn(py::module_& m) {
  m.def("rnn_workspace_size", &workspace_size, py::arg("mode"), py::arg("steps"), py::arg("batch"),
        py::arg("hidden_size"), py::arg("proj_size"),
        R"doc(Elements of the `workspace` rnn_forward fills and rnn_backward reads:
steps * batch * ((G + 2) * hidden_size + proj_size), G = 4 (lstm), 3 (gru), 1 (rnn_*).
proj_size is P: hidden_size without a projection, else the LSTM's 1 <= P < hidden_size.)doc");
  m.def("rnn_backward_scratch_size", &scratch_size, py::arg("mode"), py::arg("steps"),
        py::arg("batch"), py::arg("hidden_size"), py::arg("proj_size"),
        R"doc(Elements of the `scratch` rnn_backward uses:
steps * batch * 2 * G * hidden_size + 4 * batch * (hidden_size + proj_size).)doc");
  m.def("rnn_forward", &rnn_forward, py::arg("mode"), py::arg("x"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("w_hr"), py::arg("h0"),
        py::arg("c0"), py::arg("lengths"), py::arg("reverse"), py::arg("y"), py::arg("h_n"),
        py::arg("c_n"), py::arg("workspace"), py::arg("stream") = 0,
        py::arg("projection_dtype") = py::none(),
        R"doc(One recurrent layer and direction over a whole sequence (torch's math and gate order).

mode: 'lstm', 'gru', 'rnn_tanh' or 'rnn_relu' (G = 4, 3, 1, 1 gates).
x [T, B, I]; w_ih [G*H, I]; w_hh [G*H, P]; b_ih, b_hh [G*H] (both or None);
w_hr [P, H] (LSTM projection, 1 <= P < H) or None (then P = H); h0 [B, P];
c0 [B, H] for an LSTM, None otherwise; lengths: None or int64 [B] with 1 <= lengths[b] <= T
(any order; steps t >= lengths[b] are padding: y = 0 there, and the state stops at the
sequence's own last step); reverse: bool, run each sequence from its last valid step.
Outputs, overwritten: y [T, B, P], h_n [B, P], c_n [B, H] (LSTM; None otherwise),
workspace [rnn_workspace_size(...)] (kept for rnn_backward).
All float arrays one dtype (float32/float64), C-contiguous, all on the CPU or all on one
CUDA device (lengths too); outputs must not overlap inputs. T == 0 gives h_n = h0, c_n = c0.
stream: cudaStream_t as int for CUDA arrays (0 = default).
projection_dtype: None, or 'float16' / 'bfloat16' with float32 arrays whose x and w_ih hold
values of that dtype (autocast rounds them): the input projection x W_ih^T + b_ih then may
run on 16-bit copies of them with float32 sums, on the mixed-precision matmul (tensor cores
on a GPU, AVX-512 BF16 on a CPU that has it); other values are rounded where copies are made.
rnn_backward needs no such argument: its products stay in the arrays' dtype. Returns None.)doc");
  m.def("rnn_backward", &rnn_backward, py::arg("mode"), py::arg("x"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("w_hr"), py::arg("h0"),
        py::arg("c0"), py::arg("lengths"), py::arg("reverse"), py::arg("y"), py::arg("workspace"),
        py::arg("grad_y"), py::arg("grad_h_n"), py::arg("grad_c_n"), py::arg("grad_x"),
        py::arg("grad_w_ih"), py::arg("grad_w_hh"), py::arg("grad_b_ih"), py::arg("grad_b_hh"),
        py::arg("grad_w_hr"), py::arg("grad_h0"), py::arg("grad_c0"), py::arg("scratch"),
        py::arg("stream") = 0,
        R"doc(Backward through time of rnn_forward, given its arguments, its y and workspace.

grad_y [T, B, P] (required; its padded steps are ignored); grad_h_n [B, P] and grad_c_n
[B, H] (LSTM) or None (zero). Gradients, each overwritten, each None when not wanted:
grad_x [T, B, I] (zero at padded steps), grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh
(only with biases), grad_w_hr (only with w_hr), grad_h0 [B, P], grad_c0 [B, H] (LSTM).
scratch [rnn_backward_scratch_size(...)]: temporary memory. Padded entries of x must be
finite (they meet zeros in grad_w_ih's sum). Same array rules as rnn_forward. Returns None.)doc");
}

}  // namespace unet::bindings
