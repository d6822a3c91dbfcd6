// zerodiff/models/unet/Downsample2D.h — stride-2 3x3 convolution.
// Follows diffusers.models.downsampling.Downsample2D (0.42.1) with use_conv=True, name "op" (the
// convolution is registered as `conv`), no norm.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>

namespace zerodiff::models {

/// Options of Downsample2D.
struct Downsample2DOptions {
  explicit Downsample2DOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// nullopt = channels.
  TORCH_ARG(std::optional<int64_t>, out_channels) = std::nullopt;
  /// Convolution padding. 0 means diffusers' asymmetric pad (0, 1, 0, 1) before an unpadded conv
  /// (the VAE encoder); the UNet uses 1 (config key `downsample_padding`).
  TORCH_ARG(int64_t, padding) = 1;
};

/// x [B, channels, H, W] -> [B, out_channels, ceil(H/2), ceil(W/2)] (padding 1) or floor(H/2) (padding 0).
class Downsample2DImpl : public torch::nn::Cloneable<Downsample2DImpl> {
 public:
  explicit Downsample2DImpl(Downsample2DOptions options);
  void reset() override;
  /// Throws zerodiff::Error when x does not have `channels` channels.
  at::Tensor forward(const at::Tensor& x);

  Downsample2DOptions options;
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

}  // namespace zerodiff::models
