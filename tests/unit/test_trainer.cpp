// Trainer: exact resume, gradient accumulation, LR schedules, EMA, checkpoints and bad input.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "zerodiff/core/Config.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/data/DataLoader.h"
#include "zerodiff/data/SyntheticShapesDataset.h"
#include "zerodiff/io/AtomicFile.h"
#include "zerodiff/io/Checkpoint.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/optim/GradScaler.h"
#include "zerodiff/optim/LRSchedule.h"
#include "zerodiff/train/EMA.h"
#include "zerodiff/train/Trainer.h"
#include "trainer_test_util.h"


using namespace trainer_test;

TEST(Trainer, ResumeContinuesExactly) {
  torch::set_num_threads(1);
  const std::string a = fresh("a"), b = fresh("b");
  {
    ToyModule m;
    zd::DataLoader loader(shapes(), loader_options(2));
    zt::Trainer(config(a, 8)).fit(m, loader);
  }
  {
    ToyModule m;
    zd::DataLoader loader(shapes(), loader_options(2));
    const auto r = zt::Trainer(config(b, 8)).fit(m, loader, "", /*stop_at_step=*/3);
    EXPECT_EQ(r.steps, 3);
    EXPECT_FALSE(fs::exists(b + "/final"));
  }
  {
    ToyModule m;  // a new process would start from scratch like this
    zd::DataLoader loader(shapes(), loader_options(2));
    const auto r = zt::Trainer(config(b, 8)).fit(m, loader, "latest");
    EXPECT_EQ(r.steps, 8);
  }
  const auto wa = final_weights(a), wb = final_weights(b);
  ASSERT_EQ(wa.size(), wb.size());
  for (const auto& [name, t] : wa) EXPECT_TRUE(torch::equal(t, wb.at(name))) << name << " differs after resume";
  // The metrics of both runs agree on the last step's loss.
  auto last_line = [](const std::string& dir) {
    std::ifstream in(dir + "/metrics.jsonl");
    std::string line, last;
    while (std::getline(in, line)) last = line;
    return nlohmann::json::parse(last);
  };
  EXPECT_EQ(last_line(a)["loss"], last_line(b)["loss"]);
  EXPECT_EQ(last_line(a)["step"], 8);
}

TEST(Trainer, GradientAccumulationMatchesOneLargeBatch) {
  torch::set_num_threads(1);
  auto run = [](int64_t batch, int64_t accum, const std::string& dir) {
    auto c = config(dir, 3);
    c.gradient_accumulation_steps = accum;
    c.ema.enabled = false;
    ToyModule m;
    struct Deterministic : ToyModule {
      zt::StepOutput training_step(const zd::Batch& b, zt::StepContext&) override {
        return {torch::mse_loss(net->forward(b.images), b.images.flip(-1)), {}};
      }
    } det;
    auto o = loader_options(batch);
    o.image.random_flip = false;
    zd::DataLoader loader(shapes(), o);
    zt::Trainer(c).fit(det, loader);
    return final_weights(dir);
  };
  const auto big = run(4, 1, fresh("big")), small = run(2, 2, fresh("small"));
  for (const auto& [name, t] : big) {
    EXPECT_TRUE(torch::allclose(t, small.at(name), 1e-5, 1e-6)) << name << " max diff "
                                                                << (t - small.at(name)).abs().max().item<double>();
  }
}

// ToyModule with a validation step: the same loss on the validation batch, noise from the validation generator.
struct ValidatedToy : ToyModule {
  int64_t validation_calls = 0;
  std::optional<zt::StepOutput> validation_step(const zd::Batch& batch, zt::StepContext& ctx) override {
    ++validation_calls;
    EXPECT_FALSE(torch::GradMode::is_enabled());
    auto noise = at::randn(batch.images.sizes(), ctx.generator) * 0.1;
    const auto loss = torch::mse_loss(net->forward(batch.images + noise), batch.images.flip(-1));
    return zt::StepOutput{loss, {{"abs", (net->forward(batch.images) - batch.images.flip(-1)).abs().mean().item<double>()}}};
  }
};

