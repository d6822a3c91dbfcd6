// Logging: levels, rank rule, environment override, capture.
#include <gtest/gtest.h>

#include <cstdlib>

#include "zerodiff/core/Logging.h"

namespace zl = zerodiff::log;

namespace {
struct EnvGuard {
  EnvGuard() { unsetenv("ZERODIFF_LOG_LEVEL"); }
  ~EnvGuard() {
    unsetenv("ZERODIFF_LOG_LEVEL");
    zl::init({});
  }
};
}  // namespace

TEST(Logging, ParseLevel) {
  EXPECT_EQ(zl::parse_level("DEBUG"), zl::Level::debug);
  EXPECT_EQ(zl::parse_level("warning"), zl::Level::warn);
  EXPECT_EQ(zl::parse_level("off"), zl::Level::off);
  try {
    zl::parse_level("loud");
    FAIL();
  } catch (const zerodiff::ConfigError& e) {
    EXPECT_STREQ(e.what(), "unknown log level 'loud' (expected trace, debug, info, warn, error or off)");
  }
}

TEST(Logging, ThresholdAndCapture) {
  EnvGuard env;
  zl::init({.level = zl::Level::info});
  zl::Capture capture;
  ZD_LOG_DEBUG("hidden ", 1);
  ZD_LOG_INFO("shown ", 2);
  ZD_LOG_WARN("careful ", 3.5);
  EXPECT_EQ(capture.text(), "[info] shown 2\n[warning] careful 3.5\n");
}

TEST(Logging, NonZeroRanksOnlyWarnByDefault) {
  EnvGuard env;
  zl::init({.level = zl::Level::debug, .rank = 3});
  EXPECT_EQ(zl::threshold(), zl::Level::warn);
  zl::init({.level = zl::Level::debug, .rank = 3, .all_ranks = true});
  EXPECT_EQ(zl::threshold(), zl::Level::debug);
}

TEST(Logging, EnvironmentOverridesConfig) {
  EnvGuard env;
  setenv("ZERODIFF_LOG_LEVEL", "error", 1);
  zl::init({.level = zl::Level::debug});
  EXPECT_EQ(zl::threshold(), zl::Level::error);
  EXPECT_FALSE(zl::enabled(zl::Level::warn));
  setenv("ZERODIFF_LOG_LEVEL", "chatty", 1);
  try {
    zl::init({});
    FAIL();
  } catch (const zerodiff::ConfigError& e) {
    EXPECT_STREQ(e.what(),
                 "ZERODIFF_LOG_LEVEL: unknown log level 'chatty' (expected trace, debug, info, warn, error or off)");
  }
}
