// zerodiff/train/Trainer.h — the training loop (PyTorch Lightning's Trainer shape):
//   Trainer trainer(config.trainer);
//   trainer.fit(module, loader, /*resume=*/"latest");
// Gradient accumulation, AdamW, LR schedule with warmup, global-norm clipping, EMA, metrics (JSONL + a
// progress bar on terminals, plain lines otherwise), sample grids, atomic checkpoints keeping the last K,
// and exact resume (same data order, RNG, LR, optimizer and EMA state: N + N steps == 2N steps bitwise).
//
// Trainer::fit is the loop; the parts it uses have their own headers and tests (tests/unit/test_fit_parts.cpp):
//   StrategySetup.h  trainer config -> strategy kind and options (the dry-run estimate uses the same function)
//   EmaKeeper.h      the EMA, whole (train::EMA) or sharded (zero3 / gemini), behind one interface
//   TrainingState.h  the checkpoint: save() and restore() as one symmetric pair; agreed() and with_full_parameters()
//   MetricsSink.h    metrics.jsonl, TensorBoard, the progress bar
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "zerodiff/data/DataLoader.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/optim/LRSchedule.h"
#include "zerodiff/parallel/Strategy.h"
#include "zerodiff/train/Modes.h"
#include "zerodiff/train/TrainingModule.h"

