// One registration function per kernel family; module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace unet::bindings {

void register_linear(pybind11::module_& m);
void register_matmul(pybind11::module_& m);
void register_rnn(pybind11::module_& m);
void register_rnn_ln(pybind11::module_& m);
void register_conv(pybind11::module_& m);
void register_ctc(pybind11::module_& m);
void register_optim(pybind11::module_& m);

}  // namespace unet::bindings
