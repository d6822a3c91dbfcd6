// The training loop. Reference for shape and semantics: PyTorch Lightning's Trainer (fit loop, gradient
// accumulation, checkpoint/resume) and diffusers' train_text_to_image.py (AdamW, get_scheduler, EMAModel,
// clip_grad_norm_). Exact resume: the checkpoint holds every parameter and buffer, AdamW's per-parameter
// state, the EMA shadow, the run's generator state and the loader position; the LR is a function of the step.
#include "zerodiff/train/Trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#if ZERODIFF_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/io/AtomicFile.h"
#include "zerodiff/io/Checkpoint.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/models/Txt2ImgPipeline.h"
#include "zerodiff/nn/Autocast.h"
#include "zerodiff/optim/GradScaler.h"
#include "zerodiff/optim/LRSchedule.h"
#include "zerodiff/train/EmaKeeper.h"
#include "zerodiff/train/MetricsSink.h"
#include "zerodiff/train/StrategySetup.h"
#include "zerodiff/train/TrainingState.h"

namespace fs = std::filesystem;

namespace zerodiff::train {

uint64_t validation_seed(int64_t seed) { return static_cast<uint64_t>(seed) ^ 0x76616c5f6c6f7373ull; }  // "val_loss"

// ------------------------------------------------------------------ Trainer

Trainer::Trainer(TrainerConfig config, std::shared_ptr<dist::ProcessGroup> group)
    : config_(std::move(config)), group_(std::move(group)) {
  // implementation auto: HybridAdam wherever it applies (one fused, multi-threaded pass per tensor instead of
  // torch::optim::AdamW's dozen ATen ops: 0.28 vs 2.3 Gparam/s on the CPU box, docs/performance.md); torch under
  // bf16-true, which has no float32 master weights for HybridAdam to update.
  if (config_.optimizer.implementation == AdamImplementation::automatic) {
    optimizer_auto_ = true;
    config_.optimizer.implementation =
        config_.precision == Precision::bf16_true ? AdamImplementation::torch : AdamImplementation::hybrid_adam;
  }
  if (config_.precision == Precision::bf16_true && config_.optimizer.implementation == AdamImplementation::hybrid_adam) {
    throw ConfigError(
        "trainer.optimizer.implementation hybrid_adam updates float32 master weights; trainer.precision bf16-true "
        "has none (bfloat16 weights and AdamW states): use implementation torch, or precision bf16-mixed");
  }
  if (group_) {
    env_.rank = group_->rank();
    env_.world_size = group_->size();
  } else {
    env_ = dist::LaunchEnv::from_environment();
  }
  if (config_.strategy == parallel::StrategyKind::single && env_.world_size > 1) {
    throw Error(zerodiff::str("trainer.strategy is single but this run has ", env_.world_size, " processes (", env_.source,
                              "); use trainer.strategy=ddp, zero1, zero2 or zero3"));
  }
  const bool cuda = torch::cuda::is_available();
  // One device per process: LOCAL_RANK modulo the visible devices (with per-task GPU binding each task sees one).
  const int local = group_ || !cuda ? 0 : env_.local_rank % std::max<int>(1, static_cast<int>(torch::cuda::device_count()));
  if (config_.accelerator == Accelerator::cuda) {
    ZD_CHECK(cuda, "trainer.accelerator is cuda but no CUDA device is available");
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local));
  } else if (config_.accelerator == Accelerator::automatic && cuda) {
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local));
  }
#if ZERODIFF_WITH_CUDA
  if (device_.is_cuda()) c10::cuda::set_device(device_.index());  // NCCL and default allocations use it
#endif
}

dist::ProcessGroup& Trainer::process_group() {
  if (!group_) {
    dist::ProcessGroupOptions options;
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(config_.dist_timeout_s * 1000.0));
    group_ = dist::ProcessGroup::create(env_, device_, options);
    if (group_->size() > 1) {
      ZD_LOG_INFO("process group: ", group_->backend_name(), ", ", group_->size(), " processes (", env_.source,
                  "), this is rank ", group_->rank());
    }
  }
  return *group_;
}

