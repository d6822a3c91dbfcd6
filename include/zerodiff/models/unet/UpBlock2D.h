// zerodiff/models/unet/UpBlock2D.h — resnets on (hidden, skip) concatenations, then an optional
// upsampler. Follows diffusers.models.unets.unet_2d_blocks.UpBlock2D (0.42.1), FreeU disabled.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "zerodiff/models/unet/ResnetBlock2D.h"
#include "zerodiff/models/unet/Upsample2D.h"

namespace zerodiff::models {

/// Options of UpBlock2D.
struct UpBlock2DOptions {
  UpBlock2DOptions(int64_t in_channels, int64_t prev_output_channel, int64_t out_channels, int64_t temb_channels)
      : in_channels_(in_channels),
        prev_output_channel_(prev_output_channel),
        out_channels_(out_channels),
        temb_channels_(temb_channels) {}
  /// Channels of the last skip state consumed (the matching down block's input).
  TORCH_ARG(int64_t, in_channels);
  /// Channels of the hidden state entering the block.
  TORCH_ARG(int64_t, prev_output_channel);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, temb_channels);
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(double, resnet_eps) = 1e-6;
  TORCH_ARG(int64_t, resnet_groups) = 32;
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(bool, add_upsample) = true;
};

/// Parameter names: resnets.<i>, upsamplers.0.conv.
class UpBlock2DImpl : public torch::nn::Cloneable<UpBlock2DImpl> {
 public:
  explicit UpBlock2DImpl(UpBlock2DOptions options);
  void reset() override;
  /// hidden_states [B, prev_output_channel, H, W]; res_hidden_states: the last num_layers skip states of
  /// the down path in execution order (consumed from the back); temb [B, temb_channels]; upsample_size
  /// {h, w} forces the upsampler's output size. Returns [B, out_channels, 2H, 2W] (or H, W without an
  /// upsampler). Throws zerodiff::Error when res_hidden_states has fewer than num_layers tensors.
  at::Tensor forward(const at::Tensor& hidden_states, const std::vector<at::Tensor>& res_hidden_states,
                     const at::Tensor& temb,
                     const std::optional<std::vector<int64_t>>& upsample_size = std::nullopt);

  UpBlock2DOptions options;
  /// Recompute each resnet / transformer in backward instead of storing activations (nn::checkpoint).
  bool gradient_checkpointing = false;
  torch::nn::ModuleList resnets{nullptr};
  torch::nn::ModuleList upsamplers{nullptr};  // null without add_upsample
};
TORCH_MODULE(UpBlock2D);

}  // namespace zerodiff::models