std::vector<nlohmann::json> metric_lines(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(Trainer, ValidationIsLoggedAndLeavesTrainingUntouched) {
  torch::set_num_threads(1);
  const std::string plain = fresh("val_plain"), validated = fresh("val_on");
  {
    ValidatedToy m;
    zd::DataLoader loader(shapes(), loader_options(2));
    zt::Trainer(config(plain, 6)).fit(m, loader);
    EXPECT_EQ(m.validation_calls, 0);
  }
  auto val_set = std::make_shared<zd::SyntheticShapesDataset>(zd::SyntheticShapesOptions{.size = 5, .image_size = 16, .seed = 9});
  auto val_options = loader_options(2);
  val_options.shuffle = false;
  val_options.image.random_flip = false;
  zt::FitResult r;
  {
    ValidatedToy m;
    zd::DataLoader loader(shapes(), loader_options(2));
    zd::DataLoader val(val_set, val_options);
    auto c = config(validated, 6);
    c.val_every = 2;
    r = zt::Trainer(c).fit(m, loader, &val);
    EXPECT_EQ(m.validation_calls, 3 * 3);  // steps 2 and 4, and the end; 3 batches (2 + 2 + 1) each
  }
  // The validation generator and no-grad passes do not touch training: the same weights, bit for bit.
  const auto a = final_weights(plain), b = final_weights(validated);
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  // val_<figure> lines at steps 2, 4 and 6 (the end, with the exported EMA weights), sample-weighted means.
  std::vector<int64_t> steps;
  for (const auto& line : metric_lines(validated)) {
    if (!line.contains("val_loss")) continue;
    steps.push_back(line["step"].get<int64_t>());
    EXPECT_TRUE(line.contains("val_abs"));
    EXPECT_GT(line["val_loss"].get<double>(), 0.0);
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 4, 6}));
  ASSERT_TRUE(r.validation.count("loss"));
  EXPECT_DOUBLE_EQ(r.validation.at("loss"), metric_lines(validated).back()["val_loss"].get<double>());
  // Recomputing the end-of-run figure by hand from the exported weights gives the same value.
  {
    ValidatedToy m;
    m.configure_model(torch::kCPU);
    zio::load_state_dict(*m.net, final_weights(validated));
    zd::DataLoader val(val_set, val_options);
    zt::StepContext ctx;
    ctx.generator = at::make_generator<at::CPUGeneratorImpl>(zt::validation_seed(0));
    torch::NoGradGuard no_grad;
    double sum = 0;
    for (int64_t i = 0; i < 3; ++i) {
      const auto batch = val.build_batch(0, i);
      sum += m.validation_step(batch, ctx)->loss.item<double>() * static_cast<double>(batch.size());
    }
    EXPECT_NEAR(r.validation.at("loss"), sum / 5, 1e-12);
  }
  // A module without validation_step is trained normally, with no validation lines.
  {
    const std::string none = fresh("val_none");
    ToyModule m;
    zd::DataLoader loader(shapes(), loader_options(2));
    zd::DataLoader val(val_set, val_options);
    auto c = config(none, 2);
    c.val_every = 1;
    EXPECT_TRUE(zt::Trainer(c).fit(m, loader, &val).validation.empty());
    for (const auto& line : metric_lines(none)) EXPECT_FALSE(line.contains("val_loss"));
  }
}

// ToyModule whose optimizer has two parameter groups: conv1 + norm, and conv2 (with its own lr if given).
struct GroupedToy : ToyModule {
  std::optional<double> conv2_lr;
  bool duplicate = false;
  std::vector<zt::ParameterGroup> parameter_groups() override {
    zt::ParameterGroup a{"body", {}, {}}, b{"head", {}, conv2_lr};
    for (auto& p : net->named_parameters()) (p.key().rfind("conv2", 0) == 0 ? b : a).params.emplace_back(p.key(), p.value());
    if (duplicate) b.params.push_back(a.params[0]);
    return {a, b};
  }
};

