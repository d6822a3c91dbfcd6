// CPU kernel of count_nonfinite against the reference (~isfinite(t)).sum().
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/NonFinite.h"

TEST(NonFinite, MatchesReferenceForEveryDtype) {
  torch::manual_seed(0);
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16}) {
    auto t = torch::randn({1000, 70}).to(dtype);
    auto mask = torch::rand({1000, 70}) < 0.01;
    t.masked_fill_(mask, std::numeric_limits<double>::infinity());
    t.index_put_({0, 0}, -std::numeric_limits<double>::infinity());
    t.index_put_({5, 5}, std::numeric_limits<double>::quiet_NaN());
    const int64_t expected = (~torch::isfinite(t)).sum().item<int64_t>();
    EXPECT_GT(expected, 600);
    EXPECT_EQ(zerodiff::kernels::count_nonfinite(t).item<int64_t>(), expected) << dtype;
    // Non-contiguous view.
    auto view = t.t();
    EXPECT_EQ(zerodiff::kernels::count_nonfinite(view).item<int64_t>(), expected) << dtype;
  }
}

TEST(NonFinite, EmptyAndFiniteTensors) {
  EXPECT_EQ(zerodiff::kernels::count_nonfinite(torch::empty({0})).item<int64_t>(), 0);
  EXPECT_EQ(zerodiff::kernels::count_nonfinite(torch::full({3, 3}, 65504.0, torch::kHalf)).item<int64_t>(), 0);
}

TEST(NonFinite, RejectsIntegerTensors) {
  try {
    zerodiff::kernels::count_nonfinite(torch::zeros({3}, torch::kInt));
    FAIL();
  } catch (const zerodiff::Error& e) {
    EXPECT_STREQ(e.what(), "count_nonfinite: expected a float32/float64/float16/bfloat16 tensor, got Int");
  }
}