FitResult Trainer::fit(TrainingModule& module, data::DataLoader& loader, const std::string& resume,
                       int64_t stop_at_step) {
  return fit(module, loader, nullptr, resume, stop_at_step);
}

namespace {

// --resume: "" (fresh; refuses a folder that already holds checkpoints), "latest" (the newest, or fresh when none)
// or a checkpoint folder. Read before anything is written, agreed by every rank.
std::optional<io::Checkpoint> read_resume_checkpoint(dist::ProcessGroup& pg, const io::CheckpointManager& checkpoints,
                                                     const std::string& resume, const std::string& output_dir) {
  std::optional<io::Checkpoint> ckpt;
  agreed(pg, "reading the checkpoint", [&] {
    if (resume == "latest") {
      if (auto latest = checkpoints.latest()) ckpt = io::CheckpointManager::load(*latest, pg.rank(), pg.size());
    } else if (!resume.empty()) {
      ckpt = io::CheckpointManager::load(resume, pg.rank(), pg.size());
    } else if (auto existing = checkpoints.latest()) {
      throw Error(zerodiff::str(output_dir, " already holds checkpoints of an earlier run (newest: ", *existing,
                                "); resume it with --resume latest, or choose another trainer.output_dir"));
    }
  });
  return ckpt;
}

// Lightning's bf16-true: the trained weights themselves are bfloat16 (no fp32 master), so are their gradients and
// AdamW states. Frozen parts keep their dtype; autocast to bfloat16 joins the two.
void cast_trained_to_bfloat16(const std::vector<ParameterGroup>& groups) {
  torch::NoGradGuard no_grad;
  int64_t cast = 0;
  for (const auto& g : groups) {
    for (const auto& [name, p] : g.params) {
      if (p.scalar_type() == at::kBFloat16) continue;
      at::Tensor t = p;
      t.set_data(p.detach().to(at::kBFloat16));
      ++cast;
    }
  }
  ZD_LOG_INFO("precision bf16-true: ", cast, " trained tensors in bfloat16 (weights, gradients and AdamW states)");
}

// The module's AdamW groups as the strategy takes them (peak lr: the group's, else trainer.optimizer.lr).
std::vector<parallel::ParamGroupSpec> param_group_specs(const std::vector<ParameterGroup>& groups, double base_lr) {
  std::vector<parallel::ParamGroupSpec> specs;
  for (const auto& g : groups) {
    ZD_CHECK(!g.lr || *g.lr > 0, "parameter group '", g.name, "': learning rate must be > 0, got ", g.lr.value_or(0));
    specs.push_back(parallel::ParamGroupSpec{g.name, g.params, g.lr.value_or(base_lr)});
    if (groups.size() > 1) {
      ZD_LOG_INFO("parameter group '", g.name, "': ", g.params.size(), " tensors, peak lr ", specs.back().lr);
    }
  }
  return specs;
}

// zero3 gathers parameters unit by unit: the module's units (it calls the hooks itself), or the whole model as one
// unit that fit brackets around each forward. The module never keeps hooks that die with fit's strategy.
class UnitBracket {
 public:
  UnitBracket(TrainingModule& module, parallel::Strategy& strategy) : module_(module) {
    std::vector<parallel::UnitSpec> units = module.sharding_units();
    if (units.empty()) {
      parallel::UnitSpec all{"model", {}};
      for (auto& p : module.model().named_parameters(true)) all.params.emplace_back(p.key(), p.value());
      units.push_back(std::move(all));
      whole_model_ = strategy.unit_hooks();
    }
    strategy.set_units(std::move(units));
  }
  ~UnitBracket() { module_.set_unit_hooks(nullptr); }
  UnitBracket(const UnitBracket&) = delete;
  UnitBracket& operator=(const UnitBracket&) = delete;
  // After strategy.setup(): the module calls the hooks per unit, or fit brackets the whole model.
  void attach(parallel::Strategy& strategy) {
    if (!whole_model_) module_.set_unit_hooks(strategy.unit_hooks());
  }
  // Runs `forward` (the module's step) between the whole-model unit's hooks when there is one.
  template <class F>
  auto around(F&& forward) {
    if (whole_model_) whole_model_->pre_forward(0);
    auto out = forward();
    if (whole_model_) whole_model_->post_forward(0, outputs_of(out));
    return out;
  }