TEST(Trainer, ParameterGroupsHaveTheirOwnLearningRate) {
  torch::set_num_threads(1);
  auto train = [](zt::TrainingModule& m, const std::string& dir) {
    zd::DataLoader loader(shapes(), loader_options(2));
    auto c = config(dir, 4);
    c.ema.enabled = false;
    zt::Trainer(c).fit(m, loader);
    return final_weights(dir);
  };
  ToyModule one;
  const auto single = train(one, fresh("groups_one"));
  // Two groups at the trainer's lr: AdamW is per parameter, so the result is the same to the bit.
  GroupedToy two;
  const auto grouped = train(two, fresh("groups_two"));
  for (const auto& [name, t] : single) EXPECT_TRUE(torch::equal(t, grouped.at(name))) << name;
  // A group with a tiny lr barely moves (AdamW steps are about lr each); the other trains as before.
  GroupedToy slow;
  slow.conv2_lr = 1e-9;
  const auto init = [] {  // the trainer seeds with trainer.seed (0) before configure_model
    ToyModule fresh_init;
    torch::manual_seed(0);
    fresh_init.configure_model(torch::kCPU);
    return zio::state_dict(*fresh_init.net);
  }();
  const auto slowed = train(slow, fresh("groups_slow"));
  EXPECT_LT((slowed.at("conv2.weight") - init.at("conv2.weight")).abs().max().item<double>(), 1e-7);
  EXPECT_GT((slowed.at("conv1.weight") - init.at("conv1.weight")).abs().max().item<double>(), 1e-3);
  // A parameter in two groups is refused before training.
  GroupedToy dup;
  dup.duplicate = true;
  zd::DataLoader loader(shapes(), loader_options(2));
  try {
    zt::Trainer(config(fresh("groups_dup"), 1)).fit(dup, loader);
    FAIL();
  } catch (const zerodiff::Error& e) {
    EXPECT_STREQ(e.what(), "parameter 'conv1.weight' appears twice in the parameter groups");
  }
}

// Tied weights: one Linear registered under two names is one trainable tensor, trained once.
TEST(Trainer, TiedParametersAreTrainedOnce) {
  struct Tied : ToyModule {
    std::shared_ptr<torch::nn::Module> root;
    void configure_model(const torch::Device& device) override {
      ToyModule::configure_model(device);
      root = std::make_shared<torch::nn::Module>();
      root->register_module("net", net);
      root->register_module("net_again", net);  // the same parameters under a second name
    }
    torch::nn::Module& model() override { return *root; }
  };
  Tied m;
  m.configure_model(torch::kCPU);
  const auto params = m.trainable_parameters();
  EXPECT_EQ(params.size(), m.net->parameters().size());
  EXPECT_EQ(params[0].first, "net.conv1.weight");
  torch::set_num_threads(1);
  zd::DataLoader loader(shapes(), loader_options(2));
  auto c = config(fresh("tied"), 2);
  c.ema.enabled = false;
  EXPECT_EQ(zt::Trainer(c).fit(m, loader).steps, 2);  // refused ("appears twice") if listed twice
}

// trainer.optimizer.implementation hybrid_adam: the same run within float rounding, and its checkpoint resumes.
TEST(Trainer, HybridAdamTrainsLikeTorchAdamW) {
  torch::set_num_threads(1);
  const std::string a = fresh("adam_torch"), b = fresh("adam_hybrid");
  {
    ToyModule m;
    zd::DataLoader loader(shapes(), loader_options(2));
    auto c = config(a, 8);
    c.optimizer.implementation = zerodiff::train::AdamImplementation::torch;
    zt::Trainer(c).fit(m, loader);
  }
  {
    ToyModule m;
    zd::DataLoader loader(shapes(), loader_options(2));
    auto c = config(b, 8);
    c.optimizer.implementation = zerodiff::train::AdamImplementation::hybrid_adam;
    zt::Trainer(c).fit(m, loader, "", /*stop_at_step=*/4);
    ToyModule m2;
    zd::DataLoader loader2(shapes(), loader_options(2));
    zt::Trainer(c).fit(m2, loader2, "latest");
  }
  const auto wa = final_weights(a), wb = final_weights(b);
  for (const auto& [name, t] : wa) EXPECT_LE((t - wb.at(name)).abs().max().item<double>(), 1e-5) << name;
}

