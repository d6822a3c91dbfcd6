// zerodiff/train/EMA.h — exponential moving average of trained weights, as diffusers' EMAModel
// (diffusers/training_utils.py): per update, decay_t = clamp((1 + s) / (10 + s), min_decay, decay) with
// s = step - update_after_step - 1 (or the inv_gamma/power warmup form), 0 for s <= 0; then
// shadow -= (1 - decay_t) * (shadow - param). Shadow weights are fp32 copies on the parameters' device.
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

class EMA {
 public:
  /// Snapshots `module`'s trainable parameters (fp32 copies). Buffers are copied, not averaged.
  EMA(const torch::nn::Module& module, EMAOptions options);

  /// The decay used by the update at optimisation step `step` (1-based count of updates so far).
  double decay_at(int64_t step) const;
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
