// zerodiff/core/Error.h — the exception types and check macros every layer uses.
//
// Design rules for this file:
//  * It does not include LibTorch, so the lowest layers (logging, config) can use it; shapes print
//    through any operator<< in scope (c10 provides one for IntArrayRef / at::Tensor::sizes()).
//  * A failed check throws; it never aborts. The message is the user-facing text: it names the
//    offending value, shape, key or file. The C++ source location is kept separately (`where()`),
//    so exact error texts can be asserted in tests and shown to users without noise.
//  * Follows the spirit of c10's TORCH_CHECK (c10/util/Exception.h): variadic message pieces that
//    are only formatted when the check fails.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "zerodiff/core/Enum.h"

namespace zerodiff {

/// Base class of every error zerodiff throws. `what()` is the user-facing message;
/// `where()` is "file.cpp:123" of the check that fired (empty when thrown without a location).
class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, std::string where = {})
      : std::runtime_error(std::move(message)), where_(std::move(where)) {}
  /// Source location ("src/io/Safetensors.cpp:88") of the check that threw, or "".
  const std::string& where() const noexcept { return where_; }

 private:
  std::string where_;
};

/// A configuration problem: YAML syntax, unknown or missing key, wrong type, bad value.
/// The message starts with "<file>:<line>:<col>: " or "override '<k=v>': " when the source is known.
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// A file-system or file-format problem (missing file, truncated or malformed checkpoint).
/// The message names the file, and the tensor or key when there is one.
class IoError : public Error {
 public:
  using Error::Error;
};

/// A feature that is recognised but not available in this build or not implemented yet.
/// Thrown instead of silently doing something else.
class NotImplementedError : public Error {
 public:
  using Error::Error;
};

namespace detail {

template <class T>
void append_one(std::ostringstream& os, const T& value) {
  if constexpr (NamedEnum<T>) {
    os << name_of(value);  // a mode prints as its name (core/Enum.h)
  } else {
    os << value;
  }
}
template <class T>
void append_one(std::ostringstream& os, const std::vector<T>& values) {
  os << '[';
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) os << ", ";
    append_one(os, values[i]);
  }
  os << ']';
}
inline void append_one(std::ostringstream& os, bool value) { os << (value ? "true" : "false"); }

}  // namespace detail

/// Concatenates `args` with operator<< (vectors print as "[a, b, c]", bools as true/false).
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (detail::append_one(os, args), ...);
  return os.str();
}

}  // namespace zerodiff

#define ZD_STRINGIZE_IMPL(x) #x
#define ZD_STRINGIZE(x) ZD_STRINGIZE_IMPL(x)
#define ZD_WHERE __FILE__ ":" ZD_STRINGIZE(__LINE__)

/// Throws `ErrType(message pieces...)` when `cond` is false. Pieces are formatted only on failure.
#define ZD_CHECK_T(ErrType, cond, ...)                                          \
  do {                                                                          \
    if (__builtin_expect(!(cond), 0)) {                                         \
      throw ErrType(::zerodiff::str(__VA_ARGS__), ZD_WHERE);                    \
    }                                                                           \
  } while (0)

/// ZD_CHECK(cond, "tensor '", name, "' has shape ", t.sizes(), ", expected ", expected);
/// throws zerodiff::Error with the concatenated message when `cond` is false.
#define ZD_CHECK(cond, ...) ZD_CHECK_T(::zerodiff::Error, cond, __VA_ARGS__)

/// Throws zerodiff::Error unconditionally.
#define ZD_THROW(...) throw ::zerodiff::Error(::zerodiff::str(__VA_ARGS__), ZD_WHERE)

/// Binary comparison checks that print both operands:
/// ZD_CHECK_EQ(a.size(0), b.size(0), "batch sizes differ") -> "batch sizes differ (4 vs 8)".
#define ZD_CHECK_OP_IMPL(op, a, b, ...)                                                        \
  do {                                                                                         \
    const auto& zd_a_ = (a);                                                                   \
    const auto& zd_b_ = (b);                                                                   \
    if (__builtin_expect(!(zd_a_ op zd_b_), 0)) {                                              \
      throw ::zerodiff::Error(                                                                 \
          ::zerodiff::str(__VA_ARGS__, " (expected " #a " " #op " " #b ", got ", zd_a_, " vs ", \
                          zd_b_, ")"),                                                         \
          ZD_WHERE);                                                                           \
    }                                                                                          \
  } while (0)
#define ZD_CHECK_EQ(a, b, ...) ZD_CHECK_OP_IMPL(==, a, b, __VA_ARGS__)
#define ZD_CHECK_NE(a, b, ...) ZD_CHECK_OP_IMPL(!=, a, b, __VA_ARGS__)
#define ZD_CHECK_LT(a, b, ...) ZD_CHECK_OP_IMPL(<, a, b, __VA_ARGS__)
#define ZD_CHECK_LE(a, b, ...) ZD_CHECK_OP_IMPL(<=, a, b, __VA_ARGS__)
#define ZD_CHECK_GT(a, b, ...) ZD_CHECK_OP_IMPL(>, a, b, __VA_ARGS__)
#define ZD_CHECK_GE(a, b, ...) ZD_CHECK_OP_IMPL(>=, a, b, __VA_ARGS__)

/// An internal invariant (a zerodiff bug if it fires); the message carries the source location.
#define ZD_INTERNAL_ASSERT(cond, ...)                                                           \
  ZD_CHECK_T(::zerodiff::Error, cond, "internal error at " ZD_WHERE ": " #cond " failed. ", \
             ##__VA_ARGS__)