TEST(GradScaler, GrowsBacksOffAndRoundTrips) {
  zerodiff::optim::GradScaler s({.init_scale = 4, .growth_factor = 2, .backoff_factor = 0.5, .growth_interval = 2});
  EXPECT_EQ(s.scale(torch::tensor(1.5)).item<double>(), 6.0);
  s.update(false);
  EXPECT_EQ(s.get_scale(), 4.0);
  EXPECT_EQ(s.growth_tracker(), 1);
  s.update(false);
  EXPECT_EQ(s.get_scale(), 8.0);  // two clean steps with interval 2
  EXPECT_EQ(s.growth_tracker(), 0);
  s.update(false);
  s.update(true);
  EXPECT_EQ(s.get_scale(), 4.0);  // an inf halves it and resets the tracker
  EXPECT_EQ(s.growth_tracker(), 0);
  // unscale divides in place and reports non-finite gradients (float32 and bfloat16 gradients).
  auto p = torch::zeros({3}).requires_grad_(true);
  p.mutable_grad() = torch::tensor({4.0, 8.0, -2.0});
  auto q = torch::zeros({2}, torch::kBFloat16).requires_grad_(true);
  q.mutable_grad() = torch::tensor({8.0, 4.0}).to(torch::kBFloat16);
  EXPECT_FALSE(s.unscale({p, q}));
  EXPECT_TRUE(torch::equal(p.grad(), torch::tensor({1.0, 2.0, -0.5})));
  EXPECT_TRUE(torch::equal(q.grad(), torch::tensor({2.0, 1.0}).to(torch::kBFloat16)));
  p.mutable_grad() = torch::tensor({1.0, std::numeric_limits<double>::infinity(), 0.0});
  EXPECT_TRUE(s.unscale({p}));
  zerodiff::optim::GradScaler t;
  t.load_state(s.state());
  EXPECT_EQ(t.get_scale(), 4.0);
  EXPECT_EQ(t.growth_tracker(), 0);
  EXPECT_THROW(zerodiff::optim::GradScaler({.init_scale = 1, .growth_factor = 0.5}), zerodiff::Error);
}

TEST(Trainer, BadResumeFailsBeforeWritingAnything) {
  const std::string dir = fresh("badresume");
  ToyModule m;
  zd::DataLoader loader(shapes(), loader_options(2));
  try {
    zt::Trainer(config(dir, 2)).fit(m, loader, dir + "/nope");
    FAIL();
  } catch (const zerodiff::IoError& e) {
    EXPECT_EQ(std::string(e.what()), dir + "/nope: checkpoint folder does not exist");
  }
  EXPECT_FALSE(fs::exists(dir));
  // A corrupt checkpoint (truncated tensor file) is refused with the file named.
  {
    ToyModule m2;
    zd::DataLoader l2(shapes(), loader_options(2));
    zt::Trainer(config(dir, 2)).fit(m2, l2, "", 1);
  }
  const std::string ck = dir + "/checkpoints/checkpoint-1";
  fs::resize_file(ck + "/model.safetensors", 20);
  const auto before = fs::file_size(dir + "/metrics.jsonl");
  try {
    zt::Trainer(config(dir, 2)).fit(m, loader, "latest");
    FAIL();
  } catch (const zerodiff::IoError& e) {
    EXPECT_NE(std::string(e.what()).find(ck + "/model.safetensors: "), std::string::npos) << e.what();
  }
  EXPECT_EQ(fs::file_size(dir + "/metrics.jsonl"), before);
}

// implementation auto (the default) resolves to hybrid_adam, and to torch under bf16-true.
TEST(Trainer, OptimizerAutoPicksHybridAdamUnlessBf16True) {
  auto c = config("/tmp/unused", 1);
  EXPECT_EQ(zerodiff::name_of(c.optimizer.implementation), "auto");
  EXPECT_EQ(zerodiff::name_of(zt::Trainer(c).config().optimizer.implementation), "hybrid_adam");
  c.precision = zerodiff::train::Precision::bf16_true;
  EXPECT_EQ(zerodiff::name_of(zt::Trainer(c).config().optimizer.implementation), "torch");
  c.optimizer.implementation = zerodiff::train::AdamImplementation::torch;
  c.precision = zerodiff::train::Precision::fp32;
  EXPECT_EQ(zerodiff::name_of(zt::Trainer(c).config().optimizer.implementation), "torch");
}

TEST(Trainer, UnsupportedModesFailLoudly) {
  auto c = config("/tmp/unused", 1);
  c.precision = zerodiff::train::Precision::bf16_true;  // has no fp32 master weights for HybridAdam to update
  c.optimizer.implementation = zerodiff::train::AdamImplementation::hybrid_adam;
  EXPECT_THROW(zt::Trainer{c}, zerodiff::ConfigError);
  c.optimizer.implementation = zerodiff::train::AdamImplementation::torch;
  c.precision = zerodiff::train::Precision::fp32;
  c.strategy = zerodiff::parallel::StrategyKind::gemini;  // config() turns the EMA on: zero3 and gemini keep it sharded (tests below)
  EXPECT_NO_THROW(zt::Trainer{c});
  c.strategy = zerodiff::parallel::StrategyKind::zero3;
  EXPECT_NO_THROW(zt::Trainer{c});
}

