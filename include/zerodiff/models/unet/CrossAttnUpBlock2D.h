// zerodiff/models/unet/CrossAttnUpBlock2D.h — (resnet, transformer) pairs on (hidden, skip)
// concatenations, then an optional upsampler. Follows
// diffusers.models.unets.unet_2d_blocks.CrossAttnUpBlock2D (0.42.1), FreeU disabled.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "zerodiff/models/unet/ResnetBlock2D.h"
#include "zerodiff/models/unet/Transformer2DModel.h"
#include "zerodiff/models/unet/Upsample2D.h"

namespace zerodiff::models {

/// Options of CrossAttnUpBlock2D (fields as UpBlock2DOptions plus the attention ones of
/// CrossAttnDownBlock2DOptions).
struct CrossAttnUpBlock2DOptions {
  CrossAttnUpBlock2DOptions(int64_t in_channels, int64_t prev_output_channel, int64_t out_channels,
                            int64_t temb_channels)
      : in_channels_(in_channels),
        prev_output_channel_(prev_output_channel),
        out_channels_(out_channels),
        temb_channels_(temb_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, prev_output_channel);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, temb_channels);
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(std::vector<int64_t>, transformer_layers_per_block) = std::vector<int64_t>{1};
  TORCH_ARG(double, resnet_eps) = 1e-6;
  TORCH_ARG(int64_t, resnet_groups) = 32;
  TORCH_ARG(int64_t, num_attention_heads) = 1;
  TORCH_ARG(int64_t, cross_attention_dim) = 1280;
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(bool, add_upsample) = true;
  TORCH_ARG(bool, use_linear_projection) = false;
  TORCH_ARG(bool, upcast_attention) = false;
  TORCH_ARG(nn::AttentionBackend, attention_backend) = nn::AttentionBackend::automatic;
};

/// Parameter names: resnets.<i>, attentions.<i>, upsamplers.0.conv.
class CrossAttnUpBlock2DImpl : public torch::nn::Cloneable<CrossAttnUpBlock2DImpl> {
 public:
  explicit CrossAttnUpBlock2DImpl(CrossAttnUpBlock2DOptions options);
  void reset() override;
  /// As UpBlock2D::forward, plus encoder_hidden_states [B, S, cross_attention_dim].
  at::Tensor forward(const at::Tensor& hidden_states, const std::vector<at::Tensor>& res_hidden_states,
                     const at::Tensor& temb, const at::Tensor& encoder_hidden_states,
                     const std::optional<std::vector<int64_t>>& upsample_size = std::nullopt);

  CrossAttnUpBlock2DOptions options;
  /// Recompute each resnet / transformer in backward instead of storing activations (nn::checkpoint).
  bool gradient_checkpointing = false;
  torch::nn::ModuleList resnets{nullptr};
  torch::nn::ModuleList attentions{nullptr};
  torch::nn::ModuleList upsamplers{nullptr};
};
TORCH_MODULE(CrossAttnUpBlock2D);

}  // namespace zerodiff::models
