#include "zerodiff/models/vae/DiagonalGaussianDistribution.h"

#include <torch/torch.h>

#include <cmath>

#include "zerodiff/core/Error.h"

namespace zerodiff::models {

DiagonalGaussianDistribution::DiagonalGaussianDistribution(const at::Tensor& parameters, bool deterministic)
    : parameters_(parameters), deterministic_(deterministic) {
  ZD_CHECK(parameters.defined() && parameters.dim() == 4 && parameters.size(1) % 2 == 0,
           "DiagonalGaussianDistribution: parameters must be [B, 2C, h, w], got ",
           parameters.defined() ? parameters.sizes().vec() : std::vector<int64_t>{});
  const std::vector<at::Tensor> parts = torch::chunk(parameters, 2, 1);
  mean_ = parts[0];
  logvar_ = torch::clamp(parts[1], -30.0, 20.0);
  std_ = torch::exp(0.5 * logvar_);
  var_ = torch::exp(logvar_);
  if (deterministic_) {
    var_ = std_ = torch::zeros_like(mean_, parameters.options());
  }
}

at::Tensor DiagonalGaussianDistribution::sample(const at::Tensor& noise) const {
  ZD_CHECK(noise.defined() && noise.sizes() == mean_.sizes(), "DiagonalGaussianDistribution::sample: noise must be ",
           mean_.sizes().vec(), ", got ", noise.defined() ? noise.sizes().vec() : std::vector<int64_t>{});
  return mean_ + std_ * noise.to(parameters_.device(), parameters_.scalar_type());
}

at::Tensor DiagonalGaussianDistribution::sample(std::optional<at::Generator> generator) const {
  const auto options = parameters_.options();
  at::Tensor noise;
  if (generator.has_value() && generator->defined()) {
    const c10::Device gen_device = generator->device();
    if (gen_device.type() != options.device().type() && gen_device.is_cpu()) {
      noise = at::randn(mean_.sizes(), generator, options.device(c10::kCPU)).to(options.device());
    } else {
      ZD_CHECK(gen_device.type() == options.device().type(), "DiagonalGaussianDistribution::sample: cannot draw a ",
               options.device(), " tensor from a ", gen_device, " generator");
      noise = at::randn(mean_.sizes(), generator, options);
    }
  } else {
    noise = at::randn(mean_.sizes(), options);
  }
  return mean_ + std_ * noise;
}

at::Tensor DiagonalGaussianDistribution::kl() const {
  if (deterministic_) return torch::tensor({0.0f});
  return 0.5 * (torch::pow(mean_, 2) + var_ - 1.0 - logvar_).sum({1, 2, 3});
}

at::Tensor DiagonalGaussianDistribution::kl(const DiagonalGaussianDistribution& other) const {
  if (deterministic_) return torch::tensor({0.0f});
  return 0.5 * (torch::pow(mean_ - other.mean_, 2) / other.var_ + var_ / other.var_ - 1.0 - logvar_ + other.logvar_)
                   .sum({1, 2, 3});
}

at::Tensor DiagonalGaussianDistribution::nll(const at::Tensor& sample, const std::vector<int64_t>& dims) const {
  if (deterministic_) return torch::tensor({0.0f});
  const double logtwopi = std::log(2.0 * M_PI);
  return 0.5 * (logtwopi + logvar_ + torch::pow(sample - mean_, 2) / var_).sum(dims);
}

}  // namespace zerodiff::models
