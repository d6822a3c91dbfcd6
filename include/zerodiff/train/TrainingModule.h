// zerodiff/train/TrainingModule.h — what the Trainer trains, in the shape of PyTorch Lightning's
// LightningModule: the module owns its model(s) and computes its loss; the Trainer owns the loop,
// optimizer, schedules, EMA, logging, sampling and checkpoints.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/nn/module.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "zerodiff/data/Batch.h"
#include "zerodiff/parallel/Strategy.h"
#include "zerodiff/parallel/UnitHooks.h"

namespace zerodiff::train {

/// Result of one training (or validation) step.
struct StepOutput {
  at::Tensor loss;                     ///< scalar, differentiable (training) — the Trainer calls backward
  std::map<std::string, double> logs;  ///< extra figures to log (e.g. "mse", "kl")
};

/// Context the Trainer hands to each step.
struct StepContext {
  int64_t global_step = 0;  ///< optimizer steps done before this one
  at::Generator generator;  ///< the run's CPU generator (timesteps, noise): saved in checkpoints
  torch::Device device = torch::kCPU;
};

/// A set of trainable parameters optimized with its own peak learning rate (an AdamW parameter group, as
/// Lightning's configure_optimizers returns them; e.g. kohya's unet_lr / text_encoder_lr).
struct ParameterGroup {
  std::string name;                                         ///< for logs, e.g. "unet", "text_encoder"
  std::vector<std::pair<std::string, at::Tensor>> params;  ///< by name (the optimizer state is saved by name)
  std::optional<double> lr;  ///< peak learning rate; none = trainer.optimizer.lr. The LR schedule scales both
};

class TrainingModule {
 public:
  virtual ~TrainingModule() = default;

  /// Builds or loads the model(s) and moves them to `device`. Called once by Trainer::fit before anything
  /// else. Throws on bad config / missing files (nothing has been written yet).
  virtual void configure_model(const torch::Device& device) = 0;

  /// configure_model without reading any weights file: the architectures from their configs with random
  /// weights, for `zerodiff-train --dry-run` (parameter counts, memory estimate). Not for training.
  void configure_model_for_dry_run(const torch::Device& device) {
    read_weights_ = false;
    try {
      configure_model(device);
    } catch (...) {
      read_weights_ = true;
      throw;
    }
    read_weights_ = true;
  }

  /// The root module: its named parameters/buffers are what checkpoints save and restore.
  virtual torch::nn::Module& model() = 0;

  /// Trainable parameters by name (default: every parameter of model() with requires_grad). The default
  /// parameter_groups() puts them in one group; a module that overrides parameter_groups() (as
  /// TextToImageModule does) derives this list from its groups, and overriding only this one then has no effect.
  virtual std::vector<std::pair<std::string, at::Tensor>> trainable_parameters();

  /// The "configure optimizers" hook: AdamW's parameter groups, which the Trainer trains (default: one group,
  /// trainable_parameters(), at the trainer's lr). Every group must be non-empty; no tensor and no name may
  /// appear twice (the optimizer state is saved by name).
  virtual std::vector<ParameterGroup> parameter_groups() { return {ParameterGroup{"all", trainable_parameters(), {}}}; }

  /// Sharding units for trainer.strategy zero3 (DESIGN.md §4): the groups of parameters gathered together
  /// while they run, in execution order; every trainable parameter must be in one. A module that returns units
  /// must call the hooks given to set_unit_hooks around each unit's forward (parallel::run_unit). Default: none,
  /// and the Trainer treats the whole model as one unit around each step (correct; no memory saving during
  /// the step).
  virtual std::vector<parallel::UnitSpec> sharding_units() { return {}; }
  /// Installs the hooks the units call (null removes them). Called by the Trainer after configure_model.
  virtual void set_unit_hooks(parallel::UnitHooks* hooks) { (void)hooks; }

  /// Loss for one micro-batch. The Trainer divides by the accumulation count and calls backward.
  virtual StepOutput training_step(const data::Batch& batch, StepContext& ctx) = 0;

  /// Optional validation on one batch (no gradients). Default: not implemented -> skipped.
  virtual std::optional<StepOutput> validation_step(const data::Batch& batch, StepContext& ctx) { return std::nullopt; }

  /// Optional sample images for `prompts` ([N, 3, H, W] float in [0, 1]) written as a grid every
  /// `sample_every` steps. Default: none.
  virtual std::optional<at::Tensor> sample(const std::vector<std::string>& prompts, int64_t seed) { return std::nullopt; }

  /// Module state beyond model() that checkpoints must carry for an exact resume (running statistics,
  /// fixed sample inputs ...). Saved as module.safetensors; default: none.
  virtual std::map<std::string, at::Tensor> extra_state() { return {}; }
  /// Restores what extra_state() returned. Throws IoError when something needed is missing.
  virtual void load_extra_state(const std::map<std::string, at::Tensor>& state) {}

  /// Writes the exported weights (e.g. a diffusers folder) into `dir`. Called at the end of fit with the
  /// EMA weights in place when EMA is on. Default: a safetensors file of model()'s state.
  virtual void export_to(const std::string& dir);

 protected:
  /// False while configure_model_for_dry_run runs: modules that load weights files skip them.
  bool read_weights_ = true;
};

}  // namespace zerodiff::train
