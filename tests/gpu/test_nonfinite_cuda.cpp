// CUDA kernel of count_nonfinite against the reference; skipped without a GPU or CUDA kernels.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "zerodiff/core/BuildInfo.h"
#include "zerodiff/kernels/NonFinite.h"

TEST(NonFiniteCuda, MatchesReference) {
  if (!zerodiff::built_with_cuda()) GTEST_SKIP() << "built without CUDA kernels";
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(0);
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16}) {
    for (int64_t n : {0L, 1L, 257L, 1L << 22}) {
      auto t = torch::randn({n}, torch::kCUDA).to(dtype);
      if (n > 0) {
        t.masked_fill_(torch::rand({n}, torch::kCUDA) < 0.001, std::numeric_limits<double>::infinity());
        t.index_put_({n - 1}, std::numeric_limits<double>::quiet_NaN());
      }
      const int64_t expected = (~torch::isfinite(t)).sum().item<int64_t>();
      const auto got = zerodiff::kernels::count_nonfinite(t);
      EXPECT_TRUE(got.is_cuda());
      EXPECT_EQ(got.item<int64_t>(), expected) << dtype << " n=" << n;
    }
  }
}
