// unet._C.ctc_loss and ctc_check: validate every argument (the index arrays' values too,
// where they are host memory), then run the CPU or the CUDA kernel (unet/ctc.h) without
// the GIL.
#include <string>
#include <vector>

#include "array.h"
#include "bindings.h"
#include "unet/ctc.h"

namespace unet::bindings {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

// The index arrays: targets padded [N, S] or concatenated [sum of target_lengths], and the
// two length vectors [N].
struct Indices {
  Array targets, input_lengths, target_lengths;
  int64_t batch;
  bool padded() const { return targets.t.ndim() == 2; }
};

// batch < 0: the length of input_lengths.
Indices parse_indices(py::handle targets_, py::handle input_lengths_, py::handle target_lengths_,
                      int64_t batch, const std::string& ctx) {
  auto required = [](py::handle obj, const char* name) {
    if (obj.is_none()) throw py::type_error(std::string(name) + ": expected an int64 array, got None");
    return *parse_optional_int64_array(obj, name);
  };
  Indices ix{required(targets_, "targets"), required(input_lengths_, "input_lengths"),
             required(target_lengths_, "target_lengths"), batch};
  if (batch < 0) {  // the batch size is input_lengths'
    check_shape(ix.input_lengths, {{"N"}});
    ix.batch = batch = ix.input_lengths.t.shape[0];
  }
  if (ix.targets.t.ndim() == 2)
    check_shape(ix.targets, {{"N", batch}, {"S"}}, ctx + " (padded targets)");
  else if (ix.targets.t.ndim() != 1)
    value_error("targets", "expected a 2-D array (N=" + str(batch) +
                               ", S) of padded targets or a 1-D array of concatenated targets, "
                               "got a " + str(ix.targets.t.ndim()) + "-D array");
  check_shape(ix.input_lengths, {{"N", batch}}, ctx);
  check_shape(ix.target_lengths, {{"N", batch}}, ctx);
  return ix;
}

std::string at(const Indices& ix, int64_t n, int64_t i, int64_t offset) {
  return ix.padded() ? "targets[" + str(n) + ", " + str(i) + "]" : "targets[" + str(offset + i) + "]";
}

// Lengths within bounds, and every label a sequence uses in [0, classes) and not the blank.
// max_target_length < 0: no workspace to fit. Host arrays only.
void check_values(const Indices& ix, int64_t steps, int64_t classes, int64_t blank,
                  int64_t max_target_length) {
  const int64_t* in_len = ix.input_lengths.t.data<int64_t>();
  const int64_t* tg_len = ix.target_lengths.t.data<int64_t>();
  const int64_t* labels = ix.targets.t.data<int64_t>();
  const int64_t row = ix.padded() ? ix.targets.t.shape[1] : -1;
  int64_t offset = 0;
  for (int64_t n = 0; n < ix.batch; ++n) {
    if (in_len[n] < 0 || in_len[n] > steps)
      value_error("input_lengths", "expected values in [0, T=" + str(steps) +
                                       "] (the time steps of log_probs), got input_lengths[" +
                                       str(n) + "] = " + str(in_len[n]));
    const int64_t len = tg_len[n];
    if (len < 0 || (ix.padded() && len > row))
      value_error("target_lengths",
                  "expected values in [0, " + (ix.padded() ? "S=" + str(row) + "] (the padded targets' row length)"
                                                           : std::string("inf)")) +
                      ", got target_lengths[" + str(n) + "] = " + str(len));
    if (!ix.padded() && len > ix.targets.t.shape[0] - offset)
      value_error("targets", "expected sum(target_lengths) labels (concatenated targets), got " +
                                 str(ix.targets.t.shape[0]) + ", fewer than the first " +
                                 str(n + 1) + " target lengths need");
    if (max_target_length >= 0 && len > max_target_length)
      value_error("workspace", "expected rows of 2S+1 >= " + str(2 * len + 1) + " for target_lengths[" +
                                   str(n) + "] = " + str(len) + ", got rows of " +
                                   str(2 * max_target_length + 1) + " (S=" + str(max_target_length) + ")");
    const int64_t start = ix.padded() ? n * row : offset;
    for (int64_t i = 0; i < len; ++i) {
      const int64_t label = labels[start + i];
      if (label < 0 || label >= classes)
        throw py::index_error("targets: expected labels in [0, C=" + str(classes) + "), got " +
                              at(ix, n, i, offset) + " = " + str(label));
      if (label == blank)
        value_error("targets", "expected no blank (blank=" + str(blank) +
                                   ") among the labels, got " + at(ix, n, i, offset) + " = " +
                                   str(label));
    }
    offset += len;
  }
  if (!ix.padded() && offset != ix.targets.t.shape[0])
    value_error("targets", "expected sum(target_lengths) = " + str(offset) +
                               " labels (concatenated targets), got " + str(ix.targets.t.shape[0]));
}

int64_t parse_blank(py::handle blank_, int64_t classes) {
  const int64_t blank = parse_int(blank_, "blank");
  if (blank < 0 || blank >= classes)
    value_error("blank", "expected a class index in [0, C=" + str(classes) + "), got " + str(blank));
  return blank;
}

void ctc_check(py::handle targets_, py::handle input_lengths_, py::handle target_lengths_,
               py::handle steps_, py::handle classes_, py::handle blank_) {
  const int64_t steps = parse_int(steps_, "steps"), classes = parse_int(classes_, "classes");
  if (steps < 0) value_error("steps", "expected a non-negative int, got " + str(steps));
  const int64_t blank = parse_blank(blank_, classes);
  const Indices ix = parse_indices(targets_, input_lengths_, target_lengths_, -1, "");
  for (const Array* a : {&ix.targets, &ix.input_lengths, &ix.target_lengths})
    if (a->t.device.type != DeviceType::CPU)
      value_error(a->name, "expected a host (numpy) array: ctc_check reads the values");
  check_values(ix, steps, classes, blank, -1);
}

void ctc_loss(py::handle log_probs_, py::handle targets_, py::handle input_lengths_,
              py::handle target_lengths_, py::handle blank_, py::handle zero_infinity_,
              py::handle loss_, py::handle grad_, py::handle workspace_, py::handle stream_) {
  const Array log_probs = parse_array(log_probs_, "log_probs", Role::Input);
  check_shape(log_probs, {{"T"}, {"N"}, {"C"}});
  const int64_t steps = log_probs.t.shape[0], batch = log_probs.t.shape[1];
  const int64_t classes = log_probs.t.shape[2];
  const std::string ctx = "matching " + describe(log_probs, {"T", "N", "C"});
  const int64_t blank = parse_blank(blank_, classes);
  const bool zero_infinity = parse_bool(zero_infinity_, "zero_infinity");
  [[maybe_unused]] const uintptr_t stream = parse_stream(stream_);
  const Indices ix = parse_indices(targets_, input_lengths_, target_lengths_, batch, ctx);
  const Array loss = parse_array(loss_, "loss", Role::Output);
  const std::optional<Array> grad = parse_optional_array(grad_, "grad", Role::Output);
  const Array workspace = parse_array(workspace_, "workspace", Role::Output);

  check_shape(loss, {{"N", batch}}, ctx);
  if (grad) check_shape(*grad, {{"T", steps}, {"N", batch}, {"C", classes}}, ctx);
  check_shape(workspace, {{"N", batch}, {"T+2", steps + 2}, {"2S+1"}}, ctx);
  const int64_t width = workspace.t.shape[2];
  if (width % 2 == 0)
    value_error("workspace", "expected an odd last dimension 2S+1 (S: the longest target), got " +
                                 str(width));
  check_same_dtype(log_probs, {&loss, ptr(grad), &workspace});
  [[maybe_unused]] const Device device =
      check_same_device({&log_probs, &ix.targets, &ix.input_lengths, &ix.target_lengths, &loss,
                         ptr(grad), &workspace});
  check_no_overlap({&loss, ptr(grad), &workspace},
                   {&log_probs, &ix.targets, &ix.input_lengths, &ix.target_lengths});
  if (ix.input_lengths.t.device.type == DeviceType::CPU)
    check_values(ix, steps, classes, blank, (width - 1) / 2);
  if (batch == 0) return;

  dispatch_dtype(log_probs.t.dtype, [&](auto zero) {
    using T = decltype(zero);
    const CtcArgs<T> args{steps, batch, classes, (width - 1) / 2,
                          ix.padded() ? ix.targets.t.shape[1] : -1,
                          log_probs.t.data<T>(), ix.targets.t.data<int64_t>(),
                          ix.targets.t.numel(),
                          ix.input_lengths.t.data<int64_t>(), ix.target_lengths.t.data<int64_t>(),
                          blank, zero_infinity, loss.t.data<T>(), data<T>(grad),
                          workspace.t.data<T>()};
    py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
    if (device.type == DeviceType::CUDA) return cuda::ctc_loss(args, stream, device.index);
#endif
    cpu::ctc_loss(args);
  });
}

}  // namespace

