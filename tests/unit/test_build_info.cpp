#include <gtest/gtest.h>

#include <regex>

#include "zerodiff/core/BuildInfo.h"

TEST(BuildInfo, LineNamesVersionTorchCudaAndSimd) {
  const std::string line = zerodiff::build_info();
  EXPECT_TRUE(std::regex_search(line, std::regex(R"(^zerodiff \d+\.\d+\.\d+ \| torch 2\.11\.0 \| CUDA (on \(archs [0-9;]+, nvcc [0-9.]+\)|off) \| SIMD [A-Z0-9_]+ \| )")))
      << line;
  EXPECT_EQ(line.find("SIMD " + zerodiff::simd_level()) != std::string::npos, true);
  EXPECT_EQ(line.find("CUDA on") != std::string::npos, zerodiff::built_with_cuda());
}
