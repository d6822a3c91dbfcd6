// TensorBoard event files: CRC-32C against known answers, and a Trainer run read back with TensorBoard's own
// Python reader (tests/tools/read_tensorboard.py in the project's .venv).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "zerodiff/data/DataLoader.h"
#include "zerodiff/data/SyntheticShapesDataset.h"
#include "zerodiff/io/TensorBoardWriter.h"
#include "zerodiff/models/Txt2ImgPipeline.h"
#include "zerodiff/train/Trainer.h"

#include "support/source_dir.h"

namespace fs = std::filesystem;
namespace zt = zerodiff::train;

namespace {


// Runs the reader on `dir` and parses its JSON (stdout).
nlohmann::json read_back(const std::string& dir) {
  const std::string cmd = kSource + "/.venv/bin/python " + kSource + "/tests/tools/read_tensorboard.py " + dir;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(cmd.c_str(), "r"), ::pclose);
  EXPECT_TRUE(pipe) << cmd;
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), pipe.get())) out.append(buf.data(), n);
  return nlohmann::json::parse(out);
}

struct SampledToy : zt::TrainingModule {
  torch::nn::Conv2d net{nullptr};
  void configure_model(const torch::Device&) override { net = torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 3, 3).padding(1)); }
  torch::nn::Module& model() override { return *net; }
  zt::StepOutput training_step(const zerodiff::data::Batch& batch, zt::StepContext&) override {
    return {torch::mse_loss(net->forward(batch.images), batch.images.flip(-1)), {{"extra", 0.5}}};
  }
  std::optional<at::Tensor> sample(const std::vector<std::string>& prompts, int64_t) override {
    return torch::rand({static_cast<int64_t>(prompts.size()), 3, 8, 8});
  }
};

}  // namespace