// ------------------------------------------------------------------ sharded EMA (zero3, gemini)

namespace {

// config() (EMA decay 0.9, 2 micro-batches, cosine LR) under `strategy` with chunks of 262 elements (the toy's 459
// trained elements span several). No clipping: the global norm's summation order differs between strategies
// (1-ulp different coefficients); without it every strategy computes the same fp32 values, so the comparisons
// below can be exact. gemini_tier "disk": every optimizer block (master, AdamW moments, EMA) on disk and half the
// parameter shards in host memory; "host": the blocks in host memory.
zt::TrainerConfig ema_config(const std::string& dir, const std::string& strategy, int64_t steps,
                             const std::string& gemini_tier = "") {
  auto c = config(dir, steps);
  c.strategy = zerodiff::parse_enum<zerodiff::parallel::StrategyKind>(strategy, "strategy");
  c.max_grad_norm = 0;
  c.zero3_chunk_size_mb = 0.001;
  c.checkpoint_every = 3;
  if (strategy == "gemini") {
    c.gemini.placement_policy = zerodiff::memory::PlacementPolicyKind::fixed_fractions;
    c.gemini.offload_optim_frac = 1;
    c.gemini.offload_param_frac = 0.5;
    if (gemini_tier == "disk") c.gemini.offload_dir = dir + "/offload";
  }
  return c;
}

double max_abs_diff(const zio::TensorMap& a, const zio::TensorMap& b, const std::string& what) {
  EXPECT_EQ(a.size(), b.size()) << what;
  double worst = 0;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end()) {
      ADD_FAILURE() << what << ": no '" << name << "'";
      return INFINITY;
    }
    EXPECT_EQ(t.sizes(), it->second.sizes()) << what << " " << name;
    EXPECT_EQ(t.scalar_type(), it->second.scalar_type()) << what << " " << name;
    if (t.sizes() != it->second.sizes()) return INFINITY;
    worst = std::max(worst, (t.to(at::kDouble) - it->second.to(at::kDouble)).abs().max().item<double>());
  }
  return worst;
}

}  // namespace

// zero3 and gemini (blocks on disk, or in host memory) keep the EMA sharded beside the master weights; after 6 steps
// its checkpoint file (whole tensors by name, gathered from the shards) and the exported EMA weights equal strategy
// single's train::EMA, and so do the trained weights.
TEST(Trainer, ShardedEmaUnderZero3AndGeminiEqualsSingle) {
  torch::set_num_threads(1);
  auto run = [](const std::string& name, const std::string& strategy, const std::string& tier = "") {
    const std::string dir = fresh("ema_" + name);
    ToyModule m;
    zd::DataLoader loader(shapes(), loader_options(2));
    const auto r = zt::Trainer(ema_config(dir, strategy, 6, tier)).fit(m, loader);
    EXPECT_EQ(r.steps, 6) << name;
    return dir;
  };
  const std::string single = run("single", "single");
  const auto ref = zio::CheckpointManager::load(single + "/checkpoints/checkpoint-6");
  const auto& ref_ema = ref.tensors.at("ema");
  const auto& ref_model = ref.tensors.at("model");
  // single exports its EMA, and the EMA is far from the trained weights: the comparisons below tell them apart.
  EXPECT_EQ(max_abs_diff(final_weights(single), ref_ema, "single export vs its EMA"), 0.0);
  EXPECT_GT(max_abs_diff(ref_ema, ref_model, "single EMA vs trained"), 1e-3);
  for (const auto& [name, strategy, tier] : {std::make_tuple("zero3", "zero3", ""), std::make_tuple("gemini_disk", "gemini", "disk"),
                                              std::make_tuple("gemini_host", "gemini", "host")}) {
    const std::string dir = run(name, strategy, tier);
    const auto ckpt = zio::CheckpointManager::load(dir + "/checkpoints/checkpoint-6");
    ASSERT_TRUE(ckpt.tensors.count("ema")) << name;
    const double trained = max_abs_diff(ckpt.tensors.at("model"), ref_model, zerodiff::str(name, " trained weights"));
    const double ema = max_abs_diff(ckpt.tensors.at("ema"), ref_ema, zerodiff::str(name, " checkpointed EMA"));
    const double exported = max_abs_diff(final_weights(dir), final_weights(single), zerodiff::str(name, " export"));
    std::cout << name << ": max |x - single| trained " << trained << ", EMA " << ema << ", exported " << exported
              << std::endl;
    EXPECT_EQ(trained, 0.0) << name;  // fp32 exact: same AdamW kernel on the same values
    EXPECT_EQ(ema, 0.0) << name;
    EXPECT_EQ(exported, 0.0) << name;
  }
}