namespace zerodiff::train {

struct OptimizerConfig {
  double lr = 1e-4;
  std::vector<double> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 1e-2;
  AdamImplementation implementation = AdamImplementation::automatic;  ///< auto: resolved by the Trainer
  template <class V>
  void visit(V& v) {
    v("lr", lr, "Peak learning rate of AdamW");
    v("implementation", implementation,
      "AdamW implementation: torch (torch::optim::AdamW, one ATen op per update term and tensor) or hybrid_adam "
      "(zerodiff's SIMD, multi-threaded CPU kernel; ATen's fused kernel on CUDA); the same update within float "
      "rounding, the same checkpoint state. auto (default): hybrid_adam, except torch under precision "
      "bf16-true (no float32 master weights); 8x less optimizer time on the CPU (docs/performance.md)");
    v("betas", betas, "AdamW (beta1, beta2)");
    v("eps", eps, "AdamW epsilon");
    v("weight_decay", weight_decay, "Decoupled weight decay (AdamW)");
    v.check(lr > 0, "lr", "must be > 0, got ", lr);
    v.check(betas.size() == 2 && betas[0] >= 0 && betas[0] < 1 && betas[1] >= 0 && betas[1] < 1, "betas",
            "must be two numbers in [0, 1), got ", betas);
    v.check(eps > 0, "eps", "must be > 0, got ", eps);
    v.check(weight_decay >= 0, "weight_decay", "must be >= 0, got ", weight_decay);
  }
};

struct LRScheduleConfig {
  optim::LRScheduleType type = optim::LRScheduleType::constant;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;
  template <class V>
  void visit(V& v) {
    v("type", type, "Schedule after warmup");
    v("warmup_steps", warmup_steps, "Linear warmup from 0 over these optimizer steps");
    v("min_lr_ratio", min_lr_ratio, "Floor of linear/cosine decay, as a fraction of lr");
    v.check(warmup_steps >= 0, "warmup_steps", "must be >= 0, got ", warmup_steps);
    v.check(min_lr_ratio >= 0 && min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1], got ", min_lr_ratio);
  }
};

struct EMAConfig {
  bool enabled = false;
  double decay = 0.9999;
  double min_decay = 0.0;
  int64_t update_after_step = 0;
  bool use_warmup = false;
  double inv_gamma = 1.0;
  double power = 2.0 / 3.0;
  template <class V>
  void visit(V& v) {
    v("enabled", enabled,
      "Keep an EMA of the trained weights; exported instead of the raw weights (zero3/gemini: sharded like the "
      "master weights, 4 bytes per trained parameter / world size on each rank; a chunk too small to shard keeps its "
      "EMA whole)");
    v("decay", decay, "Maximum EMA decay");
    v("min_decay", min_decay, "Minimum EMA decay");
    v("update_after_step", update_after_step, "EMA starts after this many optimizer steps");
    v("use_warmup", use_warmup, "Use the inv_gamma/power warmup instead of (1+s)/(10+s)");
    v("inv_gamma", inv_gamma, "EMA warmup inverse multiplicative factor");
    v("power", power, "EMA warmup exponent");
    v.check(decay >= 0 && decay <= 1, "decay", "must be in [0, 1], got ", decay);
    v.check(min_decay >= 0 && min_decay <= decay, "min_decay", "must be in [0, decay], got ", min_decay);
    v.check(update_after_step >= 0, "update_after_step", "must be >= 0, got ", update_after_step);
    v.check(!use_warmup || (inv_gamma > 0 && power > 0), "inv_gamma",
            "and power must be > 0 with use_warmup, got inv_gamma ", inv_gamma, ", power ", power);
  }
};

struct GradScalerConfig {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  int64_t max_consecutive_skips = 25;  ///< stop the run after this many skipped steps in a row
  template <class V>
  void visit(V& v) {
    v("init_scale", init_scale, "Initial loss scale (16-mixed)");
    v("growth_factor", growth_factor, "Loss scale multiplier after growth_interval clean steps");
    v("backoff_factor", backoff_factor, "Loss scale multiplier after a step with inf/NaN gradients (skipped)");
    v("growth_interval", growth_interval, "Clean steps in a row before the loss scale grows");
    v("max_consecutive_skips", max_consecutive_skips,
      "Stop with an error after this many steps in a row skipped for inf/NaN gradients (the data or the model is "
      "broken, not the scale); the last good checkpoint is kept");
    v.check(init_scale > 0, "init_scale", "must be > 0, got ", init_scale);
    v.check(growth_factor > 1, "growth_factor", "must be > 1, got ", growth_factor);
    v.check(backoff_factor > 0 && backoff_factor < 1, "backoff_factor", "must be in (0, 1), got ", backoff_factor);
    v.check(growth_interval >= 1, "growth_interval", "must be >= 1, got ", growth_interval);
    v.check(max_consecutive_skips >= 1, "max_consecutive_skips", "must be >= 1, got ", max_consecutive_skips);
  }
};

/// trainer.gemini: where gemini keeps parameter shards and optimizer states (memory::GeminiManager).
struct GeminiConfig {
  memory::PlacementPolicyKind placement_policy = memory::PlacementPolicyKind::automatic;
  double device_budget_mb = 0;
  double offload_optim_frac = 0;
  double offload_param_frac = 0;
  std::string offload_dir;
  template <class V>
  void visit(V& v) {
    v("placement_policy", placement_policy,
      "auto: after a warm-up step, optimizer states go to the device as far as the budget allows next to the "
      "step's measured peak, and parameter shards stay on the device while they fit (the one used furthest "
      "in the future is evicted to host memory); static: the fractions below");
    v("device_budget_mb", device_budget_mb,
      "Device memory (MiB) gemini may use for model data plus the measured non-model peak (0 = the device's free "
      "memory at start-up; on a CPU run, available host memory)");
    v("offload_optim_frac", offload_optim_frac,
      "static: fraction of chunks whose optimizer states (fp32 master, AdamW moments) live in host memory (or on "
      "disk with offload_dir)");
    v("offload_param_frac", offload_param_frac, "static: fraction of chunks whose parameter shards live in host memory");
    v("offload_dir", offload_dir,
      "Keep host-side optimizer states on disk in this folder (one subfolder per rank; scratch files, deleted at "
      "exit): read ahead and written behind chunk by chunk during the AdamW step. Empty = in host memory");
    v.check(device_budget_mb >= 0, "device_budget_mb", "must be >= 0, got ", device_budget_mb);
    v.check(offload_optim_frac >= 0 && offload_optim_frac <= 1, "offload_optim_frac", "must be in [0, 1], got ",
            offload_optim_frac);
    v.check(offload_param_frac >= 0 && offload_param_frac <= 1, "offload_param_frac", "must be in [0, 1], got ",
            offload_param_frac);
  }
};

struct TrainerConfig {
  std::string output_dir;                 ///< checkpoints/, samples/, metrics.jsonl, final/
  int64_t max_steps = 0;                  ///< optimizer steps
  int64_t gradient_accumulation_steps = 1;
  int64_t seed = 0;
  double max_grad_norm = 1.0;             ///< 0 = no clipping (the norm is still logged)
  Accelerator accelerator = Accelerator::automatic;
  Precision precision = Precision::fp32;
  parallel::StrategyKind strategy = parallel::StrategyKind::single;
  double bucket_size_mb = 25;             ///< gradient bucket size (ddp, zero1, zero2)
  double dist_timeout_s = 1800;           ///< rendezvous and collective timeout
  double zero3_chunk_size_mb = 0;         ///< zero3 chunk size (0 = search for least padding)
  double zero3_keep_gathered_below_mb = 0;  ///< zero3: units smaller than this stay whole (0 = none)
  int64_t log_every = 10;
  int64_t checkpoint_every = 0;           ///< 0 = only at the end
  int64_t keep_last = 2;
  int64_t sample_every = 0;               ///< 0 = only at the end (when prompts are given)
  std::vector<std::string> sample_prompts;
  int64_t sample_seed = 0;
  bool tensorboard = true;                ///< event files under output_dir/tensorboard
  int64_t val_every = 0;                  ///< 0 = validation only at the end (when there is a validation set)
  int64_t val_batches = 0;                ///< 0 = the whole validation set
  OptimizerConfig optimizer;
  LRScheduleConfig lr_schedule;
  EMAConfig ema;
  GradScalerConfig grad_scaler;
  GeminiConfig gemini;

