// Links the installed zerodiff and calls into it; exits non-zero when something is off.
#include <torch/torch.h>

#include <iostream>
#include <limits>

#include "zerodiff/core/BuildInfo.h"
#include "zerodiff/kernels/NonFinite.h"

int main() {
  auto t = torch::ones({8});
  t[3] = std::numeric_limits<float>::infinity();
  const int64_t n = zerodiff::kernels::count_nonfinite(t).item<int64_t>();
  std::cout << "consumer: " << zerodiff::build_info() << " | count_nonfinite = " << n << std::endl;
  return n == 1 ? 0 : 1;
}
