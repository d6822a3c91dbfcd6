// Helpers shared by the model parity tests: fixture paths and the per-tensor tolerance of DESIGN.md §6
// (max abs error <= 1e-4 * max(1, max |reference|)), with the observed error printed for the log.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

namespace zerodiff::testing {

/// tests/data/parity (built with filesystem::path: GCC 12 warns falsely on literal + std::string here).
inline std::string parity_dir() { return (std::filesystem::path(ZERODIFF_TEST_DATA_DIR) / "parity").string(); }

/// configs/models/<rel> in the source tree.
inline std::string config_dir(const std::string& rel) {
  return (std::filesystem::path(ZERODIFF_SOURCE_DIR) / "configs" / "models" / rel).string();
}

/// Parses the JSON file at `path` (a failed open is a test failure naming it).
inline nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

/// A fresh folder <temp>/zerodiff_<tag>_<pid>, removed when the test ends.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    path = std::filesystem::temp_directory_path() / ("zerodiff_" + tag + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

/// Max abs error of `got` vs `ref`, and whether it is within 1e-4 * max(1, max|ref|). Prints one line.
inline ::testing::AssertionResult parity_close(const std::string& what, const at::Tensor& got, const at::Tensor& ref,
                                               double rtol = 1e-4) {
  if (!got.defined()) return ::testing::AssertionFailure() << what << ": result is undefined";
  if (got.sizes() != ref.sizes()) {
    return ::testing::AssertionFailure() << what << ": shape " << got.sizes() << " vs reference " << ref.sizes();
  }
  const at::Tensor g = got.detach().to(torch::kCPU, torch::kDouble);
  const at::Tensor r = ref.detach().to(torch::kCPU, torch::kDouble);
  const double scale = std::max(1.0, r.abs().max().item<double>());
  const double err = (g - r).abs().max().item<double>();
  const double tol = rtol * scale;
  std::printf("[parity] %-80s max abs err %.3e (tol %.3e, max|ref| %.3e)\n", what.c_str(), err, tol, scale);
  if (!(err <= tol)) {
    return ::testing::AssertionFailure() << what << ": max abs error " << err << " > tolerance " << tol;
  }
  return ::testing::AssertionSuccess();
}

/// Runs tools/fixtures/check_diffusers_load.py (diffusers itself loads `model_dir` and compares its
/// output with `io_file`) with the project's .venv Python. Returns the exit code, or -1 when there is
/// no .venv with diffusers (the caller skips then).
inline int check_with_diffusers(const std::string& kind, const std::string& model_dir, const std::string& io_file) {
  const std::filesystem::path root(ZERODIFF_SOURCE_DIR);
  const std::filesystem::path python = root / ".venv" / "bin" / "python";
  if (!std::filesystem::exists(python)) return -1;
  const std::string probe = python.string() + " -c 'import diffusers' >/dev/null 2>&1";
  if (std::system(probe.c_str()) != 0) return -1;
  const std::string cmd = python.string() + " " + (root / "tools" / "fixtures" / "check_diffusers_load.py").string() +
                          " " + kind + " " + model_dir + " " + io_file;
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace zerodiff::testing
