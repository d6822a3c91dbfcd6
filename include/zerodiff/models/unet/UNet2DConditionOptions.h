// zerodiff/models/unet/UNet2DConditionOptions.h — the UNet2DConditionModel config, mirroring
// diffusers' UNet2DConditionModel config.json (diffusers 0.42.1 field names and defaults).
//
// Design rules: every diffusers config key is either a field here (with diffusers' default) or a key
// zerodiff accepts only at its default value (class_embed_type: null, addition_embed_type: null, ...);
// from_json rejects anything else by name: a wrong JSON type is ConfigError, a valid but unsupported
// value or an unknown key is NotImplementedError. Nothing is silently ignored.
// Int-or-list fields (attention_head_dim, cross_attention_dim, layers_per_block,
// transformer_layers_per_block) are vectors: one element means "the same for every block".
#pragma once

#include <torch/arg.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "zerodiff/nn/Attention.h"

namespace zerodiff::models {

/// Block types zerodiff implements (the Stable Diffusion 1.x/2.x set).
inline constexpr const char* kCrossAttnDownBlock2D = "CrossAttnDownBlock2D";
inline constexpr const char* kDownBlock2D = "DownBlock2D";
inline constexpr const char* kUpBlock2D = "UpBlock2D";
inline constexpr const char* kCrossAttnUpBlock2D = "CrossAttnUpBlock2D";
inline constexpr const char* kUNetMidBlock2DCrossAttn = "UNetMidBlock2DCrossAttn";

/// Options of UNet2DConditionModel; defaults are diffusers' constructor defaults.
struct UNet2DConditionOptions {
  /// Latent size the model was trained at (informational): {} = null, {n} = n, {h, w} = [h, w].
  TORCH_ARG(std::vector<int64_t>, sample_size) = std::vector<int64_t>{};
  TORCH_ARG(int64_t, in_channels) = 4;
  TORCH_ARG(int64_t, out_channels) = 4;
  /// sample = 2 * sample - 1 before conv_in.
  TORCH_ARG(bool, center_input_sample) = false;
  TORCH_ARG(bool, flip_sin_to_cos) = true;
  /// Timesteps' downscale_freq_shift.
  TORCH_ARG(double, freq_shift) = 0.0;
  TORCH_ARG(std::vector<std::string>, down_block_types) = std::vector<std::string>{
      kCrossAttnDownBlock2D, kCrossAttnDownBlock2D, kCrossAttnDownBlock2D, kDownBlock2D};
  TORCH_ARG(std::string, mid_block_type) = kUNetMidBlock2DCrossAttn;
  TORCH_ARG(std::vector<std::string>, up_block_types) = std::vector<std::string>{
      kUpBlock2D, kCrossAttnUpBlock2D, kCrossAttnUpBlock2D, kCrossAttnUpBlock2D};
  TORCH_ARG(std::vector<int64_t>, block_out_channels) = std::vector<int64_t>{320, 640, 1280, 1280};
  /// Resnets per down block (up blocks have one more); int or per-block list.
  TORCH_ARG(std::vector<int64_t>, layers_per_block) = std::vector<int64_t>{2};
  TORCH_ARG(int64_t, downsample_padding) = 1;
  /// output_scale_factor of the mid block's resnets.
  TORCH_ARG(double, mid_block_scale_factor) = 1.0;
  /// Dropout in every resnet.
  TORCH_ARG(double, dropout) = 0.0;
  /// "silu" or "swish" (the same function).
  TORCH_ARG(std::string, act_fn) = "silu";
  TORCH_ARG(int64_t, norm_num_groups) = 32;
  TORCH_ARG(double, norm_eps) = 1e-5;
  /// Text-embedding channels; int or per-block list.
  TORCH_ARG(std::vector<int64_t>, cross_attention_dim) = std::vector<int64_t>{1280};
  /// Transformer blocks per attention; int or per-block list.
  TORCH_ARG(std::vector<int64_t>, transformer_layers_per_block) = std::vector<int64_t>{1};
  /// NUMBER OF HEADS per block (diffusers' historical misnomer: with num_attention_heads unset, which
  /// diffusers 0.42 requires, attention_head_dim is used as the head count and the head dim is
  /// block channels / heads). Int or per-block list: SD 1.x uses 8, SD 2.x [5, 10, 20, 20].
  TORCH_ARG(std::vector<int64_t>, attention_head_dim) = std::vector<int64_t>{8};
  TORCH_ARG(bool, use_linear_projection) = false;
  TORCH_ARG(bool, upcast_attention) = false;
  /// Output size of time_embedding; nullopt = 4 * block_out_channels[0].
  TORCH_ARG(std::optional<int64_t>, time_embedding_dim) = std::nullopt;
  TORCH_ARG(int64_t, conv_in_kernel) = 3;
  TORCH_ARG(int64_t, conv_out_kernel) = 3;
  /// Attention implementation (zerodiff's own; not part of config.json).
  TORCH_ARG(nn::AttentionBackend, attention_backend) = nn::AttentionBackend::automatic;

 public:
  /// Reads a diffusers config.json object. Throws ConfigError naming the key for a wrong JSON type or
  /// inconsistent values (e.g. list lengths), NotImplementedError naming the key and value for
  /// unsupported values (class_embed_type, addition_embed_type, other block types, ...) and unknown keys.
  static UNet2DConditionOptions from_json(const nlohmann::json& config);
  /// A complete diffusers config.json object ("_class_name": "UNet2DConditionModel", every key
  /// diffusers 0.42 writes) that diffusers' UNet2DConditionModel.from_pretrained loads unchanged.
  nlohmann::json to_json() const;
  /// Checks consistency and support (lengths of per-block lists, known block types, divisibility of
  /// channels by heads and groups). Throws ConfigError / NotImplementedError naming the field.
  void validate() const;

  /// Per-block values (index i of the down path), with single values broadcast.
  int64_t heads_at(size_t block) const;
  int64_t cross_attention_dim_at(size_t block) const;
  int64_t layers_per_block_at(size_t block) const;
  int64_t transformer_layers_at(size_t block) const;
};

}  // namespace zerodiff::models