 private:
  static std::vector<at::Tensor> outputs_of(const StepOutput& out) { return {out.loss}; }
  static std::vector<at::Tensor> outputs_of(const std::optional<StepOutput>&) { return {}; }
  TrainingModule& module_;
  parallel::UnitHooks* whole_model_ = nullptr;
};

// One optimizer step's worth of figures.
struct StepOutcome {
  double loss = 0;                     // mean over micro-batches and ranks
  std::map<std::string, double> logs;  // the module's figures, likewise
  double grad_norm = NAN;              // before clipping; NaN when the step was skipped
  bool skipped = false;                // inf/NaN gradients under loss scaling: nothing applied
  int64_t images = 0;                  // this rank's samples
};

// Sums `value` and each of `figures` over all ranks, divided by `divisor`: every rank gets the same figures.
void mean_over_ranks(dist::ProcessGroup& pg, double& value, std::map<std::string, double>& figures, double divisor) {
  std::vector<double> flat{value};
  for (auto& [k, v] : figures) flat.push_back(v);
  at::Tensor t = at::tensor(flat, at::kDouble);
  pg.all_reduce(t, "metrics");
  t.div_(divisor);
  value = t[0].item<double>();
  size_t i = 1;
  for (auto& [k, v] : figures) v = t[static_cast<int64_t>(i++)].item<double>();
}

// The body of one optimizer step: micro-batches (forward in the compute dtype, backward with the strategy's
// gradient communication), the agreed non-finite checks, unscaling, clipping, AdamW, the EMA's decay.
class StepRunner {
 public:
  StepRunner(const TrainerConfig& c, TrainingModule& module, data::DataLoader& loader, parallel::Strategy& strategy,
             dist::ProcessGroup& pg, UnitBracket& bracket, optim::GradScaler* scaler, EmaKeeper* ema,
             torch::Device device)
      : c_(c), module_(module), loader_(loader), strategy_(strategy), pg_(pg), bracket_(bracket), scaler_(scaler),
        ema_(ema), device_(device) {}

