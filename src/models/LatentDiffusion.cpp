#include "zerodiff/models/LatentDiffusion.h"

#include <ATen/ATen.h>

#include "zerodiff/core/Error.h"

namespace zerodiff::models {

at::Tensor compute_snr(const at::Tensor& alphas_cumprod, const at::Tensor& timesteps) {
  const at::Tensor ac = alphas_cumprod.to(at::kFloat);
  const at::Tensor t = timesteps.to(ac.device(), at::kLong);
  const at::Tensor alpha = ac.index_select(0, t).pow(0.5);
  const at::Tensor sigma = (1.0 - ac.index_select(0, t)).pow(0.5);
  return (alpha / sigma).pow(2);
}

DiffusionLossOutput diffusion_loss(UNet2DConditionModel& unet, const NoiseScheduler& scheduler,
                                   const at::Tensor& latents, const at::Tensor& encoder_hidden_states,
                                   at::Generator& generator, const DiffusionLossOptions& options) {
  ZD_CHECK(latents.dim() == 4, "diffusion_loss: latents must be [B, C, h, w], got ", latents.sizes());
  ZD_CHECK(encoder_hidden_states.size(0) == latents.size(0), "diffusion_loss: ", latents.size(0),
           " latents but ", encoder_hidden_states.size(0), " text embeddings");
  const PredictionType p = options.prediction_type;
  ZD_CHECK(p == PredictionType::epsilon || p == PredictionType::v_prediction,
           "diffusion_loss: prediction_type must be epsilon or v_prediction, got '", p, "'");
  const int64_t B = latents.size(0);
  const auto cpu_f32 = at::TensorOptions().dtype(at::kFloat);
  // Draw on the CPU generator (device independent, resumable), then move.
  const at::Tensor timesteps = at::randint(0, scheduler.config().num_train_timesteps, {B}, generator,
                                           at::TensorOptions().dtype(at::kLong));
  at::Tensor noise = at::randn(latents.sizes(), generator, cpu_f32);
  if (options.noise_offset != 0) {
    noise = noise + options.noise_offset * at::randn({B, latents.size(1), 1, 1}, generator, cpu_f32);
  }
  noise = noise.to(latents.device(), latents.scalar_type());
  const at::Tensor t_dev = timesteps.to(latents.device());
  const at::Tensor noisy = scheduler.add_noise(latents, noise, t_dev);
  const at::Tensor target = p == PredictionType::epsilon ? noise : scheduler.get_velocity(latents, noise, t_dev);
  const at::Tensor pred = unet->forward(noisy, t_dev, encoder_hidden_states);
  at::Tensor loss;
  if (!options.snr_gamma) {
    loss = at::mse_loss(pred.to(at::kFloat), target.to(at::kFloat));
  } else {
    const at::Tensor snr = compute_snr(scheduler.alphas_cumprod(), timesteps).to(latents.device());
    at::Tensor weights = at::minimum(snr, at::full_like(snr, *options.snr_gamma));
    weights = p == PredictionType::epsilon ? weights / snr : weights / (snr + 1);
    // SNR = 0 (the last timestep of a zero-terminal-SNR schedule) gives 0/0 for epsilon: weight 1 there, as
    // diffusers' newer training scripts do.
    weights = at::where(snr == 0, at::ones_like(weights), weights);
    const at::Tensor per_sample = at::mse_loss(pred.to(at::kFloat), target.to(at::kFloat), at::Reduction::None)
                                      .mean({1, 2, 3});
    loss = (per_sample * weights).mean();
  }
  return {loss, timesteps, noise};
}

}  // namespace zerodiff::models
