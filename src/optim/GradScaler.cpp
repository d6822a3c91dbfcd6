// Dynamic loss scaling (torch/amp/grad_scaler.py: _unscale_grads_, update with _amp_update_scale_).
#include "zerodiff/optim/GradScaler.h"

#include <ATen/ATen.h>

#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/NonFinite.h"

namespace zerodiff::optim {

GradScaler::GradScaler(GradScalerOptions options) : options_(options), scale_(options.init_scale) {
  ZD_CHECK(options_.init_scale > 0, "GradScaler: init_scale must be > 0, got ", options_.init_scale);
  ZD_CHECK(options_.growth_factor > 1, "GradScaler: growth_factor must be > 1, got ", options_.growth_factor);
  ZD_CHECK(options_.backoff_factor > 0 && options_.backoff_factor < 1, "GradScaler: backoff_factor must be in (0, 1), got ",
           options_.backoff_factor);
  ZD_CHECK(options_.growth_interval >= 1, "GradScaler: growth_interval must be >= 1, got ", options_.growth_interval);
}

at::Tensor GradScaler::scale(const at::Tensor& loss) const { return loss * scale_; }

bool GradScaler::unscale(const std::vector<at::Tensor>& params) {
  const double inv = 1.0 / scale_;
  int64_t nonfinite = 0;
  for (const auto& p : params) {
    at::Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.scalar_type() == at::kFloat || g.scalar_type() == at::kDouble) {
      g.mul_(inv);
    } else {
      g.copy_(g.to(at::kFloat).mul_(inv));  // fp16/bf16 gradients: scale in float32, round once
    }
    nonfinite += kernels::count_nonfinite(g).item<int64_t>();
  }
  return nonfinite > 0;
}

void GradScaler::update(bool found_inf) {
  if (found_inf) {
    scale_ *= options_.backoff_factor;
    growth_tracker_ = 0;
    return;
  }
  if (++growth_tracker_ >= options_.growth_interval) {
    scale_ *= options_.growth_factor;
    growth_tracker_ = 0;
  }
}

std::map<std::string, at::Tensor> GradScaler::state() const {
  return {{"scale", at::scalar_tensor(scale_, at::kDouble)},
          {"growth_tracker", at::scalar_tensor(growth_tracker_, at::kLong)}};
}

void GradScaler::load_state(const std::map<std::string, at::Tensor>& state) {
  for (const char* key : {"scale", "growth_tracker"}) {
    if (!state.count(key)) throw IoError(zerodiff::str("GradScaler state: no '", key, "'"));
  }
  scale_ = state.at("scale").item<double>();
  growth_tracker_ = state.at("growth_tracker").item<int64_t>();
}

}  // namespace zerodiff::optim