  // Optimizer step number step + 1 (the learning rates are set).
  StepOutcome run(int64_t step, StepContext& ctx) {
    StepOutcome r;
    double bad_loss = 0;  // a non-finite loss of this step (without loss scaling), 0 if none
    const auto accum = static_cast<double>(c_.gradient_accumulation_steps);
    strategy_.zero_grad();
    for (int64_t micro = 0; micro < c_.gradient_accumulation_steps; ++micro) {
      const data::Batch batch = next_batch();
      ctx.global_step = step;
      StepOutput out;
      {
        nn::AutocastScope autocast(device_.type(), compute_dtype(c_.precision));
        out = bracket_.around([&] { return module_.training_step(batch, ctx); });
      }
      ZD_CHECK(out.loss.defined() && out.loss.numel() == 1, "training_step must return a scalar loss");
      const at::Tensor loss = out.loss.to(at::kFloat) / accum;
      const bool last_micro = micro + 1 == c_.gradient_accumulation_steps;
      strategy_.begin_backward(last_micro);
      (scaler_ ? scaler_->scale(loss) : loss).backward();
      strategy_.end_backward(last_micro);
      const double value = out.loss.to(at::kDouble).item<double>();
      // With loss scaling an overflow is expected now and then: the scaler skips that step. Otherwise stop (after
      // the step's micro-batches, on every rank at once).
      if (!scaler_ && !std::isfinite(value) && std::isfinite(bad_loss)) bad_loss = value;
      r.loss += value;  // summed here, divided by the micro-batches below (as logged before)
      for (auto& [k, v] : out.logs) r.logs[k] += v / accum;
      r.images += batch.size();
    }
    if (pg_.any_true(!std::isfinite(bad_loss), "loss_check")) {
      throw Error(zerodiff::str("non-finite loss ", std::isfinite(bad_loss) ? std::string("on another rank") : zerodiff::str(bad_loss),
                                " at step ", step, " (the last good checkpoint is kept; lower the learning rate or check the data)"));
    }
    // The overflow decision is agreed by all ranks: one rank's inf skips the step everywhere (torch.amp: parameters,
    // optimizer state and EMA untouched, the scale backs off).
    r.skipped = scaler_ && pg_.any_true(scaler_->unscale(strategy_.gradient_tensors()), "found_inf");
    if (r.skipped) {
      ZD_LOG_WARN("step ", step + 1, ": inf/NaN gradients at loss scale ", scaler_->get_scale(),
                  "; step skipped, scale ", scaler_->get_scale() * c_.grad_scaler.backoff_factor);
    } else {
      r.grad_norm = strategy_.clip_grad_norm(c_.max_grad_norm > 0 ? c_.max_grad_norm
                                                                  : std::numeric_limits<double>::infinity());
      ZD_CHECK(std::isfinite(r.grad_norm), "non-finite gradient norm at step ", step,
               " (the step is not applied; the last good checkpoint is kept; lower the learning rate or check the data)");
      if (ema_) ema_->before_step(step + 1);
      strategy_.step();
      if (ema_) ema_->after_step(step + 1);
    }
    if (scaler_) scaler_->update(r.skipped);
    // The logged loss and figures are means over all ranks' micro-batches.
    if (pg_.size() > 1) mean_over_ranks(pg_, r.loss, r.logs, static_cast<double>(pg_.size()));
    r.loss /= accum;
    return r;
  }

 private:
  data::Batch next_batch() {
    for (int tries = 0; tries < 2; ++tries) {
      if (auto b = loader_.next()) return std::move(*b);
    }
    throw Error("the data loader yields no batches");
  }

