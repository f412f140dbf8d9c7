// The projection_dtype argument of rnn_forward and rnn_ln_forward (RnnForwardArgs in
// unet/rnn.h): None, 'float16' or 'bfloat16'.
#pragma once

#include <string>

#include "array.h"

namespace unet::bindings {

// None gives Float32 (the projection in the arrays' dtype); a 16-bit one needs float32 arrays.
inline DType parse_projection_dtype(py::handle obj, DType array_dtype) {
  if (obj.is_none()) return DType::Float32;
  if (!py::isinstance<py::str>(obj))
    type_error("projection_dtype", "expected None, 'float16' or 'bfloat16', got " + type_name(obj));
  const std::string s = obj.cast<std::string>();
  if (s != "float16" && s != "bfloat16")
    value_error("projection_dtype", "expected None, 'float16' or 'bfloat16', got '" + s + "'");
  if (array_dtype != DType::Float32)
    value_error("projection_dtype",
                std::string("expected None with ") + dtype_name(array_dtype) +
                    " arrays (a 16-bit input projection is for float32 arrays), got '" + s + "'");
  return s == "float16" ? DType::Float16 : DType::BFloat16;
}

}  // namespace unet::bindings
