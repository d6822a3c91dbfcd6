#include "zerodiff/core/TensorCheck.h"

#include <vector>

namespace zerodiff {

void check_shape(const at::Tensor& t, std::string_view name, std::initializer_list<int64_t> expected) {
  const std::vector<int64_t> want(expected);
  bool ok = t.defined() && t.dim() == static_cast<int64_t>(want.size());
  for (size_t i = 0; ok && i < want.size(); ++i) {
    ok = want[i] < 0 || t.size(static_cast<int64_t>(i)) == want[i];
  }
  if (!ok) {
    if (!t.defined()) throw Error(str(name, ": expected shape ", want, ", got an undefined tensor"));
    throw Error(str(name, ": expected shape ", want, ", got ", t.sizes().vec()));
  }
}

void check_dtype(const at::Tensor& t, std::string_view name, at::ScalarType dtype) {
  ZD_CHECK(t.defined(), name, ": expected dtype ", dtype, ", got an undefined tensor");
  ZD_CHECK(t.scalar_type() == dtype, name, ": expected dtype ", dtype, ", got ", t.scalar_type());
}

void check_dim(const at::Tensor& t, std::string_view name, int64_t dim) {
  ZD_CHECK(t.defined(), name, ": expected a ", dim, "-d tensor, got an undefined tensor");
  ZD_CHECK(t.dim() == dim, name, ": expected a ", dim, "-d tensor, got shape ", t.sizes().vec());
}

void check_same_device(const at::Tensor& a, std::string_view a_name, const at::Tensor& b,
                       std::string_view b_name) {
  ZD_CHECK(a.device() == b.device(), a_name, " is on ", a.device(), " but ", b_name, " is on ",
           b.device());
}

}  // namespace zerodiff
