// zerodiff/models/LatentDiffusion.h — the latent-diffusion training objective, as diffusers'
// examples/text_to_image/train_text_to_image.py: uniform timesteps, Gaussian noise (optional noise offset),
// epsilon or v-prediction targets, MSE with optional min-SNR-gamma weighting (Hang et al. 2023,
// "Efficient Diffusion Training via Min-SNR Weighting Strategy", diffusers' compute_snr).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

#include "zerodiff/models/schedulers/NoiseScheduler.h"
#include "zerodiff/models/unet/UNet2DConditionModel.h"

namespace zerodiff::models {

struct DiffusionLossOptions {
  PredictionType prediction_type = PredictionType::epsilon;  ///< epsilon or v_prediction (the scheduler's, unless overridden)
  double noise_offset = 0.0;                 ///< noise += offset * N(0, 1) of shape [B, C, 1, 1]
  std::optional<double> snr_gamma;           ///< min-SNR-gamma weighting when set (5.0 is the paper's)
};

/// SNR(t) = alphas_cumprod[t] / (1 - alphas_cumprod[t]) for timesteps [B] int64 -> [B] float32.
at::Tensor compute_snr(const at::Tensor& alphas_cumprod, const at::Tensor& timesteps);

/// Everything one loss evaluation drew, for tests and logging.
struct DiffusionLossOutput {
  at::Tensor loss;       ///< scalar float32
  at::Tensor timesteps;  ///< [B] int64
  at::Tensor noise;      ///< [B, C, h, w]
};

/// The loss for clean `latents` [B, C, h, w] (already scaled by the VAE scaling factor) conditioned on
/// `encoder_hidden_states` [B, S, D]. Timesteps ~ U{0..T-1} and noise ~ N(0, 1) are drawn from `generator`
/// (CPU) in this order: timesteps, noise, offset noise. Throws zerodiff::Error for a prediction type other
/// than epsilon / v_prediction, or mismatched batch sizes.
DiffusionLossOutput diffusion_loss(UNet2DConditionModel& unet, const NoiseScheduler& scheduler,
                                   const at::Tensor& latents, const at::Tensor& encoder_hidden_states,
                                   at::Generator& generator, const DiffusionLossOptions& options);

}  // namespace zerodiff::models