  const TrainerConfig& c_;
  TrainingModule& module_;
  data::DataLoader& loader_;
  parallel::Strategy& strategy_;
  dist::ProcessGroup& pg_;
  UnitBracket& bracket_;
  optim::GradScaler* scaler_;
  EmaKeeper* ema_;
  torch::Device device_;
};

// The mean of each validation figure over the first val_batches batches (all ranks' shards), with a generator
// seeded the same way each time (comparable figures, training RNG untouched). nullopt when the module has no
// validation_step (it says so once) or there was nothing to validate.
std::optional<std::map<std::string, double>> run_validation(const TrainerConfig& c, TrainingModule& module,
                                                            data::DataLoader& validation, dist::ProcessGroup& pg,
                                                            UnitBracket& bracket, torch::Device device, int64_t step,
                                                            MetricsSink& metrics) {
  torch::NoGradGuard no_grad;
  StepContext vctx;
  vctx.device = device;
  vctx.global_step = step;
  vctx.generator = at::make_generator<at::CPUGeneratorImpl>(validation_seed(c.seed));
  const int64_t batches = c.val_batches > 0 ? std::min(c.val_batches, validation.batches_per_epoch())
                                            : validation.batches_per_epoch();
  std::map<std::string, double> sums;
  double samples = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t b = 0; b < batches; ++b) {
    const data::Batch batch = validation.build_batch(/*epoch=*/0, b);
    std::optional<StepOutput> out;
    {
      nn::AutocastScope autocast(device.type(), compute_dtype(c.precision));
      out = bracket.around([&] { return module.validation_step(batch, vctx); });
    }
    if (!out) {
      ZD_LOG_WARN("the training module has no validation_step: validation skipped");
      return std::nullopt;
    }
    ZD_CHECK(out->loss.defined() && out->loss.numel() == 1, "validation_step must return a scalar loss");
    const double n = static_cast<double>(batch.size());
    sums["loss"] += out->loss.to(at::kDouble).item<double>() * n;
    for (auto& [k, v] : out->logs) sums[k] += v * n;
    samples += n;
  }
  // Each rank validated its shard of the validation set: sum over ranks (every rank has the same figures).
  if (pg.size() > 1) mean_over_ranks(pg, samples, sums, 1.0);
  if (samples == 0) return std::map<std::string, double>{};
  for (auto& [k, v] : sums) v /= samples;
  metrics.log_validation(step, sums, static_cast<int64_t>(samples),
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return sums;
}

// A grid of module.sample(prompts) as output_dir/samples/<name> (and in TensorBoard). Sampling needs the whole
// model: rank 0 alone when every rank holds it, all ranks together under zero3.
void write_sample_grid(const TrainerConfig& c, TrainingModule& module, parallel::Strategy& strategy, bool is_rank0,
                       MetricsSink& metrics, const std::string& name, int64_t step) {
  if (c.sample_prompts.empty()) return;
  if (!is_rank0 && strategy.replicated_parameters()) return;
  std::optional<at::Tensor> images;
  with_full_parameters(strategy, false, [&] {
    if (is_rank0) images = module.sample(c.sample_prompts, c.sample_seed);
  });
  if (!images || !is_rank0) return;
  const fs::path dir = fs::path(c.output_dir) / "samples";
  ZD_CHECK(images->dim() == 4 && images->size(1) == 3, "sample(): expected images [N, 3, H, W], got ", images->sizes());
  const at::Tensor grid = models::make_image_grid(images->detach().to(torch::kCPU, torch::kFloat), 4);
  const std::string png = models::encode_png(grid);
  fs::create_directories(dir);
  io::write_file_atomic((dir / name).string(), png);
  metrics.add_sample_grid(png, grid.size(1), grid.size(2), step);
  ZD_LOG_INFO("sample grid ", (dir / name).string());
}

// module.export_to(dir), complete or absent (a re-run replaces it in one rename): rank 0 writes the whole model
// (every rank holds it whole meanwhile); the others wait for it and fail with rank 0's error.
void export_final_model(TrainingModule& module, parallel::Strategy& strategy, dist::ProcessGroup& pg,
                        const std::string& dir) {
  std::string error;
  with_full_parameters(strategy, false, [&] {
    if (pg.rank() != 0) return;
    try {
      io::write_directory_atomic(dir, [&](const std::string& temp) { module.export_to(temp); });
    } catch (const std::exception& e) {
      if (pg.size() == 1) throw;
      error = e.what();
    }
  });
  if (!pg.all_true(error.empty(), "export")) {
    throw IoError(error.empty() ? zerodiff::str(dir, ": rank 0 failed to export") : error);
  }
}

}  // namespace

FitResult Trainer::fit(TrainingModule& module, data::DataLoader& loader, data::DataLoader* validation,
                       const std::string& resume, int64_t stop_at_step) {
  try {
    return run_fit(module, loader, validation, resume, stop_at_step);
  } catch (const memory::BudgetError& e) {
    // The memory layer names its own options; these are the run config's keys behind them.
    throw memory::BudgetError(zerodiff::str(e.what(), " (run config: trainer.gemini.device_budget_mb, "
                                                      "trainer.zero3_chunk_size_mb, data.batch_size)"));
  }
}

