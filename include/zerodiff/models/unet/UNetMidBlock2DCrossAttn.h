// zerodiff/models/unet/UNetMidBlock2DCrossAttn.h — resnet, then (transformer, resnet) pairs.
// Follows diffusers.models.unets.unet_2d_blocks.UNetMidBlock2DCrossAttn (0.42.1) with
// dual_cross_attention False, attention_type "default", resnet_time_scale_shift "default".
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "zerodiff/models/unet/ResnetBlock2D.h"
#include "zerodiff/models/unet/Transformer2DModel.h"

namespace zerodiff::models {

/// Options of UNetMidBlock2DCrossAttn.
struct UNetMidBlock2DCrossAttnOptions {
  UNetMidBlock2DCrossAttnOptions(int64_t in_channels, int64_t temb_channels)
      : in_channels_(in_channels), temb_channels_(temb_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, temb_channels);
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(std::vector<int64_t>, transformer_layers_per_block) = std::vector<int64_t>{1};
  TORCH_ARG(double, resnet_eps) = 1e-6;
  TORCH_ARG(int64_t, resnet_groups) = 32;
  TORCH_ARG(int64_t, num_attention_heads) = 1;
  /// The resnets' output_scale_factor (config key `mid_block_scale_factor`).
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(int64_t, cross_attention_dim) = 1280;
  TORCH_ARG(bool, use_linear_projection) = false;
  TORCH_ARG(bool, upcast_attention) = false;
  TORCH_ARG(nn::AttentionBackend, attention_backend) = nn::AttentionBackend::automatic;
};

/// Parameter names: resnets.<i> (num_layers + 1), attentions.<i> (num_layers).
class UNetMidBlock2DCrossAttnImpl : public torch::nn::Cloneable<UNetMidBlock2DCrossAttnImpl> {
 public:
  explicit UNetMidBlock2DCrossAttnImpl(UNetMidBlock2DCrossAttnOptions options);
  void reset() override;
  /// hidden_states [B, C, H, W], temb [B, temb_channels], encoder_hidden_states [B, S, cross_attention_dim]
  /// -> [B, C, H, W].
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& temb,
                     const at::Tensor& encoder_hidden_states);

  UNetMidBlock2DCrossAttnOptions options;
  /// Recompute each resnet / transformer in backward instead of storing activations (nn::checkpoint).
  bool gradient_checkpointing = false;
  torch::nn::ModuleList resnets{nullptr};
  torch::nn::ModuleList attentions{nullptr};
};
TORCH_MODULE(UNetMidBlock2DCrossAttn);

}  // namespace zerodiff::models
