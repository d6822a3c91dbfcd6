// The parts Trainer::fit is built from, each on its own: the strategy setup shared with the dry-run estimate, the
// metrics sink, the EMA keeper and its weights scope, and the checkpoint save/restore pair (TrainingState).
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <fstream>
#include <sstream>

#include "trainer_test_util.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/io/Checkpoint.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/parallel/Strategy.h"
#include "zerodiff/train/EmaKeeper.h"
#include "zerodiff/train/MetricsSink.h"
#include "zerodiff/train/RunConfig.h"
#include "zerodiff/train/StrategySetup.h"
#include "zerodiff/train/TrainingState.h"

namespace {

using namespace trainer_test;
namespace zp = zerodiff::parallel;

std::vector<nlohmann::json> read_lines(const fs::path& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(StrategySetup, TurnsTheTrainerConfigIntoTypedOptions) {
  zt::TrainerConfig c = config("unused", 1);
  c.strategy = zp::StrategyKind::gemini;
  c.bucket_size_mb = 2;
  c.zero3_chunk_size_mb = 1;
  c.zero3_keep_gathered_below_mb = 0.5;
  c.precision = zt::Precision::bf16_true;
  c.optimizer.implementation = zt::AdamImplementation::torch;
  c.gemini.placement_policy = zerodiff::memory::PlacementPolicyKind::fixed_fractions;
  c.gemini.device_budget_mb = 3;
  c.gemini.offload_optim_frac = 0.25;
  c.gemini.offload_dir = "/tmp/offload";
  const auto s = zt::strategy_setup(c, {}, false);
  EXPECT_EQ(s.kind, zp::StrategyKind::gemini);
  EXPECT_EQ(s.options.bucket_numel, 2 * 1024 * 1024 / 4);
  EXPECT_EQ(s.options.chunk_numel, 1024 * 1024 / 4);
  EXPECT_EQ(s.options.keep_gathered_numel, 512 * 1024 / 4);
  EXPECT_EQ(s.options.master_dtype, at::kBFloat16);
  EXPECT_FALSE(s.options.hybrid_adam);
  EXPECT_EQ(s.options.placement.device_budget_bytes, 3 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(s.options.placement.offload_optim_frac, 0.25);
  EXPECT_TRUE(s.options.placement.disk);
  EXPECT_EQ(s.options.offload_dir, "/tmp/offload");
  EXPECT_TRUE(s.options.ema);
  // implementation auto resolved to hybrid_adam: torch's AdamW for a module training a non-float32 tensor, HybridAdam
  // when it was asked for explicitly.
  c.precision = zt::Precision::fp32;
  c.optimizer.implementation = zt::AdamImplementation::hybrid_adam;
  const std::vector<zt::ParameterGroup> half{{"g", {{"w", torch::zeros({2}, at::kHalf)}}, std::nullopt}};
  EXPECT_FALSE(zt::strategy_setup(c, half, /*optimizer_auto=*/true).options.hybrid_adam);
  EXPECT_TRUE(zt::strategy_setup(c, half, /*optimizer_auto=*/false).options.hybrid_adam);
  EXPECT_EQ(zt::strategy_setup(c, half, true).options.master_dtype, at::kFloat);
}

TEST(StrategySetup, TheDryRunEstimateUsesTheSameChunkSize) {
  // A run's requested chunk size is what the estimate's layout reports (one function decides both).
  zt::TrainerConfig c = config("unused", 1);
  c.strategy = zp::StrategyKind::zero3;
  c.zero3_chunk_size_mb = 0.001;  // 262 elements of fp32
  ToyModule module;
  module.configure_model(torch::kCPU);
  const auto setup = zt::strategy_setup(c, module.parameter_groups(), false);
  const auto estimate = zt::estimate_memory(module, c, 2);
  const int64_t chunk = (setup.options.chunk_numel + 1) / 2 * 2;  // rounded up to a multiple of the world size
  EXPECT_NE(estimate.chunk_layout.find(zerodiff::str(" chunks of ", chunk, " elements")), std::string::npos)
      << estimate.chunk_layout;
}

TEST(MetricsSink, WritesStepAndValidationLinesAndContinuesAResumedRun) {
  const std::string dir = fresh("metrics_sink");
  {
    zt::MetricsSink sink(dir, /*is_rank0=*/true, /*tensorboard=*/true, 0);
    for (int64_t s = 1; s <= 4; ++s) {
      sink.log_step(zt::StepMetrics{s, 4, 0.5 / s, 1e-3, s == 3 ? NAN : 2.0, std::nullopt, 8, 1, 1, 100, {{"mse", 0.25}}});
    }
    sink.log_validation(4, {{"loss", 0.125}}, 16, 2);
  }
  auto lines = read_lines(fs::path(dir) / "metrics.jsonl");
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_DOUBLE_EQ(lines[1]["loss"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(lines[1]["mse"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(lines[1]["grad_norm"].get<double>(), 2.0);
  EXPECT_FALSE(lines[2].contains("grad_norm"));  // a skipped step has none
  EXPECT_FALSE(lines[0].contains("loss_scale"));
  EXPECT_DOUBLE_EQ(lines[4]["val_loss"].get<double>(), 0.125);
  size_t event_files = 0;
  for (const auto& e : fs::directory_iterator(fs::path(dir) / "tensorboard")) event_files += e.is_regular_file();
  EXPECT_EQ(event_files, 1u);
  // Resumed at step 2 (after a crash cut the last line): lines up to step 2 stay, the cut line goes, a new
  // TensorBoard file is added.
  { std::ofstream(fs::path(dir) / "metrics.jsonl", std::ios::app) << "{\"step\": 5, \"lo"; }
  {
    zt::MetricsSink sink(dir, true, true, 2);
    sink.log_step(zt::StepMetrics{3, 4, 0.75, 1e-3, 1.0, 1024.0, 8, 1, 1, 100, {}});
  }
  lines = read_lines(fs::path(dir) / "metrics.jsonl");
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1]["step"], 2);
  EXPECT_DOUBLE_EQ(lines[2]["loss"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(lines[2]["loss_scale"].get<double>(), 1024.0);
  event_files = 0;
  for (const auto& e : fs::directory_iterator(fs::path(dir) / "tensorboard")) event_files += e.is_regular_file();
  EXPECT_EQ(event_files, 2u);
  // Other ranks write nothing.
  const std::string other = fresh("metrics_sink_rank1");
  zt::MetricsSink(other, false, true, 0).log_step(zt::StepMetrics{1, 1, 1, 1, 1, std::nullopt, 1, 1, 1, 1, {}});
  EXPECT_FALSE(fs::exists(fs::path(other) / "metrics.jsonl"));
  EXPECT_EQ(zt::format_duration(3723), "1h02m03s");
  EXPECT_EQ(zt::format_duration(7), "0m07s");
}

TEST(EmaKeeper, WholeKeeperUpdatesSwapsAndRoundTrips) {
  torch::manual_seed(0);
  ToyModule module;
  module.configure_model(torch::kCPU);
  auto strategy = zp::make_strategy("single", zerodiff::dist::ProcessGroup::single());
  const zt::EMAOptions options{0.5, 0.0, 0, false, 1.0, 2.0 / 3.0};
  auto keeper = zt::make_ema_keeper(options, module.model(), *strategy, true);
  const at::Tensor start = module.net->conv1->weight.detach().clone();
  {
    torch::NoGradGuard no_grad;
    module.net->conv1->weight.add_(1.0);
  }
  keeper->before_step(2);
  keeper->after_step(2);  // decay min(0.5, (1 + 1) / (10 + 1)) = 2/11: ema = start + 9/11
  const at::Tensor trained = module.net->conv1->weight.detach().clone();
  const auto saved = keeper->state();
  ASSERT_TRUE(saved.count("conv1.weight"));
  EXPECT_TRUE(torch::allclose(saved.at("conv1.weight"), start + 9.0 / 11.0, 1e-6, 1e-6));
  {
    zt::EmaWeightsScope scope(*keeper);
    EXPECT_TRUE(torch::allclose(module.net->conv1->weight, start + 9.0 / 11.0, 1e-6, 1e-6));
    scope.restore();
  }
  EXPECT_TRUE(torch::equal(module.net->conv1->weight, trained));
  // Unwinding puts the trained weights back too.
  try {
    zt::EmaWeightsScope scope(*keeper);
    throw std::runtime_error("export failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(torch::equal(module.net->conv1->weight, trained));
  // load(state()) round trip into a fresh keeper; a missing entry names the file and the parameter.
  auto other = zt::make_ema_keeper(options, module.model(), *strategy, true);
  other->load(saved, "ckpt/ema.safetensors");
  EXPECT_TRUE(torch::equal(other->state().at("conv1.weight"), saved.at("conv1.weight")));
  auto partial = saved;
  partial.erase("conv2.bias");
  EXPECT_THROW(other->load(partial, "ckpt/ema.safetensors"), zerodiff::IoError);
}

TEST(TrainingState, SaveAndRestoreAreOnePair) {
  // Everything save() writes comes back through restore(): model, optimizer, EMA, generators, loader position.
  const std::string dir = fresh("training_state");
  auto group = zerodiff::dist::ProcessGroup::single();
  zerodiff::io::CheckpointManager checkpoints((fs::path(dir) / "checkpoints").string(), 2);
  torch::manual_seed(1);
  ToyModule a;
  a.configure_model(torch::kCPU);
  auto sa = zp::make_strategy("single", group);
  sa->setup({zp::ParamGroupSpec{"all", a.trainable_parameters(), 1e-2}}, {}, {});
  zerodiff::data::DataLoader la(shapes(), loader_options(4));
  (void)la.next();
  at::Generator ga = at::make_generator<at::CPUGeneratorImpl>(7);
  (void)at::randn({3}, ga);
  auto ema_a = zt::make_ema_keeper(zt::EMAOptions{0.9, 0.0, 0, false, 1.0, 2.0 / 3.0}, a.model(), *sa, true);
  // One real step so that the optimizer and the EMA hold state.
  sa->zero_grad();
  zt::StepContext ctx{0, ga, torch::kCPU};
  a.training_step(*la.next(), ctx).loss.backward();
  sa->step();
  ema_a->after_step(1);
  zt::TrainingState state_a({a, *sa, *group, ema_a.get(), ga, nullptr, la, 11});
  const std::string folder = state_a.save(checkpoints, 1);

  torch::manual_seed(2);  // other weights, other generators, loader at the start
  ToyModule b;
  b.configure_model(torch::kCPU);
  auto sb = zp::make_strategy("single", group);
  sb->setup({zp::ParamGroupSpec{"all", b.trainable_parameters(), 1e-2}}, {}, {});
  zerodiff::data::DataLoader lb(shapes(), loader_options(4));
  at::Generator gb = at::make_generator<at::CPUGeneratorImpl>(99);
  auto ema_b = zt::make_ema_keeper(zt::EMAOptions{0.9, 0.0, 0, false, 1.0, 2.0 / 3.0}, b.model(), *sb, true);
  zt::TrainingState state_b({b, *sb, *group, ema_b.get(), gb, nullptr, lb, 11});
  EXPECT_EQ(state_b.restore(zerodiff::io::CheckpointManager::load(folder)), 1);
  for (const auto& [k, v] : zerodiff::io::state_dict(a.model())) {
    EXPECT_TRUE(torch::equal(v, zerodiff::io::state_dict(b.model()).at(k))) << k;
  }
  const auto opt_a = sa->optimizer_state(), opt_b = sb->optimizer_state();
  ASSERT_EQ(opt_a.size(), opt_b.size());
  for (const auto& [k, v] : opt_a) EXPECT_TRUE(torch::equal(v, opt_b.at(k))) << k;
  for (const auto& [k, v] : ema_a->state()) EXPECT_TRUE(torch::equal(v, ema_b->state().at(k))) << k;
  EXPECT_TRUE(torch::equal(at::randn({4}, ga), at::randn({4}, gb)));
  EXPECT_EQ(la.state().to_json(), lb.state().to_json());
  EXPECT_TRUE(torch::equal(la.next()->images, lb.next()->images));
  // A checkpoint without the EMA file fails naming the folder and the file (the manifest lists it).
  fs::remove(fs::path(folder) / "ema.safetensors");
  try {
    state_b.restore(zerodiff::io::CheckpointManager::load(folder));
    FAIL() << "no IoError";
  } catch (const zerodiff::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint-1/ema.safetensors: missing from the checkpoint"), std::string::npos) << e.what();
  }
}

}  // namespace

namespace {

TEST(FitErrors, TheRunConfigKeysAreAddedToAGeminiBudgetError) {
  // The memory layer names its own option; fit adds the run config's keys behind it.
  zt::TrainerConfig c = config(fresh("gemini_budget"), 2);
  c.strategy = zp::StrategyKind::gemini;
  c.gemini.device_budget_mb = 0.0001;  // ~100 bytes: not even one gathered chunk fits
  ToyModule module;
  zd::DataLoader loader(shapes(), loader_options(4));
  zt::Trainer trainer(c);
  try {
    trainer.fit(module, loader);
    FAIL() << "no BudgetError";
  } catch (const zerodiff::memory::BudgetError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("PlacementOptions::device_budget_bytes"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(run config: trainer.gemini.device_budget_mb, trainer.zero3_chunk_size_mb, data.batch_size)"),
              std::string::npos)
        << msg;
  }
}

}  // namespace

namespace {

TEST(FitEnd, ARunResumedPastMaxStepsStillExports) {
  // A checkpoint at step 3 resumed with max_steps 2: nothing to train, but validation, samples and the export run.
  const std::string dir = fresh("past_max_steps");
  {
    ToyModule module;
    zd::DataLoader loader(shapes(), loader_options(4));
    zt::Trainer(config(dir, 4)).fit(module, loader, "", /*stop_at_step=*/3);
  }
  ToyModule module;
  zd::DataLoader loader(shapes(), loader_options(4));
  const zt::FitResult r = zt::Trainer(config(dir, 2)).fit(module, loader, "latest");
  EXPECT_EQ(r.steps, 3);
  ASSERT_FALSE(r.export_dir.empty());
  EXPECT_TRUE(fs::exists(fs::path(r.export_dir) / "model.safetensors"));
}

}  // namespace