  template <class V>
  void visit(V& v) {
    v.required("output_dir", output_dir, "Folder for checkpoints, samples, metrics and the final export");
    v.required("max_steps", max_steps, "Number of optimizer steps");
    v("gradient_accumulation_steps", gradient_accumulation_steps, "Micro-batches per optimizer step");
    v("seed", seed, "Seed of the run's generator (timesteps, noise) and of model initialisation");
    v("max_grad_norm", max_grad_norm, "Clip gradients to this global L2 norm (0 = off)");
    v("accelerator", accelerator, "Device");
    v("precision", precision,
      "Numeric precision (Lightning's names): 32-true; 16-mixed / bf16-mixed = fp32 master weights with "
      "autocast to float16 / bfloat16 (16-mixed adds dynamic loss scaling); bf16-true = the trained weights, their "
      "gradients and AdamW states in bfloat16 (no fp32 copy: half the memory, updates smaller than bfloat16's "
      "resolution are lost), frozen parts unchanged");
    v("strategy", strategy,
      "Parallel strategy: single (one process), ddp (replicated, gradients all-reduced during backward), zero1 "
      "(optimizer states and fp32 master weights sharded), zero2 (zero1 + gradients reduce-scattered into "
      "shards), zero3 (zero2 + parameters sharded in chunks, gathered per unit while it runs), gemini (zero3 with "
      "chunks and optimizer states placed between device, host memory and disk under a device budget: "
      "trainer.gemini). Multi-process runs: docs/distributed.md");
    v("bucket_size_mb", bucket_size_mb,
      "Gradient bucket size in MiB of fp32 (ddp/zero1/zero2): each bucket is sent as soon as backward has produced "
      "it; a resumed zero1/zero2 run needs the same value");
    v("zero3_chunk_size_mb", zero3_chunk_size_mb,
      "zero3 chunk size in MiB of fp32 (0 = the size in [largest parameter, +128 MiB] that wastes least padding); "
      "a resumed zero3 run needs the same value");
    v("zero3_keep_gathered_below_mb", zero3_keep_gathered_below_mb,
      "zero3: units whose parameters total less than this (MiB of fp32) stay whole on every rank with their "
      "gradients all-reduced instead of being gathered and released around each use (0 = shard every unit)");
    v("dist_timeout_s", dist_timeout_s,
      "Seconds to wait for the rendezvous and for each collective; a dead or stuck peer fails the run after this");
    v("log_every", log_every, "Log and append metrics every N optimizer steps");
    v("checkpoint_every", checkpoint_every, "Checkpoint every N optimizer steps (0 = only at the end)");
    v("keep_last", keep_last, "Checkpoints kept (0 = all)");
    v("sample_every", sample_every, "Write a sample grid every N steps (0 = only at the end)");
    v("sample_prompts", sample_prompts, "Prompts of the sample grid");
    v("sample_seed", sample_seed, "Seed of the sample grid's initial noise");
    v("tensorboard", tensorboard,
      "Write TensorBoard event files (scalars and sample grids) to output_dir/tensorboard");
    v("val_every", val_every,
      "Validate every N steps (0 = only at the end); needs a validation set (data.validation_split)");
    v("val_batches", val_batches, "Validation batches per validation (0 = the whole validation set)");
    v("optimizer", optimizer, "AdamW settings");
    v("lr_schedule", lr_schedule, "Learning-rate schedule");
    v("ema", ema, "EMA of trained weights");
    v("grad_scaler", grad_scaler, "Dynamic loss scaling of 16-mixed (torch.amp.GradScaler)");
    v("gemini", gemini, "Placement of gemini's chunks and optimizer states (strategy gemini)");
    v.check(seed >= 0, "seed", "must be >= 0, got ", seed);
    v.check(max_steps >= 1, "max_steps", "must be >= 1, got ", max_steps);
    v.check(gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1, got ",
            gradient_accumulation_steps);
    v.check(max_grad_norm >= 0, "max_grad_norm", "must be >= 0, got ", max_grad_norm);
    v.check(log_every >= 1, "log_every", "must be >= 1, got ", log_every);
    v.check(checkpoint_every >= 0, "checkpoint_every", "must be >= 0, got ", checkpoint_every);
    v.check(keep_last >= 0, "keep_last", "must be >= 0, got ", keep_last);
    v.check(sample_every >= 0, "sample_every", "must be >= 0, got ", sample_every);
    v.check(val_every >= 0, "val_every", "must be >= 0, got ", val_every);
    v.check(val_batches >= 0, "val_batches", "must be >= 0, got ", val_batches);
    v.check(bucket_size_mb > 0, "bucket_size_mb", "must be > 0, got ", bucket_size_mb);
    v.check(dist_timeout_s > 0, "dist_timeout_s", "must be > 0, got ", dist_timeout_s);
    v.check(zero3_chunk_size_mb >= 0, "zero3_chunk_size_mb", "must be >= 0, got ", zero3_chunk_size_mb);
    v.check(zero3_keep_gathered_below_mb >= 0, "zero3_keep_gathered_below_mb", "must be >= 0, got ",
            zero3_keep_gathered_below_mb);
  }
};

/// Summary of a finished fit.
struct FitResult {
  int64_t steps = 0;              ///< optimizer steps done in total (including before a resume)
  double last_loss = 0;           ///< mean loss of the last optimizer step
  std::string export_dir;         ///< where export_to wrote (output_dir/final)
  std::string last_checkpoint;    ///< newest checkpoint folder
  std::map<std::string, double> validation;  ///< figures of the last validation ("loss", ...); empty if none
};

class Trainer {
 public:
  /// Reads the launch environment (torchrun / SLURM variables, dist::LaunchEnv) unless `group` is given; the
  /// process group itself is connected on first use (fit, process_group()). With CUDA, rank r uses device
  /// LOCAL_RANK. Throws NotImplementedError for precisions/strategies this build does not provide yet,
  /// dist::CommError for an incomplete launch environment, and zerodiff::Error when cuda is requested without
  /// a CUDA device or strategy single is launched on several processes.
  explicit Trainer(TrainerConfig config, std::shared_ptr<dist::ProcessGroup> group = nullptr);

