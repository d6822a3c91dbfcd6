// zerodiff/models/vae/AutoencoderKL.h — the Stable Diffusion VAE.
// Follows diffusers.models.autoencoders.autoencoder_kl.AutoencoderKL (0.42.1) without slicing or
// tiling. Module names equal diffusers' state-dict keys.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <string>
#include <vector>

#include "zerodiff/models/vae/AutoencoderKLOptions.h"
#include "zerodiff/models/vae/Decoder.h"
#include "zerodiff/models/vae/DiagonalGaussianDistribution.h"
#include "zerodiff/models/vae/Encoder.h"
#include "zerodiff/nn/Unit.h"

namespace zerodiff::models {

/// Parameter names: encoder.*, decoder.*, quant_conv, post_quant_conv (each conv only when enabled).
/// Parameters are float32 on CPU after construction.
class AutoencoderKLImpl : public torch::nn::Cloneable<AutoencoderKLImpl> {
 public:
  /// Throws ConfigError / NotImplementedError from options.validate().
  explicit AutoencoderKLImpl(AutoencoderKLOptions options);
  void reset() override;

  /// x [B, in_channels, H, W] (images in [-1, 1]) -> posterior over [B, latent_channels, H/f, W/f],
  /// f = 2^(len(block_out_channels) - 1). Throws zerodiff::Error on a wrong input shape.
  DiagonalGaussianDistribution encode(const at::Tensor& x);
  /// z [B, latent_channels, h, w] (unscaled VAE latents) -> [B, out_channels, h*f, w*f].
  at::Tensor decode(const at::Tensor& z);
  /// decode(sample_posterior ? encode(x).sample(generator) : encode(x).mode()).
  at::Tensor forward(const at::Tensor& x, bool sample_posterior = false,
                     std::optional<at::Generator> generator = std::nullopt);

  /// VAE latents -> diffusion latents: (z - shift_factor) * scaling_factor (no shift when unset).
  at::Tensor scale_latents(const at::Tensor& z) const;
  /// Diffusion latents -> VAE latents: z / scaling_factor + shift_factor.
  at::Tensor unscale_latents(const at::Tensor& z) const;
  /// Images [B, C, H, W] -> diffusion latents: scale_latents(encode(x).sample(generator)), or of the
  /// posterior mode when !sample (what training scripts feed the UNet).
  at::Tensor to_latents(const at::Tensor& x, std::optional<at::Generator> generator = std::nullopt,
                        bool sample = true);
  /// Diffusion latents -> images: decode(unscale_latents(z)).
  at::Tensor from_latents(const at::Tensor& z);

  /// Sharding units in execution order: "encoder.conv_in", "encoder.down_blocks.<i>", "encoder.mid_block",
  /// "encoder.head" (conv_norm_out + conv_out), "quant_conv", "post_quant_conv", "decoder.conv_in",
  /// "decoder.mid_block", "decoder.up_blocks.<i>", "decoder.head". Every parameter is in one unit.
  /// The grouping modules of the heads are built on each call (cheap; they share parameters).
  std::vector<nn::Unit> units() const;

  AutoencoderKLOptions options;
  Encoder encoder{nullptr};
  Decoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr};       // null without use_quant_conv
  torch::nn::Conv2d post_quant_conv{nullptr};  // null without use_post_quant_conv
};
TORCH_MODULE(AutoencoderKL);

/// Builds an AutoencoderKL from a diffusers folder and loads the weights strictly (float32, CPU).
/// Errors as unet_from_pretrained.
AutoencoderKL vae_from_pretrained(const std::string& dir, const std::string& variant = "");

/// Writes `<dir>/config.json` and `<dir>/diffusion_pytorch_model.safetensors` for diffusers.
void save_pretrained(const AutoencoderKL& model, const std::string& dir);

}  // namespace zerodiff::models
