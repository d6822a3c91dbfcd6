// zerodiff/models/unet/DownBlock2D.h — resnets then an optional downsampler, no attention.
// Follows diffusers.models.unets.unet_2d_blocks.DownBlock2D (0.42.1).
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

namespace zerodiff::models {

/// Options of DownBlock2D.
struct DownBlock2DOptions {
  DownBlock2DOptions(int64_t in_channels, int64_t out_channels, int64_t temb_channels)
      : in_channels_(in_channels), out_channels_(out_channels), temb_channels_(temb_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, temb_channels);
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(double, resnet_eps) = 1e-6;
  TORCH_ARG(int64_t, resnet_groups) = 32;
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(bool, add_downsample) = true;
  TORCH_ARG(int64_t, downsample_padding) = 1;
};

/// Parameter names: resnets.<i>, downsamplers.0.conv.
class DownBlock2DImpl : public torch::nn::Cloneable<DownBlock2DImpl> {
 public:
  explicit DownBlock2DImpl(DownBlock2DOptions options);
  void reset() override;
  /// hidden_states [B, in_channels, H, W], temb [B, temb_channels] -> (output, skip states): the output
  /// [B, out_channels, H', W'] (H' = ceil(H/2) with a downsampler) and one skip tensor per resnet plus
  /// one for the downsampler, in execution order.
  std::pair<at::Tensor, std::vector<at::Tensor>> forward(const at::Tensor& hidden_states, const at::Tensor& temb);

  DownBlock2DOptions options;
  /// Recompute each resnet / transformer in backward instead of storing activations (nn::checkpoint).
  bool gradient_checkpointing = false;
  torch::nn::ModuleList resnets{nullptr};
  torch::nn::ModuleList downsamplers{nullptr};  // null without add_downsample
};
TORCH_MODULE(DownBlock2D);

}  // namespace zerodiff::models
