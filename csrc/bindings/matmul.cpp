// unet._C.matmul: validate every argument, then run the CPU or the CUDA kernel
// (csrc/include/unet/matmul.h) without the GIL.
#include <cmath>
#include <string>

#include "array.h"
#include "bindings.h"
#include "unet/matmul.h"

namespace unet::bindings {
namespace {

// alpha, beta: a real number (not a bool) that is finite as a float32.
float parse_scale(py::handle obj, const char* name) {
  if (PyBool_Check(obj.ptr()) || !PyNumber_Check(obj.ptr()))
    type_error(name, "expected a float, got " + type_name(obj));
  const double v = PyFloat_AsDouble(obj.ptr());
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    type_error(name, "expected a float, got " + type_name(obj));
  }
  const float f = static_cast<float>(v);
  if (!std::isfinite(f))
    value_error(name, "expected a finite float32 value, got " + std::string(py::str(obj)));
  return f;
}

// A matrix argument as the kernel addresses it: leading dimension and batch stride, in
// elements. A 2-D matrix next to a 3-D c is shared by every item (batch stride 0).
struct Matrix {
  int64_t ld = 0, batch_stride = 0;
};

void check_ndim(const Array& x, bool allow_batched, const std::string& why_not) {
  const int64_t nd = x.t.ndim();
  if (nd == 2 || (nd == 3 && allow_batched)) return;
  value_error(x.name, std::string("expected a ") + (allow_batched ? "2-D or 3-D" : "2-D") +
                          " array" + (allow_batched ? "" : why_not) + ", got a " +
                          std::to_string(nd) + "-D one");
}

// Shape [batch,] rows x cols (names and sizes in `rows`, `cols`, -1 for any), rows laid out
// without overlap (leading dimension >= cols), and for an output, items without overlap.
Matrix check_matrix(const Array& x, int64_t batch, Dim rows, Dim cols, const std::string& context,
                    Role role) {
  if (x.t.ndim() == 3)
    check_shape(x, {{"batch", batch}, rows, cols}, context);
  else
    check_shape(x, {rows, cols}, context);
  const int64_t size = dtype_size(x.t.dtype), nd = x.t.ndim();
  const int64_t R = x.t.shape[nd - 2], C = x.t.shape[nd - 1];
  Matrix m;
  m.ld = R > 1 ? x.t.strides[nd - 2] / size : C;
  if (R > 1 && C > 0 && m.ld < C)
    value_error(x.name, "expected rows that do not overlap (a row stride of at least " +
                            std::to_string(C) + " elements), got " + std::to_string(m.ld));
  m.ld = std::max<int64_t>(m.ld, 1);
  if (nd == 3 && batch > 1) {
    m.batch_stride = x.t.strides[0] / size;
    // An output's items must not overlap: one after the other, or their rows side by side
    // (an [M, batch, N] array seen as [batch, M, N]).
    const int64_t extent = R * C == 0 ? 0 : (R - 1) * m.ld + C;
    const bool stacked = m.batch_stride >= extent;
    const bool side_by_side = m.batch_stride >= C && (batch - 1) * m.batch_stride + C <= m.ld;
    if (role == Role::Output && !stacked && !side_by_side)
      value_error(x.name, "expected batch items that do not overlap (an output), got batch stride " +
                              std::to_string(m.batch_stride) + " and row stride " +
                              std::to_string(m.ld) + " (elements) for " + std::to_string(R) +
                              " x " + std::to_string(C) + " items");
  }
  return m;
}

void check_dtype(const Array& x, std::initializer_list<DType> allowed, const std::string& what) {
  for (DType d : allowed)
    if (x.t.dtype == d) return;
  type_error(x.name, "expected " + what + ", got " + dtype_name(x.t.dtype));
}

void matmul(py::handle a_, py::handle b_, py::handle c_, py::handle trans_a_, py::handle trans_b_,
            py::handle alpha_, py::handle beta_, py::handle bias_, py::handle activation_,
            py::handle residual_, py::handle preact_, py::handle bias_grad_, py::handle stream_) {
  MatmulArgs args;
  args.trans_a = parse_bool(trans_a_, "trans_a");
  args.trans_b = parse_bool(trans_b_, "trans_b");
  args.alpha = parse_scale(alpha_, "alpha");
  args.beta = parse_scale(beta_, "beta");
  args.act = parse_activation(activation_);
  [[maybe_unused]] const uintptr_t stream = parse_stream(stream_);  // CUDA only
  const Array a = parse_matrix_array(a_, "a", Role::Input);
  const Array b = parse_matrix_array(b_, "b", Role::Input);
  const Array c = parse_matrix_array(c_, "c", Role::Output);
  const std::optional<Array> bias = parse_optional_matrix_array(bias_, "bias", Role::Input);
  const std::optional<Array> residual =
      parse_optional_matrix_array(residual_, "residual", Role::Input);
  const std::optional<Array> preact = parse_optional_matrix_array(preact_, "preact", Role::Output);
  const std::optional<Array> bias_grad =
      parse_optional_matrix_array(bias_grad_, "bias_grad", Role::Output);

  // c decides: 3-D is a batch of products, and then a, b and residual may be 2-D (shared).
  check_ndim(c, true, "");
  const bool batched = c.t.ndim() == 3;
  const std::string unbatched = " because c is 2-D (one product; make c 3-D for a batch)";
  check_ndim(a, batched, unbatched);
  check_ndim(b, batched, unbatched);
  if (residual) check_ndim(*residual, batched, unbatched);
  if (preact && preact->t.ndim() != c.t.ndim())
    value_error("preact", "expected a " + std::to_string(c.t.ndim()) + "-D array like c, got a " +
                              std::to_string(preact->t.ndim()) + "-D one");
  args.batch = batched ? c.t.shape[0] : 1;

  // Shapes: op(A) is M x K, op(B) is K x N, C is M x N.
  const int64_t nd_a = a.t.ndim();
  args.M = a.t.shape[nd_a - (args.trans_a ? 1 : 2)];
  args.K = a.t.shape[nd_a - (args.trans_a ? 2 : 1)];
  // Contexts for the messages, with the flags that decide which dimension is which.
  const std::string batch_of_c = batched ? " and batch=" + std::to_string(args.batch) + " of c" : "";
  const std::string with_trans_a = args.trans_a ? " (trans_a)" : "";
  const std::string with_flags = args.trans_a && args.trans_b ? " (trans_a, trans_b)"
                                 : args.trans_b              ? " (trans_b)"
                                                             : with_trans_a;
  const Matrix ma = check_matrix(a, args.batch, {args.trans_a ? "K" : "M"}, {args.trans_a ? "M" : "K"},
                                 with_trans_a + batch_of_c, Role::Input);
  const std::string match_a = "matching a (M=" + std::to_string(args.M) + ", K=" +
                              std::to_string(args.K) + ")" + with_flags + batch_of_c;
  const Dim k_dim{"K", args.K};
  const Matrix mb = args.trans_b ? check_matrix(b, args.batch, {"N"}, k_dim, match_a, Role::Input)
                                 : check_matrix(b, args.batch, k_dim, {"N"}, match_a, Role::Input);
  args.N = b.t.shape[b.t.ndim() - (args.trans_b ? 2 : 1)];
  const std::string match_ab = "matching a and b (M=" + std::to_string(args.M) +
                               ", N=" + std::to_string(args.N) + ")" + with_flags;
  const Dim m_dim{"M", args.M}, n_dim{"N", args.N};
  const Matrix mc = check_matrix(c, args.batch, m_dim, n_dim, match_ab, Role::Output);
  if (bias) check_shape(*bias, {n_dim}, match_ab);
  if (bias_grad) check_shape(*bias_grad, {m_dim}, "matching a (M=" + std::to_string(args.M) + ")");
  const Matrix mr = residual ? check_matrix(*residual, args.batch, m_dim, n_dim, match_ab, Role::Input)
                             : Matrix{};
  const Matrix mp = preact ? check_matrix(*preact, args.batch, m_dim, n_dim, match_ab, Role::Output)
                           : Matrix{};

  // dtypes: a and b alike; c, residual and preact alike; bias float32 or c's; bias_grad float32.
  check_same_dtype(a, {&b});
  check_same_dtype(c, {ptr(residual), ptr(preact)});
  if (bias)
    check_dtype(*bias, {DType::Float32, c.t.dtype},
                std::string("float32 or c's dtype (") + dtype_name(c.t.dtype) + ")");
  if (bias_grad) check_dtype(*bias_grad, {DType::Float32}, "float32");

  [[maybe_unused]] const Device device =
      check_same_device({&a, &b, &c, ptr(bias), ptr(residual), ptr(preact), ptr(bias_grad)});
  // c is an output that is also read when beta != 0: that is its own memory, not an overlap.
  check_no_overlap({&c, ptr(preact), ptr(bias_grad)}, {&a, &b, ptr(bias), ptr(residual)});
  if (c.t.numel() == 0 && (!bias_grad || bias_grad->t.numel() == 0)) return;

  args.ab_dtype = a.t.dtype;
  args.c_dtype = c.t.dtype;
  args.a = a.t.ptr;
  args.lda = ma.ld;
  args.stride_a = ma.batch_stride;
  args.b = b.t.ptr;
  args.ldb = mb.ld;
  args.stride_b = mb.batch_stride;
  args.c = c.t.ptr;
  args.ldc = mc.ld;
  args.stride_c = mc.batch_stride;
  if (bias) {
    args.bias = bias->t.ptr;
    args.bias_dtype = bias->t.dtype;
  }
  if (residual) {
    args.residual = residual->t.ptr;
    args.ld_residual = mr.ld;
    args.stride_residual = mr.batch_stride;
  }
  if (preact) {
    args.preact = preact->t.ptr;
    args.ld_preact = mp.ld;
    args.stride_preact = mp.batch_stride;
  }
  args.bias_grad = data<float>(bias_grad);

  py::gil_scoped_release no_gil;
#ifdef UNET_WITH_CUDA
  if (device.type == DeviceType::CUDA) return cuda::matmul(args, stream, device.index);
#endif
  cpu::matmul(args);
}

}  // namespace