// When the final export throws (a full disk, say), fit propagates that error and the module leaves it with the
// trained weights, not the EMA it was exporting (strategy single: the weights are plain tensors to compare).
TEST(Trainer, FailedEmaExportLeavesTheTrainedWeights) {
  torch::set_num_threads(1);
  struct FailingExport : ToyModule {
    void export_to(const std::string&) override { throw zerodiff::IoError("export failed (test)"); }
  };
  const std::string dir = fresh("ema_failed_export");
  FailingExport m;
  zd::DataLoader loader(shapes(), loader_options(2));
  try {
    zt::Trainer(ema_config(dir, "single", 6)).fit(m, loader);
    ADD_FAILURE() << "fit did not throw";
  } catch (const zerodiff::IoError& e) {
    EXPECT_STREQ(e.what(), "export failed (test)");
  }
  const auto ckpt = zio::CheckpointManager::load(dir + "/checkpoints/checkpoint-6");
  EXPECT_EQ(max_abs_diff(zio::state_dict(m.model()), ckpt.tensors.at("model"), "module vs trained"), 0.0);
  EXPECT_GT(max_abs_diff(zio::state_dict(m.model()), ckpt.tensors.at("ema"), "module vs EMA"), 1e-3);
}

// A zero3 / gemini run interrupted after 3 steps and resumed from its checkpoint ends with the EMA (checkpoint file and
// exported weights) of the uninterrupted run, bit for bit: the shards are restored from the whole "ema" file.
TEST(Trainer, ShardedEmaResumeContinuesExactly) {
  torch::set_num_threads(1);
  for (const auto& [strategy, tier] : {std::make_pair("zero3", ""), std::make_pair("gemini", "disk")}) {
    const std::string a = fresh(zerodiff::str("ema_resume_a_", strategy)), b = fresh(zerodiff::str("ema_resume_b_", strategy));
    {
      ToyModule m;
      zd::DataLoader loader(shapes(), loader_options(2));
      zt::Trainer(ema_config(a, strategy, 6, tier)).fit(m, loader);
    }
    {
      ToyModule m;
      zd::DataLoader loader(shapes(), loader_options(2));
      EXPECT_EQ(zt::Trainer(ema_config(b, strategy, 6, tier)).fit(m, loader, "", /*stop_at_step=*/3).steps, 3);
    }
    {
      ToyModule m;  // as a new process
      zd::DataLoader loader(shapes(), loader_options(2));
      EXPECT_EQ(zt::Trainer(ema_config(b, strategy, 6, tier)).fit(m, loader, "latest").steps, 6);
    }
    const auto ca = zio::CheckpointManager::load(a + "/checkpoints/checkpoint-6");
    const auto cb = zio::CheckpointManager::load(b + "/checkpoints/checkpoint-6");
    // The EMA moved between the resumed checkpoint and the end (else the resume would prove nothing).
    const auto c3 = zio::CheckpointManager::load(b + "/checkpoints/checkpoint-3");
    EXPECT_GT(max_abs_diff(c3.tensors.at("ema"), cb.tensors.at("ema"), "EMA step 3 vs 6"), 1e-4) << strategy;
    EXPECT_EQ(max_abs_diff(ca.tensors.at("ema"), cb.tensors.at("ema"), "checkpointed EMA"), 0.0) << strategy;
    EXPECT_EQ(max_abs_diff(final_weights(a), final_weights(b), "exported EMA"), 0.0) << strategy;
    EXPECT_EQ(max_abs_diff(final_weights(a), ca.tensors.at("ema"), "export vs EMA"), 0.0) << strategy;
  }
}

TEST(Trainer, ConfigErrorsNameTheKey) {
  try {
    zerodiff::config::load_string<zt::TrainerConfig>("output_dir: x\nmax_steps: 10\noptimizer:\n  lr: -1\n", "t.yaml");
    FAIL();
  } catch (const zerodiff::ConfigError& e) {
    EXPECT_STREQ(e.what(), "t.yaml:4:7: key 'optimizer.lr' must be > 0, got -1");
  }
  try {
    zerodiff::config::load_string<zt::TrainerConfig>("output_dir: x\nmax_steps: 10\nlr_schedule:\n  type: cosin\n", "t.yaml");
    FAIL();
  } catch (const zerodiff::ConfigError& e) {
    EXPECT_STREQ(e.what(),
                 "t.yaml:4:9: key 'lr_schedule.type' must be one of constant, linear, cosine; got 'cosin' (did you mean "
                 "'cosine'?)");
  }
}

