// zerodiff/models/vae/AutoencoderKLOptions.h — the AutoencoderKL config, mirroring diffusers'
// AutoencoderKL config.json (diffusers 0.42.1 field names and defaults). Same rules as
// UNet2DConditionOptions: wrong JSON types are ConfigError, unsupported values and unknown keys are
// NotImplementedError, both naming the key.
#pragma once

#include <torch/arg.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "zerodiff/nn/Attention.h"

namespace zerodiff::models {

inline constexpr const char* kDownEncoderBlock2D = "DownEncoderBlock2D";
inline constexpr const char* kUpDecoderBlock2D = "UpDecoderBlock2D";

/// Options of AutoencoderKL; defaults are diffusers' constructor defaults.
struct AutoencoderKLOptions {
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(int64_t, out_channels) = 3;
  /// Every entry must be "DownEncoderBlock2D".
  TORCH_ARG(std::vector<std::string>, down_block_types) = std::vector<std::string>{kDownEncoderBlock2D};
  /// Every entry must be "UpDecoderBlock2D".
  TORCH_ARG(std::vector<std::string>, up_block_types) = std::vector<std::string>{kUpDecoderBlock2D};
  TORCH_ARG(std::vector<int64_t>, block_out_channels) = std::vector<int64_t>{64};
  TORCH_ARG(int64_t, layers_per_block) = 1;
  /// "silu" or "swish".
  TORCH_ARG(std::string, act_fn) = "silu";
  TORCH_ARG(int64_t, latent_channels) = 4;
  TORCH_ARG(int64_t, norm_num_groups) = 32;
  /// Image size the model was trained at (informational): {n} = n, {h, w} = [h, w].
  TORCH_ARG(std::vector<int64_t>, sample_size) = std::vector<int64_t>{32};
  /// Latents for the diffusion model are (z - shift_factor) * scaling_factor.
  TORCH_ARG(double, scaling_factor) = 0.18215;
  TORCH_ARG(std::optional<double>, shift_factor) = std::nullopt;
  /// Per-channel latent statistics some pipelines use (not used by the model itself).
  TORCH_ARG(std::optional<std::vector<double>>, latents_mean) = std::nullopt;
  TORCH_ARG(std::optional<std::vector<double>>, latents_std) = std::nullopt;
  /// Pipelines should run this VAE in float32 (not used by the model itself).
  TORCH_ARG(bool, force_upcast) = true;
  TORCH_ARG(bool, use_quant_conv) = true;
  TORCH_ARG(bool, use_post_quant_conv) = true;
  TORCH_ARG(bool, mid_block_add_attention) = true;
  /// Attention implementation (zerodiff's own; not part of config.json).
  TORCH_ARG(nn::AttentionBackend, attention_backend) = nn::AttentionBackend::automatic;

 public:
  /// Reads a diffusers config.json object; see the file comment for the errors.
  static AutoencoderKLOptions from_json(const nlohmann::json& config);
  /// A complete diffusers config.json object ("_class_name": "AutoencoderKL").
  nlohmann::json to_json() const;
  /// Checks consistency and support. Throws ConfigError / NotImplementedError naming the field.
  void validate() const;
};

}  // namespace zerodiff::models
