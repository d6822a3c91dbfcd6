// CPU kernel: count of non-finite elements. Reference implementation: (~isfinite(t)).sum().
// Design rules: contiguous input, chunked parallel reduction (at::parallel_reduce), no temporaries.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>

#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/NonFinite.h"

namespace zerodiff::kernels {

int64_t count_nonfinite_cpu(const at::Tensor& input) {
  ZD_CHECK(input.device().is_cpu(), "count_nonfinite_cpu: expected a CPU tensor, got one on ", input.device());
  const at::Tensor t = input.contiguous();
  const int64_t n = t.numel();
  int64_t total = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "count_nonfinite_cpu", [&] {
    const scalar_t* data = t.const_data_ptr<scalar_t>();
    total = at::parallel_reduce(
        int64_t{0}, n, int64_t{1} << 16, int64_t{0},
        [&](int64_t begin, int64_t end, int64_t acc) {
          for (int64_t i = begin; i < end; ++i) {
            acc += std::isfinite(static_cast<float>(data[i])) ? 0 : 1;
          }
          return acc;
        },
        [](int64_t a, int64_t b) { return a + b; });
  });
  return total;
}

}  // namespace zerodiff::kernels
