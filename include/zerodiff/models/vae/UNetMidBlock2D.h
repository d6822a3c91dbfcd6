// zerodiff/models/vae/UNetMidBlock2D.h — resnet, then (attention, resnet) pairs, without time
// embedding: the VAE encoder/decoder middle. Follows diffusers.models.unets.unet_2d_blocks.UNetMidBlock2D
// (0.42.1) with resnet_time_scale_shift "default" and temb_channels None.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "zerodiff/models/unet/Attention.h"
#include "zerodiff/models/unet/ResnetBlock2D.h"

namespace zerodiff::models {

/// Options of UNetMidBlock2D.
struct UNetMidBlock2DOptions {
  explicit UNetMidBlock2DOptions(int64_t in_channels) : in_channels_(in_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(double, dropout) = 0.0;
  /// Number of (attention, resnet) pairs after the first resnet.
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(double, resnet_eps) = 1e-6;
  TORCH_ARG(int64_t, resnet_groups) = 32;
  /// With false the attentions are absent (diffusers' mid_block_add_attention = false).
  TORCH_ARG(bool, add_attention) = true;
  /// Channels per head; nullopt = in_channels (one head, the VAE).
  TORCH_ARG(std::optional<int64_t>, attention_head_dim) = std::nullopt;
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(nn::AttentionBackend, attention_backend) = nn::AttentionBackend::automatic;
};

/// Parameter names: resnets.<i> (num_layers + 1), attentions.<i> (group_norm, to_q, to_k, to_v, to_out.0;
/// all with bias).
class UNetMidBlock2DImpl : public torch::nn::Cloneable<UNetMidBlock2DImpl> {
 public:
  explicit UNetMidBlock2DImpl(UNetMidBlock2DOptions options);
  void reset() override;
  /// hidden_states [B, C, H, W] -> [B, C, H, W].
  at::Tensor forward(const at::Tensor& hidden_states);

  UNetMidBlock2DOptions options;
  torch::nn::ModuleList attentions{nullptr};  // empty without add_attention
  torch::nn::ModuleList resnets{nullptr};
};
TORCH_MODULE(UNetMidBlock2D);

}  // namespace zerodiff::models
