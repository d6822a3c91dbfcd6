// zerodiff/core/TensorCheck.h — shape / dtype / device checks on at::Tensor whose messages print
// the offending tensor's name, shape, dtype and device. Mirrors flash-attention's CHECK_SHAPE.
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <string_view>

#include "zerodiff/core/Error.h"

namespace zerodiff {

/// Checks that `t` has exactly the sizes `expected`; -1 in `expected` matches any size.
/// Throws zerodiff::Error: "<name>: expected shape [2, -1, 8], got [2, 3, 4]".
void check_shape(const at::Tensor& t, std::string_view name, std::initializer_list<int64_t> expected);

/// Checks that `t` has dtype `dtype`. Throws zerodiff::Error: "<name>: expected dtype Float, got Half".
void check_dtype(const at::Tensor& t, std::string_view name, at::ScalarType dtype);

/// Checks that `t` has `dim` dimensions. Throws: "<name>: expected a 4-d tensor, got shape [3, 4]".
void check_dim(const at::Tensor& t, std::string_view name, int64_t dim);

/// Checks that `a` and `b` are on the same device. Throws: "<a_name> is on cpu but <b_name> is on cuda:0".
void check_same_device(const at::Tensor& a, std::string_view a_name, const at::Tensor& b,
                       std::string_view b_name);

}  // namespace zerodiff

/// ZD_CHECK_SHAPE(q, B, H, N, D): throws unless q.sizes() == {B, H, N, D} (-1 = any); names `q`.
#define ZD_CHECK_SHAPE(t, ...) ::zerodiff::check_shape((t), #t, {__VA_ARGS__})
