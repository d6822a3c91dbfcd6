// zerodiff/models/vae/DownEncoderBlock2D.h — resnets (no time embedding) then an optional
// downsampler. Follows diffusers.models.unets.unet_2d_blocks.DownEncoderBlock2D (0.42.1); the VAE
// encoder uses downsample_padding 0, i.e. the asymmetric (0, 1, 0, 1) pad before the stride-2 conv.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "zerodiff/models/unet/Downsample2D.h"
#include "zerodiff/models/unet/ResnetBlock2D.h"

namespace zerodiff::models {

/// Options of DownEncoderBlock2D.
struct DownEncoderBlock2DOptions {
  DownEncoderBlock2DOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(double, resnet_eps) = 1e-6;
  TORCH_ARG(int64_t, resnet_groups) = 32;
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(bool, add_downsample) = true;
  TORCH_ARG(int64_t, downsample_padding) = 1;
};

/// Parameter names: resnets.<i>, downsamplers.0.conv.
class DownEncoderBlock2DImpl : public torch::nn::Cloneable<DownEncoderBlock2DImpl> {
 public:
  explicit DownEncoderBlock2DImpl(DownEncoderBlock2DOptions options);
  void reset() override;
  /// hidden_states [B, in_channels, H, W] -> [B, out_channels, H', W'] (halved with a downsampler).
  at::Tensor forward(const at::Tensor& hidden_states);

  DownEncoderBlock2DOptions options;
  torch::nn::ModuleList resnets{nullptr};
  torch::nn::ModuleList downsamplers{nullptr};
};
TORCH_MODULE(DownEncoderBlock2D);

}  // namespace zerodiff::models