FitResult Trainer::run_fit(TrainingModule& module, data::DataLoader& loader, data::DataLoader* validation,
                           const std::string& resume, int64_t stop_at_step) {
  const TrainerConfig& c = config_;
  const int rank = env_.rank, world = env_.world_size;
  const bool is_rank0 = rank == 0;
  ZD_CHECK(loader.options().rank == rank && loader.options().world_size == world, "the data loader is set up for rank ",
           loader.options().rank, " of ", loader.options().world_size, " but this process is rank ", rank, " of ", world,
           " (make_run_data(config, trainer.rank(), trainer.world_size()))");
  dist::ProcessGroup& pg = process_group();
  io::CheckpointManager checkpoints((fs::path(c.output_dir) / "checkpoints").string(), c.keep_last);
  std::optional<io::Checkpoint> ckpt = read_resume_checkpoint(pg, checkpoints, resume, c.output_dir);

  // The model, its AdamW groups and the strategy that shards them.
  torch::manual_seed(c.seed);
  agreed(pg, "building the model", [&] { module.configure_model(device_); });
  if (c.precision == Precision::bf16_true) cast_trained_to_bfloat16(module.parameter_groups());
  const std::vector<ParameterGroup> groups = module.parameter_groups();
  const StrategySetup setup = strategy_setup(c, groups, optimizer_auto_);
  strategy_ = parallel::make_strategy(setup.kind, group_, setup.options);
  parallel::Strategy& strategy = *strategy_;
  UnitBracket bracket(module, strategy);
  {
    std::vector<at::Tensor> replicated;  // rank 0's parameters and buffers become everyone's
    for (auto& p : module.model().parameters(true)) replicated.push_back(p);
    for (auto& b : module.model().buffers(true)) replicated.push_back(b);
    strategy.setup(param_group_specs(groups, c.optimizer.lr), replicated,
                   parallel::AdamWSettings{c.optimizer.betas[0], c.optimizer.betas[1], c.optimizer.eps,
                                           c.optimizer.weight_decay});
  }
  bracket.attach(strategy);
  if (world > 1) {
    ZD_LOG_INFO("strategy ", strategy.name(), " on ", world, " processes; global batch ", loader.options().batch_size,
                " x ", world, " x ", c.gradient_accumulation_steps);
  }

  // The rest of the run's state, restored from the checkpoint when resuming.
  const optim::LRSchedule schedule{c.lr_schedule.type, c.optimizer.lr, c.lr_schedule.warmup_steps, c.max_steps,
                                   c.lr_schedule.min_lr_ratio};
  std::unique_ptr<EmaKeeper> ema;
  if (c.ema.enabled) {
    ema = make_ema_keeper(EMAOptions{c.ema.decay, c.ema.min_decay, c.ema.update_after_step, c.ema.use_warmup,
                                     c.ema.inv_gamma, c.ema.power},
                          module.model(), strategy, is_rank0);
  }
  std::optional<optim::GradScaler> scaler;
  if (c.precision == Precision::fp16_mixed) {
    scaler.emplace(optim::GradScalerOptions{c.grad_scaler.init_scale, c.grad_scaler.growth_factor,
                                            c.grad_scaler.backoff_factor, c.grad_scaler.growth_interval});
  }
  StepContext ctx;
  ctx.device = device_;
  // Rank 0 draws what a single-process run draws; other ranks draw their own streams (seeded from seed and rank).
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(
      rank == 0 ? static_cast<uint64_t>(c.seed) : static_cast<uint64_t>(c.seed) * 1000003ull + static_cast<uint64_t>(rank));
  TrainingState state({module, strategy, pg, ema.get(), ctx.generator, scaler ? &*scaler : nullptr, loader, c.seed});
  int64_t step = 0;
  std::string last_ckpt;
  if (ckpt) {
    step = state.restore(*ckpt);
    last_ckpt = ckpt->path;
    ZD_LOG_INFO("resumed from ", ckpt->path, " at step ", step);
    ckpt.reset();  // everything is copied; release the mapped checkpoint files
  }
  const int64_t resumed_step = step;
  MetricsSink metrics(c.output_dir, is_rank0, c.tensorboard, resumed_step);
  StepRunner runner(c, module, loader, strategy, pg, bracket, scaler ? &*scaler : nullptr, ema.get(), device_);
  FitResult result;
  auto validate = [&] {
    if (!validation) return;
    if (auto means = run_validation(c, module, *validation, pg, bracket, device_, step, metrics)) {
      if (!means->empty()) result.validation = *means;
    } else {
      validation = nullptr;  // no validation_step: skipped from now on
    }
  };
  auto save = [&] {
    last_ckpt = state.save(checkpoints, step);
    ZD_LOG_INFO("checkpoint ", last_ckpt);
  };

  // The training loop.
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t last_step = stop_at_step > 0 ? std::min(stop_at_step, c.max_steps) : c.max_steps;
  int64_t images_seen = 0, consecutive_skips = 0, last_saved_step = -1;
  while (step < last_step) {
    const double lr = schedule.lr_at(step);  // every group follows trainer.optimizer.lr's curve, scaled
    for (size_t g = 0; g < groups.size(); ++g) strategy.set_lr(g, groups[g].lr ? lr / c.optimizer.lr * *groups[g].lr : lr);
    const StepOutcome out = runner.run(step, ctx);
    consecutive_skips = out.skipped ? consecutive_skips + 1 : 0;
    if (consecutive_skips >= c.grad_scaler.max_consecutive_skips) {
      throw Error(zerodiff::str(consecutive_skips, " steps in a row (up to step ", step + 1,
                                ") had inf/NaN gradients and were skipped; the loss scale is now ", scaler->get_scale(),
                                ". Stopping: check the data and the learning rate. The last good checkpoint is kept",
                                last_ckpt.empty() ? std::string(" (none was written yet)") : ": " + last_ckpt));
    }
    ++step;
    images_seen += out.images;
    result.last_loss = out.loss;
    if (step % c.log_every == 0 || step == c.max_steps) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      metrics.log_step(StepMetrics{step, c.max_steps, out.loss, lr, out.grad_norm,
                                   scaler ? std::optional<double>(scaler->get_scale()) : std::nullopt,
                                   elapsed > 0 ? static_cast<double>(images_seen * world) / elapsed : 0,
                                   elapsed > 0 ? static_cast<double>(step - resumed_step) / elapsed : 0, elapsed,
                                   rss_mib(), out.logs});
    }
    if (step == c.max_steps) break;
    if (c.val_every > 0 && step % c.val_every == 0) validate();
    if (c.checkpoint_every > 0 && step % c.checkpoint_every == 0) {
      save();
      last_saved_step = step;
    }
    if (c.sample_every > 0 && step % c.sample_every == 0) {
      write_sample_grid(c, module, strategy, is_rank0, metrics, zerodiff::str("step-", step, ".png"), step);
    }
  }
  if (last_saved_step != step && step != resumed_step) save();
  result.steps = step;
  result.last_checkpoint = last_ckpt;
  if (step >= c.max_steps) {  // (a run resumed past max_steps exports too)
    // The end-of-run validation, samples and export use the EMA weights when there is an EMA.
    std::optional<EmaWeightsScope> ema_weights;
    if (ema) ema_weights.emplace(*ema);
    validate();
    write_sample_grid(c, module, strategy, is_rank0, metrics, "final.png", step);
    result.export_dir = (fs::path(c.output_dir) / "final").string();
    export_final_model(module, strategy, pg, result.export_dir);
    if (ema_weights) ema_weights->restore();
    ZD_LOG_INFO("exported to ", result.export_dir);
  }
  // The module leaves fit with whole parameters (under zero3 they keep the gathered storage after the strategy goes).
  if (!strategy.replicated_parameters()) strategy.gather_full_parameters();
  return result;
}

}  // namespace zerodiff::train
