// zerodiff/models/vae/UpDecoderBlock2D.h — resnets (no time embedding) then an optional upsampler.
// Follows diffusers.models.unets.unet_2d_blocks.UpDecoderBlock2D (0.42.1) with
// resnet_time_scale_shift "group" (the VAE decoder's; equivalent to "default" without temb).
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "zerodiff/models/unet/ResnetBlock2D.h"
#include "zerodiff/models/unet/Upsample2D.h"

namespace zerodiff::models {

/// Options of UpDecoderBlock2D.
struct UpDecoderBlock2DOptions {
  UpDecoderBlock2DOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(double, resnet_eps) = 1e-6;
  TORCH_ARG(int64_t, resnet_groups) = 32;
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(bool, add_upsample) = true;
};

/// Parameter names: resnets.<i>, upsamplers.0.conv.
class UpDecoderBlock2DImpl : public torch::nn::Cloneable<UpDecoderBlock2DImpl> {
 public:
  explicit UpDecoderBlock2DImpl(UpDecoderBlock2DOptions options);
  void reset() override;
  /// hidden_states [B, in_channels, H, W] -> [B, out_channels, H', W'] (doubled with an upsampler).
  at::Tensor forward(const at::Tensor& hidden_states);

  UpDecoderBlock2DOptions options;
  torch::nn::ModuleList resnets{nullptr};
  torch::nn::ModuleList upsamplers{nullptr};
};
TORCH_MODULE(UpDecoderBlock2D);

}  // namespace zerodiff::models