void register_matmul(py::module_& m) {
  m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("c"), py::kw_only(),
        py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("alpha") = 1.0,
        py::arg("beta") = 0.0, py::arg("bias") = py::none(), py::arg("activation") = "none",
        py::arg("residual") = py::none(), py::arg("preact") = py::none(),
        py::arg("bias_grad") = py::none(), py::arg("stream") = 0,
        R"doc(Mixed-precision matrix product with a fused epilogue, written into c:

    z = alpha * op(a) @ op(b) + beta * c + bias      (float32 accumulation)
    preact = z;  c = act(z) + residual                 (each rounded once to c's dtype)
    bias_grad = op(a).sum(-1), summed over the batch too

op(x) is x, or x.T with trans_a / trans_b. a, b: float32, float16 or bfloat16
(ml_dtypes.bfloat16), one dtype, used exactly as stored. c, residual, preact: float32,
float16 or bfloat16, one dtype. bias [N]: float32 or c's dtype. bias_grad [M]: float32,
overwritten. activation: "none", "relu", "gelu" (erf form), "tanh" or "sigmoid".
c [M, N] is one product; c [batch, M, N] a batch of them, where a, b and residual are
3-D or 2-D (one matrix shared by every item). Matrices need contiguous rows only (the
row stride gives the leading dimension, so row-padded views work). With beta == 0, c is
not read. Outputs must not overlap inputs (c itself is read when beta != 0). All arrays
on the CPU (numpy) or all on one CUDA device (e.g. CuPy), where the call is asynchronous
on `stream` (a cudaStream_t as int, 0 = default). Returns None.)doc");
}

}  // namespace unet::bindings