TEST(LRSchedule, MatchesTheReferenceFormulas) {
  namespace zo = zerodiff::optim;
  zo::LRSchedule s{zo::LRScheduleType::cosine, 1.0, 10, 110, 0.0};
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.lr_at(5), 0.5);
  EXPECT_DOUBLE_EQ(s.lr_at(10), 1.0);
  EXPECT_NEAR(s.lr_at(60), 0.5, 1e-12);   // half way through the cosine
  EXPECT_NEAR(s.lr_at(110), 0.0, 1e-12);
  s.type = zo::LRScheduleType::linear;
  EXPECT_DOUBLE_EQ(s.lr_at(35), 0.75);
  EXPECT_DOUBLE_EQ(s.lr_at(200), 0.0);
  s.type = zo::LRScheduleType::constant;
  EXPECT_DOUBLE_EQ(s.lr_at(3), 0.3);
  EXPECT_DOUBLE_EQ(s.lr_at(500), 1.0);
  EXPECT_THROW(zo::parse_lr_schedule("step"), zerodiff::ConfigError);
}

TEST(EMA, DecayAndUpdateFollowDiffusersEMAModel) {
  torch::nn::Linear lin(2, 1);
  zt::EMA ema(*lin, {.decay = 0.999});
  EXPECT_DOUBLE_EQ(ema.decay_at(1), 0.0);              // s = 0
  EXPECT_DOUBLE_EQ(ema.decay_at(2), 2.0 / 11.0);       // s = 1: (1 + 1) / (10 + 1)
  EXPECT_DOUBLE_EQ(ema.decay_at(100000), 0.999);       // capped
  const auto start = ema.shadow().at("weight").clone();
  {
    torch::NoGradGuard g;
    lin->weight.add_(1.0);
  }
  ema.update(*lin, 2);  // shadow -= (1 - 2/11) * (shadow - param)
  EXPECT_TRUE(torch::allclose(ema.shadow().at("weight"), start + 9.0 / 11.0));
  torch::nn::Linear other(2, 1);
  ema.copy_to(*other);
  EXPECT_TRUE(torch::equal(other->weight, ema.shadow().at("weight")));
}

