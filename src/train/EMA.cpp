#include "zerodiff/train/EMA.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "zerodiff/core/Error.h"

namespace zerodiff::train {

void check_ema_options(const EMAOptions& o) {
  ZD_CHECK(o.decay >= 0 && o.decay <= 1, "EMA decay must be in [0, 1], got ", o.decay);
  ZD_CHECK(o.min_decay >= 0 && o.min_decay <= o.decay, "EMA min_decay must be in [0, decay = ", o.decay, "], got ",
           o.min_decay);
  ZD_CHECK(o.update_after_step >= 0, "EMA update_after_step must be >= 0, got ", o.update_after_step);
  if (o.use_ema_warmup) {
    ZD_CHECK(o.inv_gamma > 0, "EMA inv_gamma must be > 0 with the warmup schedule, got ", o.inv_gamma);
    ZD_CHECK(o.power > 0, "EMA power must be > 0 with the warmup schedule, got ", o.power);
  }
}

EMA::EMA(const torch::nn::Module& module, EMAOptions options) : options_(options) {
  check_ema_options(options_);
  torch::NoGradGuard no_grad;
  for (const auto& p : module.named_parameters(true)) {
    if (!p.value().requires_grad()) continue;
    shadow_.emplace(p.key(), p.value().detach().to(torch::kFloat).clone());
  }
}

double ema_decay_at(const EMAOptions& options, int64_t step) {
  const int64_t s = std::max<int64_t>(0, step - options.update_after_step - 1);
  if (s <= 0) return 0.0;
  double d;
  if (options.use_ema_warmup) {
    d = 1.0 - std::pow(1.0 + static_cast<double>(s) / options.inv_gamma, -options.power);
  } else {
    d = (1.0 + static_cast<double>(s)) / (10.0 + static_cast<double>(s));
  }
  d = std::min(d, options.decay);
  return std::max(d, options.min_decay);
}

double EMA::update(const torch::nn::Module& module, int64_t step) {
  const double d = decay_at(step);
  torch::NoGradGuard no_grad;
  for (const auto& p : module.named_parameters(true)) {
    auto it = shadow_.find(p.key());
    if (it == shadow_.end()) continue;
    // shadow -= (1 - d) * (shadow - param)
    it->second.sub_((it->second - p.value().detach().to(torch::kFloat)) * (1.0 - d));
  }
  return d;
}

void EMA::copy_to(torch::nn::Module& module) const {
  torch::NoGradGuard no_grad;
  for (auto& p : module.named_parameters(true)) {
    auto it = shadow_.find(p.key());
    if (it != shadow_.end()) p.value().copy_(it->second);
  }
}

void EMA::load(const std::map<std::string, at::Tensor>& shadow) {
  for (auto& [name, t] : shadow_) {
    auto it = shadow.find(name);
    if (it == shadow.end()) throw IoError(zerodiff::str("EMA state: missing weight '", name, "'"));
    if (it->second.sizes() != t.sizes()) {
      throw IoError(zerodiff::str("EMA state: weight '", name, "' has shape ", it->second.sizes().vec(),
                                  ", expected ", t.sizes().vec()));
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : shadow_) t.copy_(shadow.at(name));
}

}  // namespace zerodiff::train