TEST(TensorBoard, Crc32cKnownAnswers) {
  // RFC 3720 B.4 / the "123456789" check value of CRC-32C.
  EXPECT_EQ(zerodiff::io::crc32c("123456789", 9), 0xE3069283u);
  const std::array<uint8_t, 32> zeros{};
  EXPECT_EQ(zerodiff::io::crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  std::array<uint8_t, 32> ones{};
  ones.fill(0xFF);
  EXPECT_EQ(zerodiff::io::crc32c(ones.data(), ones.size()), 0x62A8AB43u);
}

TEST(TensorBoard, EventFilesReadBackInTensorBoard) {
  if (!fs::exists(kSource + "/.venv/bin/python")) GTEST_SKIP() << "no .venv (bash tools/setup.sh creates it)";
  const std::string out = (fs::path(testing::TempDir()) / "zd_tensorboard").string();
  fs::remove_all(out);
  // The writer on its own: exact values and steps.
  {
    zerodiff::io::TensorBoardWriter w(out + "/direct");
    for (int64_t s = 1; s <= 3; ++s) w.add_scalar("a/b", 0.25 * static_cast<double>(s), s * 10);
    const auto grid = torch::rand({3, 5, 7});
    w.add_image_png("img", zerodiff::models::encode_png(grid), 5, 7, 3, 4);
  }
  const auto direct = read_back(out + "/direct");
  EXPECT_EQ(direct["scalars"]["a/b"], nlohmann::json::parse("[[10, 0.25], [20, 0.5], [30, 0.75]]"));
  ASSERT_EQ(direct["images"]["img"].size(), 1u);
  EXPECT_EQ(direct["images"]["img"][0][0], 4);
  EXPECT_EQ(direct["images"]["img"][0][1], 7);  // width
  EXPECT_EQ(direct["images"]["img"][0][2], 5);  // height
  // A Trainer run: loss, lr, grad norm, images/s, memory and module logs every log_every steps, sample grids.
  zt::TrainerConfig c;
  c.output_dir = out + "/run";
  c.max_steps = 4;
  c.accelerator = zerodiff::train::Accelerator::cpu;
  c.log_every = 2;
  c.optimizer.lr = 1e-2;
  c.sample_every = 2;
  c.sample_prompts = {"x", "y"};
  SampledToy m;
  zerodiff::data::DataLoaderOptions o;
  o.batch_size = 2;
  o.num_workers = 0;
  o.image.resolution = 8;
  zerodiff::data::DataLoader loader(std::make_shared<zerodiff::data::SyntheticShapesDataset>(
                                        zerodiff::data::SyntheticShapesOptions{.size = 8, .image_size = 8, .seed = 1}),
                                    o);
  zt::Trainer(c).fit(m, loader);
  const auto run = read_back(out + "/run/tensorboard");
  for (const char* tag : {"train/loss", "train/lr", "train/grad_norm", "train/images_per_s", "memory/rss_mib", "train/extra"}) {
    ASSERT_TRUE(run["scalars"].contains(tag)) << tag << " in " << run.dump();
    ASSERT_EQ(run["scalars"][tag].size(), 2u) << tag;
    EXPECT_EQ(run["scalars"][tag][0][0], 2) << tag;
    EXPECT_EQ(run["scalars"][tag][1][0], 4) << tag;
  }
  EXPECT_FLOAT_EQ(run["scalars"]["train/lr"][0][1].get<float>(), 1e-2f);
  EXPECT_FLOAT_EQ(run["scalars"]["train/extra"][1][1].get<float>(), 0.5f);
  EXPECT_GT(run["scalars"]["memory/rss_mib"][0][1].get<double>(), 10.0);
  // The logged loss is the metrics.jsonl loss (same step), to float precision.
  std::ifstream metrics(out + "/run/metrics.jsonl");
  std::string first;
  std::getline(metrics, first);
  EXPECT_FLOAT_EQ(run["scalars"]["train/loss"][0][1].get<float>(),
                  static_cast<float>(nlohmann::json::parse(first)["loss"].get<double>()));
  // Grids at step 2 (sample_every) and at the end (step 4): 2 images of 8x8 tiled in one row.
  ASSERT_EQ(run["images"]["samples"].size(), 2u);
  EXPECT_EQ(run["images"]["samples"][1][0], 4);
  EXPECT_EQ(run["images"]["samples"][1][1], 16);
  EXPECT_EQ(run["images"]["samples"][1][2], 8);
}

TEST(TensorBoard, ResumeReplacesTheStepsAfterTheCheckpoint) {
  if (!fs::exists(kSource + "/.venv/bin/python")) GTEST_SKIP() << "no .venv (bash tools/setup.sh creates it)";
  const std::string out = (fs::path(testing::TempDir()) / "zd_tensorboard_resume").string();
  fs::remove_all(out);
  zt::TrainerConfig c;
  c.output_dir = out;
  c.max_steps = 4;
  c.accelerator = zerodiff::train::Accelerator::cpu;
  c.log_every = 1;
  c.checkpoint_every = 2;
  c.keep_last = 0;
  c.optimizer.lr = 1e-2;
  zerodiff::data::DataLoaderOptions o;
  o.batch_size = 2;
  o.num_workers = 0;
  o.image.resolution = 8;
  auto dataset = std::make_shared<zerodiff::data::SyntheticShapesDataset>(
      zerodiff::data::SyntheticShapesOptions{.size = 8, .image_size = 8, .seed = 1});
  {
    SampledToy m;
    zerodiff::data::DataLoader loader(dataset, o);
    zt::Trainer(c).fit(m, loader, "", /*stop_at_step=*/3);  // logs steps 1..3, checkpoints at 2 and 3
  }
  {
    SampledToy m;
    zerodiff::data::DataLoader loader(dataset, o);
    zt::Trainer(c).fit(m, loader, out + "/checkpoints/checkpoint-2");  // step 3 again, then 4
  }
  const auto run = read_back(out + "/tensorboard");
  std::vector<int64_t> steps;
  for (const auto& point : run["scalars"]["train/loss"]) steps.push_back(point[0].get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));  // step 3 once: the first run's point was purged
  // The surviving step-3 point is the resumed run's, as in metrics.jsonl.
  std::ifstream metrics(out + "/metrics.jsonl");
  double loss3 = 0;
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["step"] == 3) loss3 = j["loss"].get<double>();
  }
  EXPECT_FLOAT_EQ(run["scalars"]["train/loss"][2][1].get<float>(), static_cast<float>(loss3));
}
