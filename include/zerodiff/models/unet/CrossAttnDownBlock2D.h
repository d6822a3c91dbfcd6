// zerodiff/models/unet/CrossAttnDownBlock2D.h — (resnet, transformer) pairs then an optional
// downsampler. Follows diffusers.models.unets.unet_2d_blocks.CrossAttnDownBlock2D (0.42.1) with
// dual_cross_attention / only_cross_attention False and attention_type "default".
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "zerodiff/models/unet/Downsample2D.h"
#include "zerodiff/models/unet/ResnetBlock2D.h"
#include "zerodiff/models/unet/Transformer2DModel.h"

namespace zerodiff::models {

/// Options of CrossAttnDownBlock2D.
struct CrossAttnDownBlock2DOptions {
  CrossAttnDownBlock2DOptions(int64_t in_channels, int64_t out_channels, int64_t temb_channels)
      : in_channels_(in_channels), out_channels_(out_channels), temb_channels_(temb_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, temb_channels);
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(int64_t, num_layers) = 1;
  /// Transformer blocks per attention: one entry (used for every layer) or num_layers entries.
  TORCH_ARG(std::vector<int64_t>, transformer_layers_per_block) = std::vector<int64_t>{1};
  TORCH_ARG(double, resnet_eps) = 1e-6;
  TORCH_ARG(int64_t, resnet_groups) = 32;
  /// Number of heads; the head dim is out_channels / num_attention_heads.
  TORCH_ARG(int64_t, num_attention_heads) = 1;
  TORCH_ARG(int64_t, cross_attention_dim) = 1280;
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(int64_t, downsample_padding) = 1;
  TORCH_ARG(bool, add_downsample) = true;
  TORCH_ARG(bool, use_linear_projection) = false;
  TORCH_ARG(bool, upcast_attention) = false;
  TORCH_ARG(nn::AttentionBackend, attention_backend) = nn::AttentionBackend::automatic;
};

/// Parameter names: resnets.<i>, attentions.<i>, downsamplers.0.conv.
class CrossAttnDownBlock2DImpl : public torch::nn::Cloneable<CrossAttnDownBlock2DImpl> {
 public:
  explicit CrossAttnDownBlock2DImpl(CrossAttnDownBlock2DOptions options);
  void reset() override;
  /// hidden_states [B, in_channels, H, W], temb [B, temb_channels], encoder_hidden_states
  /// [B, S, cross_attention_dim] -> (output, skip states) as DownBlock2D.
  std::pair<at::Tensor, std::vector<at::Tensor>> forward(const at::Tensor& hidden_states, const at::Tensor& temb,
                                                         const at::Tensor& encoder_hidden_states);

  CrossAttnDownBlock2DOptions options;
  /// Recompute each resnet / transformer in backward instead of storing activations (nn::checkpoint).
  bool gradient_checkpointing = false;
  torch::nn::ModuleList resnets{nullptr};
  torch::nn::ModuleList attentions{nullptr};
  torch::nn::ModuleList downsamplers{nullptr};  // null without add_downsample
};
TORCH_MODULE(CrossAttnDownBlock2D);

}  // namespace zerodiff::models