// Bad EMA options are refused up front, by the library (check_ema_options: the sharded EMA of zero3 / gemini builds
// no train::EMA) and by the config loader, naming the field.
TEST(EMA, BadOptionsAreRefusedNamingTheField) {
  const auto error_of = [](const zt::EMAOptions& o) -> std::string {
    try {
      zt::check_ema_options(o);
    } catch (const zerodiff::Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_EQ(error_of({.decay = 0.999}), "(no error)");
  EXPECT_EQ(error_of({.decay = -0.5}), "EMA decay must be in [0, 1], got -0.5");
  EXPECT_EQ(error_of({.decay = 0.99, .min_decay = 1.5}), "EMA min_decay must be in [0, decay = 0.99], got 1.5");
  EXPECT_EQ(error_of({.update_after_step = -1}), "EMA update_after_step must be >= 0, got -1");
  EXPECT_EQ(error_of({.use_ema_warmup = true, .inv_gamma = 0}),
            "EMA inv_gamma must be > 0 with the warmup schedule, got 0");
  torch::nn::Linear lin(2, 1);
  EXPECT_THROW(zt::EMA(*lin, {.decay = 0.9, .min_decay = 0.95}), zerodiff::Error);
  try {
    zerodiff::config::load_string<zt::TrainerConfig>(
        "output_dir: x\nmax_steps: 10\nema:\n  enabled: true\n  decay: 0.99\n  min_decay: 1.5\n", "t.yaml");
    FAIL();
  } catch (const zerodiff::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("key 'ema.min_decay' must be in [0, decay], got 1.5"), std::string::npos)
        << e.what();
  }
}

TEST(Checkpoints, KeepLastLatestAndAtomicity) {
  const std::string dir = fresh("ckpt");
  zio::CheckpointManager m(dir, 2);
  for (int64_t s : {1, 2, 3}) m.save(s, {{"model", {{"w", torch::full({2}, static_cast<double>(s))}}}}, {{"x", s}});
  ASSERT_EQ(m.list().size(), 2u);
  EXPECT_EQ(*m.latest(), dir + "/checkpoint-3");
  const auto ck = zio::CheckpointManager::load(*m.latest());
  EXPECT_EQ(ck.step, 3);
  EXPECT_EQ(ck.state["x"], 3);
  EXPECT_TRUE(torch::equal(ck.tensors.at("model").at("w"), torch::full({2}, 3.0)));
  // A write failure (file-size limit, as a full disk) leaves no new checkpoint and the old ones intact.
  std::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  EXPECT_THROW(m.save(4, {{"model", {{"w", torch::zeros({1 << 16})}}}}, {}), zerodiff::IoError);
  setrlimit(RLIMIT_FSIZE, &old);
  EXPECT_EQ(*m.latest(), dir + "/checkpoint-3");
  EXPECT_EQ(m.list().size(), 2u);
  for (const auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().filename().string()[0], 'c') << e.path();
  // A folder without trainer_state.json is not a checkpoint.
  fs::create_directories(dir + "/checkpoint-9");
  EXPECT_EQ(*m.latest(), dir + "/checkpoint-3");
  try {
    zio::CheckpointManager::load(dir + "/checkpoint-9");
    FAIL();
  } catch (const zerodiff::IoError& e) {
    EXPECT_EQ(std::string(e.what()), dir + "/checkpoint-9: not a complete checkpoint (no trainer_state.json)");
  }
  // A replacement of checkpoint-3 killed between its two renames (filesystems without RENAME_EXCHANGE) left it as
  // ".checkpoint-3.old-<pid>": listing puts it back, so resume still finds it.
  fs::remove_all(dir + "/checkpoint-9");
  fs::rename(dir + "/checkpoint-3", dir + "/.checkpoint-3.old-999999");
  EXPECT_EQ(*m.latest(), dir + "/checkpoint-3");
  EXPECT_FALSE(fs::exists(dir + "/.checkpoint-3.old-999999"));
}

TEST(Checkpoints, FolderWritesAreAllOrNothing) {
  const std::string dir = fresh("atomic_dir") + "/final";
  auto read = [](const std::string& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  zio::write_directory_atomic(dir, [](const std::string& t) { zio::write_file_atomic(t + "/a.txt", "one"); });
  EXPECT_EQ(read(dir + "/a.txt"), "one");
  // A failing export (e.g. a full disk half way) leaves the previous folder exactly as it was, and no debris.
  EXPECT_THROW(zio::write_directory_atomic(dir,
                                           [](const std::string& t) {
                                             zio::write_file_atomic(t + "/b.txt", "half");
                                             throw zerodiff::IoError("disk full");
                                           }),
               zerodiff::IoError);
  EXPECT_EQ(read(dir + "/a.txt"), "one");
  EXPECT_FALSE(fs::exists(dir + "/b.txt"));
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(fs::path(dir).parent_path())) ++entries;
  EXPECT_EQ(entries, 1);  // only final/
  // A successful rewrite replaces the folder as a whole (files of the old one do not linger); leftovers of a
  // killed writer (another pid) are cleared; a trailing slash names the same folder.
  const fs::path parent = fs::path(dir).parent_path();
  fs::create_directories(parent / ".final.tmp-999999" / "unet");
  fs::create_directories(parent / ".final.old-999999");
  zio::write_directory_atomic(dir + "/", [](const std::string& t) { zio::write_file_atomic(t + "/c.txt", "two"); });
  EXPECT_FALSE(fs::exists(dir + "/a.txt"));
  EXPECT_EQ(read(dir + "/c.txt"), "two");
  EXPECT_FALSE(fs::exists(parent / ".final.tmp-999999"));
  EXPECT_FALSE(fs::exists(parent / ".final.old-999999"));
  // A writer killed between moving the previous folder aside and renaming the new one in (the fallback without
  // RENAME_EXCHANGE) leaves only ".final.old-<pid>": the next write puts it back first, even if that write fails.
  fs::rename(dir, parent / ".final.old-999998");
  EXPECT_THROW(zio::write_directory_atomic(dir, [](const std::string&) { throw zerodiff::IoError("disk full"); }),
               zerodiff::IoError);
  EXPECT_EQ(read(dir + "/c.txt"), "two");
  EXPECT_FALSE(fs::exists(parent / ".final.old-999998"));
}
