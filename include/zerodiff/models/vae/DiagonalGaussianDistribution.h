// zerodiff/models/vae/DiagonalGaussianDistribution.h — the VAE posterior N(mean, exp(logvar)).
// Follows diffusers.models.autoencoders.vae.DiagonalGaussianDistribution (0.42.1).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace zerodiff::models {

/// A diagonal Gaussian over latents, built from the encoder's moments. A value type (tensors shared).
class DiagonalGaussianDistribution {
 public:
  /// parameters [B, 2C, h, w]: mean = first C channels, logvar = last C clamped to [-30, 20];
  /// std = exp(0.5 logvar), var = exp(logvar). With `deterministic`, std and var are zeros.
  /// Throws zerodiff::Error when parameters is not 4-d with an even channel count.
  explicit DiagonalGaussianDistribution(const at::Tensor& parameters, bool deterministic = false);

  const at::Tensor& parameters() const { return parameters_; }  // [B, 2C, h, w]
  const at::Tensor& mean() const { return mean_; }              // [B, C, h, w]
  const at::Tensor& logvar() const { return logvar_; }          // [B, C, h, w], clamped
  const at::Tensor& std() const { return std_; }                // [B, C, h, w]
  const at::Tensor& var() const { return var_; }                // [B, C, h, w]
  bool deterministic() const { return deterministic_; }

  /// mean + std * noise, with noise [B, C, h, w] given explicitly (any device/dtype convertible).
  /// Throws zerodiff::Error when noise's shape differs from mean's.
  at::Tensor sample(const at::Tensor& noise) const;
  /// mean + std * randn(mean.shape, generator) exactly as diffusers' randn_tensor: a CPU generator
  /// draws on the CPU (then moves to the parameters' device); no generator uses the default one.
  at::Tensor sample(std::optional<at::Generator> generator = std::nullopt) const;
  /// The mean.
  at::Tensor mode() const { return mean_; }
  /// KL(self || N(0, I)) summed over [1, 2, 3] -> [B] (a [1] zero tensor when deterministic).
  at::Tensor kl() const;
  /// KL(self || other) summed over [1, 2, 3] -> [B].
  at::Tensor kl(const DiagonalGaussianDistribution& other) const;
  /// Negative log-likelihood of `sample` summed over `dims` -> [B] (a [1] zero tensor when deterministic).
  at::Tensor nll(const at::Tensor& sample, const std::vector<int64_t>& dims = {1, 2, 3}) const;

 private:
  at::Tensor parameters_, mean_, logvar_, std_, var_;
  bool deterministic_ = false;
};

}  // namespace zerodiff::models
