// zerodiff/optim/GradScaler.h — dynamic loss scaling for float16 mixed precision, as torch.amp.GradScaler:
// the loss is multiplied by `scale` before backward; before the optimizer step the gradients are divided by
// it (unscale) and checked for inf/NaN; a step with a non-finite gradient is skipped and the scale backs off
// (x backoff_factor); after growth_interval clean steps in a row the scale grows (x growth_factor).
//
// Multi-process runs must agree on found_inf before step (the distributed strategies reduce it, issue 7);
// here the decision is this process's.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace zerodiff::optim {

struct GradScalerOptions {
  double init_scale = 65536.0;  ///< 2^16, torch's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class GradScaler {
 public:
  /// Throws zerodiff::Error for init_scale <= 0, growth_factor <= 1, backoff_factor outside (0, 1) or
  /// growth_interval < 1, naming the value.
  explicit GradScaler(GradScalerOptions options = {});

  /// loss * scale (same dtype and device as `loss`).
  at::Tensor scale(const at::Tensor& loss) const;
  /// Divides every defined gradient of `params` by the scale in place (in float32 math) and returns whether
  /// any of them holds an inf or NaN (kernels::count_nonfinite). Call once per optimizer step.
  bool unscale(const std::vector<at::Tensor>& params);
  /// After the step (applied or skipped): found_inf -> scale *= backoff_factor and the growth tracker resets;
  /// otherwise the tracker counts, and reaching growth_interval grows the scale and resets it.
  void update(bool found_inf);

  double get_scale() const { return scale_; }
  int64_t growth_tracker() const { return growth_tracker_; }
  const GradScalerOptions& options() const { return options_; }

  /// {"scale": float64 scalar, "growth_tracker": int64 scalar}, for checkpoints.
  std::map<std::string, at::Tensor> state() const;
  /// Restores state(); throws IoError naming the missing entry.
  void load_state(const std::map<std::string, at::Tensor>& state);

 private:
  GradScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
};

}  // namespace zerodiff::optim