  /// Trains `module` on `loader` until max_steps. `resume`: "" (fresh), "latest" (newest checkpoint under
  /// output_dir/checkpoints, fresh when there is none) or a checkpoint folder. A missing or corrupt
  /// checkpoint throws IoError before anything is written. `stop_at_step` > 0 stops early at that total step
  /// (as an interruption would: a checkpoint is written, nothing exported); 0 runs to max_steps.
  FitResult fit(TrainingModule& module, data::DataLoader& loader, const std::string& resume = "",
                int64_t stop_at_step = 0);

  /// As above, validating on `validation` (null = none) every val_every steps and at the end, as Lightning's
  /// fit(model, train_dataloaders, val_dataloaders): module.validation_step on the first val_batches batches
  /// (built in order, no gradients), with a generator seeded from the run's seed anew for each validation
  /// (the same timesteps and noise every time, and the training generator untouched, so a resumed run
  /// continues exactly). The mean of each figure is logged and appended to metrics.jsonl as "val_<name>"
  /// ("val_loss" for the loss). A module without validation_step is skipped with one warning.
  /// Errors of the lower layers name their own options; fit adds the run config's keys behind them (a gemini
  /// memory::BudgetError ends "(run config: trainer.gemini.device_budget_mb, ...)").
  FitResult fit(TrainingModule& module, data::DataLoader& loader, data::DataLoader* validation,
                const std::string& resume = "", int64_t stop_at_step = 0);

  const TrainerConfig& config() const { return config_; }
  /// True when trainer.optimizer.implementation was auto (config() then shows what it resolved to).
  bool optimizer_auto() const { return optimizer_auto_; }
  torch::Device device() const { return device_; }
  /// This process's rank and the number of processes (known without connecting).
  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  /// The run's process group, connected on first call (throws dist::CommError when the store is unreachable).
  dist::ProcessGroup& process_group();
  /// The strategy of the last fit (null before): memory() and the process group's byte counters.
  const parallel::Strategy* strategy() const { return strategy_.get(); }

 private:
  FitResult run_fit(TrainingModule& module, data::DataLoader& loader, data::DataLoader* validation,
                    const std::string& resume, int64_t stop_at_step);

  bool optimizer_auto_ = false;  // implementation auto: resolved in the constructor, revisited in fit()
  TrainerConfig config_;
  dist::LaunchEnv env_;
  std::shared_ptr<dist::ProcessGroup> group_;
  std::unique_ptr<parallel::Strategy> strategy_;
  torch::Device device_ = torch::kCPU;
};

/// Seed of the generator each validation starts from, for a run seeded with `seed` (a fixed function of it,
/// distinct from the training generator's seed).
uint64_t validation_seed(int64_t seed);

}  // namespace zerodiff::train
