// zerodiff/train/RunConfig.h — a whole training run as zerodiff-train reads it from YAML:
//
//   task: text_to_image        # text_to_image | autoencoder
//   log_level: info
//   trainer: {...}             # TrainerConfig (train/Trainer.h)
//   data: {...}                # DataConfig (data/DataConfig.h)
//   text_to_image: {...}       # TextToImageConfig (train/Modules.h), for task text_to_image
//   autoencoder: {...}         # AutoencoderConfig, for task autoencoder
//
// Every key is documented by the `visit` functions (docs/configuration.md lists them).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "zerodiff/core/Logging.h"
#include "zerodiff/data/DataConfig.h"
#include "zerodiff/nn/Attention.h"
#include "zerodiff/train/Modules.h"
#include "zerodiff/train/Trainer.h"

namespace zerodiff::train {

struct RunConfig {
  Task task = Task::text_to_image;
  log::Level log_level = log::Level::info;
  nn::AttentionBackend attention = nn::AttentionBackend::automatic;
  TrainerConfig trainer;
  data::DataConfig data;
  TextToImageConfig text_to_image;
  AutoencoderConfig autoencoder;

  template <class V>
  void visit(V& v) {
    v("task", task, "What to train");
    v("log_level", log_level, "Log level (ZERODIFF_LOG_LEVEL overrides)");
    v.choice("attention", attention, std::span<const nn::AttentionBackend>(nn::kAttentionPolicies),
             "Attention backend of every model: auto (our fused kernels where they support the call and are the "
             "faster one: CPU float32 / bfloat16 on AVX-512 CPUs (SDPA measured faster on AVX2-only ones), CUDA "
             "float16 / bfloat16 on compute capability >= 8.0 once its self-check passed; head dim <= 256, no mask, "
             "so UNet and small-VAE attention; SDPA otherwise, e.g. CLIP's causal attention), sdpa (ATen's "
             "scaled_dot_product_attention), math (reference). The log says which ran");
    v.required("trainer", trainer, "Training loop settings");
    v.required("data", data, "Dataset and loader");
    v("text_to_image", text_to_image, "Latent diffusion model (task text_to_image)");
    v("autoencoder", autoencoder, "VAE (task autoencoder)");
    // Cross-section checks (reported at the key that enables the feature).
    const bool cached = task == Task::text_to_image && text_to_image.cache_latents;
    v.check(!cached || !data.random_flip, "text_to_image.cache_latents",
            "needs data.random_flip: false (a flipped image has other latents)");
    v.check(!cached || data.center_crop || data.dataset == data::DatasetKind::synthetic, "text_to_image.cache_latents",
            "needs data.center_crop: true (a random crop has other latents)");
    v.check(trainer.val_every == 0 || data.validation_split > 0, "trainer.val_every",
            "needs a validation set: set data.validation_split");
  }
};

/// Loads and validates a run config (ConfigError naming file, line, key on any problem) with overrides.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});

/// The TrainingModule for config.task. Throws ConfigError naming a missing key of the task's section.
std::unique_ptr<TrainingModule> make_module(const RunConfig& config);

/// The datasets and loaders of a run: data.validation_split > 0 holds out a validation set
/// (data::split_dataset with data.seed) read by a loader without training randomness.
struct RunData {
  std::shared_ptr<const data::Dataset> train;
  std::shared_ptr<const data::Dataset> validation;  ///< null without a validation split
  std::unique_ptr<data::DataLoader> train_loader;
  std::unique_ptr<data::DataLoader> validation_loader;  ///< null without a validation split
  /// "4096 training samples (128 batches per epoch), 205 validation samples", for logs.
  std::string summary() const;
};

/// Builds RunData for `rank` of `world_size`. Throws what the datasets' constructors throw (missing
/// folder, malformed metadata ...), before any training.
RunData make_run_data(const RunConfig& config, int rank = 0, int world_size = 1);

/// Parameter counts of one top-level component of a module's model() (e.g. "unet").
struct ComponentSize {
  std::string name;
  int64_t parameters = 0;  ///< elements
  int64_t trainable = 0;   ///< elements in the module's parameter groups
};

/// What `zerodiff-train --dry-run` prints: parameter counts per component and the per-rank memory of the
/// model states for the configured strategy and precision (bytes; activations are not estimated).
struct MemoryEstimate {
  std::vector<ComponentSize> components;
  int64_t parameters = 0, trainable = 0;
  double weights = 0;    ///< every parameter and buffer, fp32
  double gradients = 0;  ///< fp32, trainable parameters
  double optimizer = 0;  ///< AdamW exp_avg + exp_avg_sq, fp32, trainable parameters (this rank's shard in zero1/2)
  double master = 0;     ///< fp32 master-weight shard of zero1/zero2 (0 otherwise)
  double ema = 0;        ///< EMA shadow, fp32, trainable parameters (when trainer.ema.enabled)
  int world_size = 1;    ///< processes the per-rank figures assume
  std::string chunk_layout;  ///< zero3: the chunks it would build (count, size, padding); empty otherwise
  double total() const { return weights + gradients + optimizer + master + ema; }
  /// The human-readable report (a table of components, then the memory lines).
  std::string report(const TrainerConfig& trainer) const;
};

/// Counts and estimates for `module` after configure_model / configure_model_for_dry_run, per rank of
/// `world_size` processes under trainer.strategy (ZeRO's formulas, parallel::zero_memory_formula), fp32 model
/// states (the mixed precisions keep fp32 master weights too).
MemoryEstimate estimate_memory(TrainingModule& module, const TrainerConfig& trainer, int world_size = 1);

/// What a run does beyond its config: zerodiff-train's flags.
struct RunOptions {
  /// "" (start fresh), "latest" (the newest complete checkpoint in trainer.output_dir) or a checkpoint folder.
  std::string resume;
  /// Build the module (architectures only: no weights are read) and the data loader, estimate memory per rank and
  /// report it; train nothing, write nothing.
  bool dry_run = false;
  /// Dry run: the processes to estimate for (0 = this launch's world size). > 1 with trainer.strategy single is a
  /// ConfigError (single runs in one process).
  int dry_run_world_size = 0;
  /// Names the config in the dry run's report ("dry run: config OK (<config_name>)").
  std::string config_name;
  /// Set up process-wide logging from config.log_level as this launch's rank (log::init, which replaces the
  /// current logger and its sinks, log::Capture's included). false: keep the caller's logging.
  bool configure_logging = true;
};

/// What a run did.
struct RunOutcome {
  int rank = 0;                ///< this process's rank (rank 0 reports)
  FitResult fit;               ///< the training run (default-constructed for a dry run)
  std::string dry_run_report;  ///< dry run: the report, ending in a newline (a note when cuda was asked for on a
                               ///< machine without CUDA, "dry run: config OK ...", the component table, the memory
                               ///< per rank, the chunk layout, the data); empty otherwise
};

/// The whole run of `config`, the one path every binary takes (zerodiff-train only parses its arguments and calls
/// this): logging at config.log_level as this launch's rank (unless options.configure_logging is false; it stays
/// set after the run), config.attention as the attention policy for the run's
/// duration (nn::AttentionPolicyScope), the module, the trainer (the device: trainer.accelerator; a dry run asked for
/// cuda on a machine without CUDA estimates on the CPU and says so), the data, then fit or the dry run's estimate.
/// Throws ConfigError for options that contradict the config, and what building the module, the data or the run
/// throws (zerodiff::Error and LibTorch's c10::Error).
RunOutcome run(const RunConfig& config, const RunOptions& options);

/// run(config, {.resume = resume}).fit.
FitResult run(const RunConfig& config, const std::string& resume = "");

}  // namespace zerodiff::train
