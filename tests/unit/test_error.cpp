// Check macros: messages print the offending values and shapes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/TensorCheck.h"

using zerodiff::Error;

namespace {
template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}
}  // namespace

TEST(Check, PassingChecksDoNotThrow) {
  EXPECT_NO_THROW(ZD_CHECK(1 + 1 == 2, "never"));
  EXPECT_NO_THROW(ZD_CHECK_EQ(3, 3, "never"));
  EXPECT_NO_THROW(ZD_CHECK_SHAPE(torch::zeros({2, 3}), 2, -1));
}

TEST(Check, MessageCarriesValuesAndLocation) {
  const int batch = 4;
  try {
    ZD_CHECK(batch % 3 == 0, "batch size ", batch, " is not a multiple of ", 3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "batch size 4 is not a multiple of 3");
    EXPECT_NE(e.where().find("test_error.cpp:"), std::string::npos);
  }
  EXPECT_EQ(message_of([] { ZD_CHECK_EQ(2 + 2, 5, "arithmetic"); }),
            "arithmetic (expected 2 + 2 == 5, got 4 vs 5)");
  EXPECT_EQ(message_of([] { ZD_CHECK_LT(7, 3, "order"); }), "order (expected 7 < 3, got 7 vs 3)");
  EXPECT_EQ(message_of([] { ZD_CHECK(false, "list ", std::vector<int64_t>{1, 2, 3}, " flag ", true); }),
            "list [1, 2, 3] flag true");
  EXPECT_EQ(message_of([] { ZD_THROW("boom ", 1.5); }), "boom 1.5");
}

TEST(Check, TensorChecksPrintShapesAndDtypes) {
  const auto q = torch::zeros({2, 3, 4});
  EXPECT_EQ(message_of([&] { ZD_CHECK_SHAPE(q, 2, -1, 8); }), "q: expected shape [2, -1, 8], got [2, 3, 4]");
  EXPECT_EQ(message_of([&] { ZD_CHECK_SHAPE(q, 2, 3); }), "q: expected shape [2, 3], got [2, 3, 4]");
  EXPECT_EQ(message_of([&] { zerodiff::check_dtype(q, "latents", torch::kHalf); }),
            "latents: expected dtype Half, got Float");
  EXPECT_EQ(message_of([&] { zerodiff::check_dim(q, "sample", 4); }),
            "sample: expected a 4-d tensor, got shape [2, 3, 4]");
  EXPECT_EQ(message_of([&] { ZD_CHECK(false, "sizes ", q.sizes()); }), "sizes [2, 3, 4]");
}