void register_ctc(py::module_& m) {
  m.def("ctc_loss", &ctc_loss, py::arg("log_probs"), py::arg("targets"), py::arg("input_lengths"),
        py::arg("target_lengths"), py::arg("blank"), py::arg("zero_infinity"), py::arg("loss"),
        py::arg("grad"), py::arg("workspace"), py::arg("stream") = 0,
        R"doc(CTC negative log-likelihood of each sequence, and its gradient (math in unet/ctc.h).

log_probs [T, N, C] float32/float64; targets int64, padded [N, S] (row n's first
target_lengths[n] entries are used) or concatenated [sum(target_lengths)];
input_lengths, target_lengths int64 [N] (0 <= input_lengths <= T); blank in [0, C), never
a target label; zero_infinity: bool, impossible alignments give loss 0 and gradient 0.
Outputs, overwritten: loss [N] (no reduction), grad [T, N, C] (d loss[n] / d log_probs;
zero at padded steps) or None for the loss only, workspace [N, T + 2, 2S + 1] with S at
least the longest target. All arrays on the CPU or all on one CUDA device; index arrays in
host memory are checked here (ValueError for a length out of range or a blank label,
IndexError for a label outside [0, C)); on a CUDA device check them with ctc_check first.
stream: cudaStream_t as int for CUDA arrays (0 = default). Returns None.)doc");
  m.def("ctc_check", &ctc_check, py::arg("targets"), py::arg("input_lengths"),
        py::arg("target_lengths"), py::arg("steps"), py::arg("classes"), py::arg("blank"),
        R"doc(ctc_loss's checks of the index arrays (host int64 arrays) for log_probs of
`steps` time steps and `classes` classes, without running anything: for callers that
upload the index arrays to a GPU afterwards. Returns None or raises.)doc");
}

}  // namespace unet::bindings
