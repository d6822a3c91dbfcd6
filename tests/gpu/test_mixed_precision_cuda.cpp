// Mixed precision on CUDA: the tiny text-to-image model trains in 16-mixed (float16 autocast, dynamic loss
// scaling, VAE kept in float32) and bf16-mixed with losses within 5 % of 32-true. Skipped without a GPU.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "zerodiff/core/Config.h"
#include "zerodiff/train/RunConfig.h"

namespace fs = std::filesystem;
namespace zt = zerodiff::train;

namespace {
const std::string kSource = ZERODIFF_SOURCE_DIR;

std::vector<nlohmann::json> train(const std::string& precision) {
  const std::string out = (fs::path(testing::TempDir()) / ("zd_cuda_" + precision)).string();
  fs::remove_all(out);
  const std::string yaml =
      "task: text_to_image\ntrainer:\n  output_dir: " + out + "\n  max_steps: 8\n  accelerator: cuda\n  precision: " +
      precision + "\n  log_every: 1\n  optimizer:\n    lr: 1.0e-3\n"
      "data:\n  dataset: synthetic\n  synthetic_size: 16\n  resolution: 16\n  batch_size: 4\n  num_workers: 1\n"
      "text_to_image:\n  unet: " + kSource + "/configs/models/tiny/unet_sd1/config.json\n  vae: " + kSource +
      "/tests/data/parity/vae_tiny\n  text_encoder: " + kSource + "/tests/data/clip/text_vitl_tiny\n  tokenizer: " +
      kSource + "/tests/data/clip/tokenizer\n";
  zt::run(zerodiff::config::load_string<zt::RunConfig>(yaml, precision + ".yaml"));
  std::ifstream in(out + "/metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

double mean_last_losses(const std::vector<nlohmann::json>& lines) {
  double sum = 0;
  for (size_t i = lines.size() - 4; i < lines.size(); ++i) sum += lines[i]["loss"].get<double>();
  return sum / 4;
}
}  // namespace

TEST(MixedPrecisionCuda, Fp16AndBf16TrainLikeFp32) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto fp32 = train("32-true"), fp16 = train("16-mixed"), bf16 = train("bf16-mixed");
  ASSERT_EQ(fp16.size(), 8u);
  for (const auto& line : fp16) {
    ASSERT_TRUE(line.contains("loss_scale")) << line.dump();
    EXPECT_GT(line["loss_scale"].get<double>(), 0.0);
  }
  EXPECT_NEAR(mean_last_losses(fp16) / mean_last_losses(fp32), 1.0, 0.05);
  EXPECT_NEAR(mean_last_losses(bf16) / mean_last_losses(fp32), 1.0, 0.05);
}
