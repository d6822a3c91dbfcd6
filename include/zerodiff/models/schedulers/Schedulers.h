// zerodiff/models/schedulers/Schedulers.h — DDPM, DDIM and Euler discrete schedulers (diffusers 0.42).
#pragma once

#include "zerodiff/models/schedulers/NoiseScheduler.h"

namespace zerodiff::models {

/// Denoising Diffusion Probabilistic Models (Ho et al. 2020). Follows diffusers' DDPMScheduler:
/// step() adds sqrt(variance) * noise for t > 0 (variance_type fixed_small / fixed_small_log / fixed_large /
/// fixed_large_log); prev timestep is the next entry of timesteps() after set_timesteps, else t - 1.
class DDPMScheduler : public NoiseScheduler {
 public:
  /// Throws ConfigError / NotImplementedError for unsupported config values (thresholding, learned variance).
  explicit DDPMScheduler(SchedulerConfig config);
  void set_timesteps(int64_t n) override;
  SchedulerStepOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                           const SchedulerStepOptions& options = {}) override;

 private:
  int64_t previous_timestep(int64_t t) const;
};

/// Denoising Diffusion Implicit Models (Song et al. 2021). Follows diffusers' DDIMScheduler, including
/// prev_t = t - T / n for every spacing, final_alpha_cumprod from set_alpha_to_one, and eta noise.
class DDIMScheduler : public NoiseScheduler {
 public:
  explicit DDIMScheduler(SchedulerConfig config);
  void set_timesteps(int64_t n) override;
  /// Throws zerodiff::Error when called before set_timesteps.
  SchedulerStepOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                           const SchedulerStepOptions& options = {}) override;

 private:
  float final_alpha_cumprod_ = 1.0f;
};

/// Euler sampler in the sigma parameterisation (Karras et al. 2022, Algorithm 2), as diffusers'
/// EulerDiscreteScheduler: sigmas = sqrt((1 - ac) / ac) interpolated at the (float) timesteps, a final 0,
/// model input scaled by 1 / sqrt(sigma^2 + 1). s_churn > 0 is not supported (deterministic sampler).
class EulerDiscreteScheduler : public NoiseScheduler {
 public:
  explicit EulerDiscreteScheduler(SchedulerConfig config);
  void set_timesteps(int64_t n) override;
  double init_noise_sigma() const override;
  at::Tensor scale_model_input(const at::Tensor& sample, double timestep) override;
  SchedulerStepOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                           const SchedulerStepOptions& options = {}) override;
  /// [n + 1] float32, the last one 0 (or sigma_min with final_sigmas_type sigma_min).
  const at::Tensor& sigmas() const { return sigmas_; }
  /// Starts sampling at position `index` of timesteps() (image-to-image; diffusers' set_begin_index).
  void set_begin_index(int64_t index);

 private:
  int64_t index_for_timestep(double timestep) const;
  void init_step_index(double timestep);
  at::Tensor sigmas_;
  std::optional<int64_t> step_index_, begin_index_;
};

}  // namespace zerodiff::models
