// Fault tests (label `fault`, docs/reliability.md): non-finite losses. The process-level faults (kill -9 during a
// checkpoint write, a full disk, a killed rank) are the scripts next to this file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "../unit/trainer_test_util.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/io/Checkpoint.h"

using namespace trainer_test;

namespace {

// A loss of `bad` (NaN by default) at global steps [first, last]: every gradient is then non-finite.
struct OverflowingToy : ToyModule {
  int64_t first = 2, last = 2;
  double bad = std::numeric_limits<double>::quiet_NaN();
  zt::StepOutput training_step(const zd::Batch& batch, zt::StepContext& ctx) override {
    auto out = ToyModule::training_step(batch, ctx);
    if (ctx.global_step >= first && ctx.global_step <= last) out.loss = out.loss * bad;
    return out;
  }
};

TEST(NonFiniteLoss, With16MixedTheStepIsSkippedAndTheScaleBacksOff) {
  torch::set_num_threads(1);
  const std::string dir = fresh("fp16");
  auto c = config(dir, 4);
  c.precision = zerodiff::train::Precision::fp16_mixed;
  c.gradient_accumulation_steps = 1;
  c.checkpoint_every = 1;
  c.keep_last = 0;
  c.grad_scaler.init_scale = 4;
  c.grad_scaler.growth_interval = 2;
  OverflowingToy m;
  zd::DataLoader loader(shapes(), loader_options(2));
  zt::Trainer(c).fit(m, loader);
  auto ck = [&](int s, const std::string& file) {
    return zio::load_safetensors(dir + "/checkpoints/checkpoint-" + std::to_string(s) + "/" + file + ".safetensors");
  };
  // Steps 1-2 clean: scale 4 -> 8 (interval 2). Step 3 overflows: skipped, scale 4, tracker reset. Step 4 clean.
  EXPECT_EQ(ck(2, "scaler").at("scale").item<double>(), 8.0);
  EXPECT_EQ(ck(3, "scaler").at("scale").item<double>(), 4.0);
  EXPECT_EQ(ck(3, "scaler").at("growth_tracker").item<int64_t>(), 0);
  EXPECT_EQ(ck(4, "scaler").at("growth_tracker").item<int64_t>(), 1);
  // The skipped step left parameters, optimizer state and EMA exactly as they were.
  for (const char* file : {"model", "optimizer", "ema"}) {
    const auto before = ck(2, file), after = ck(3, file);
    for (const auto& [name, t] : before) EXPECT_TRUE(torch::equal(t, after.at(name))) << file << " " << name;
  }
  const auto changed = ck(4, "model");
  EXPECT_FALSE(torch::equal(changed.at("conv1.weight"), ck(3, "model").at("conv1.weight")));
  // metrics.jsonl carries the loss scale.
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  std::getline(in, line);
  EXPECT_TRUE(nlohmann::json::parse(line).contains("loss_scale"));
}

TEST(NonFiniteLoss, RepeatedBadStepsStopTheRunKeepingTheLastGoodCheckpoint) {
  torch::set_num_threads(1);
  const std::string dir = fresh("fp16_broken");
  auto c = config(dir, 10);
  c.precision = zerodiff::train::Precision::fp16_mixed;
  c.gradient_accumulation_steps = 1;
  c.checkpoint_every = 2;
  c.keep_last = 0;
  c.grad_scaler.max_consecutive_skips = 3;
  OverflowingToy m;  // from the third step on, every loss is inf (an fp16 overflow)
  m.last = std::numeric_limits<int64_t>::max();
  m.bad = std::numeric_limits<double>::infinity();
  zd::DataLoader loader(shapes(), loader_options(2));
  try {
    zt::Trainer(c).fit(m, loader);
    FAIL() << "expected the run to stop";
  } catch (const zerodiff::Error& e) {
    // Steps 3, 4, 5 skipped; checkpoint-4 (written after skipped step 4) holds step 2's weights.
    EXPECT_EQ(std::string(e.what()), "3 steps in a row (up to step 5) had inf/NaN gradients and were skipped; the loss "
                                     "scale is now 8192. Stopping: check the data and the learning rate. The last "
                                     "good checkpoint is kept: " + dir + "/checkpoints/checkpoint-4");
  }
  const auto ck2 = zio::load_safetensors(dir + "/checkpoints/checkpoint-2/model.safetensors");
  const auto ck4 = zio::load_safetensors(dir + "/checkpoints/checkpoint-4/model.safetensors");
  for (const auto& [name, t] : ck2) EXPECT_TRUE(torch::equal(t, ck4.at(name))) << name;
  EXPECT_FALSE(fs::exists(dir + "/final"));
}

// Without loss scaling a NaN loss is never expected: the run stops at once, on the step it happened, and the last
// good checkpoint stays the newest one.
TEST(NonFiniteLoss, In32TrueANaNLossStopsTheRunKeepingTheLastGoodCheckpoint) {
  torch::set_num_threads(1);
  const std::string dir = fresh("fp32_nan");
  auto c = config(dir, 10);
  c.gradient_accumulation_steps = 1;
  c.checkpoint_every = 2;
  c.keep_last = 0;
  OverflowingToy m;
  m.first = m.last = 4;  // the fifth step (global_step 4 while it runs)
  zd::DataLoader loader(shapes(), loader_options(2));
  try {
    zt::Trainer(c).fit(m, loader);
    FAIL() << "expected the run to stop";
  } catch (const zerodiff::Error& e) {
    EXPECT_EQ(std::string(e.what()), "non-finite loss nan at step 4 (the last good checkpoint is kept; lower the "
                                     "learning rate or check the data)");
  }
  zio::CheckpointManager manager(dir + "/checkpoints", 0);
  ASSERT_TRUE(manager.latest().has_value());
  EXPECT_EQ(*manager.latest(), dir + "/checkpoints/checkpoint-4");
  const auto ck = zio::CheckpointManager::load(*manager.latest());
  EXPECT_EQ(ck.step, 4);
  for (const auto& [name, t] : ck.tensors.at("model")) EXPECT_TRUE(torch::isfinite(t).all().item<bool>()) << name;
  EXPECT_FALSE(fs::exists(dir + "/final"));
}

}  // namespace
