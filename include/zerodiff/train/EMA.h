// zerodiff/train/EMA.h — exponential moving average of trained weights, as diffusers' EMAModel
// (diffusers/training_utils.py): per update, decay_t = clamp((1 + s) / (10 + s), min_decay, decay) with
// s = step - update_after_step - 1 (or the inv_gamma/power warmup form), 0 for s <= 0; then
// shadow -= (1 - decay_t) * (shadow - param). Shadow weights are fp32 copies on the parameters' device.
// Under zero3 / gemini the Trainer does not use this class: the strategy keeps the shadow sharded like its master
// weights (parallel::Strategy::sharded_ema) and the Trainer feeds it ema_decay_at(), the same schedule.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <string>

namespace zerodiff::train {

struct EMAOptions {
  double decay = 0.9999;
  double min_decay = 0.0;
  int64_t update_after_step = 0;
  bool use_ema_warmup = false;  ///< decay_t = 1 - (1 + s / inv_gamma)^-power
  double inv_gamma = 1.0;
  double power = 2.0 / 3.0;
};

/// Checks `options`: decay in [0, 1], min_decay in [0, decay], update_after_step >= 0, and with use_ema_warmup
/// inv_gamma > 0 and power > 0. Throws zerodiff::Error naming the field and its value. Called by EMA's
/// constructor and by the Trainer before a sharded EMA starts.
void check_ema_options(const EMAOptions& options);

/// The decay of the EMA update after optimisation step `step` (1-based count of updates so far), as diffusers'
/// EMAModel.get_decay: s = step - update_after_step - 1; 0 for s <= 0; else (1 + s) / (10 + s), or with
/// use_ema_warmup 1 - (1 + s / inv_gamma)^-power; then clamped to [min_decay, decay]. Dimensionless, in [0, 1].
/// Shared by EMA (whole weights) and the sharded EMA of zero3 / gemini, so both follow one schedule.
double ema_decay_at(const EMAOptions& options, int64_t step);

class EMA {
 public:
  /// Snapshots `module`'s trainable parameters (fp32 copies). Buffers are copied, not averaged. Throws
  /// zerodiff::Error for invalid options (check_ema_options).
  EMA(const torch::nn::Module& module, EMAOptions options);

  /// The decay used by the update at optimisation step `step` (1-based count of updates so far):
  /// ema_decay_at(options, step).
  double decay_at(int64_t step) const { return ema_decay_at(options_, step); }
  /// One update after optimiser step number `step` (1-based); returns the decay used.
  double update(const torch::nn::Module& module, int64_t step);
  /// Writes the shadow weights into `module` (e.g. before export or sampling).
  void copy_to(torch::nn::Module& module) const;
  /// Shadow weights by parameter name (for checkpoints).
  const std::map<std::string, at::Tensor>& shadow() const { return shadow_; }
  /// Restores shadow weights saved from shadow(); throws IoError naming missing/mismatched names.
  void load(const std::map<std::string, at::Tensor>& shadow);

 private:
  EMAOptions options_;
  std::map<std::string, at::Tensor> shadow_;
};

}  // namespace zerodiff::train
