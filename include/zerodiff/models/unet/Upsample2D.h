// zerodiff/models/unet/Upsample2D.h — nearest 2x upsampling followed by a 3x3 convolution.
// Follows diffusers.models.upsampling.Upsample2D (0.42.1) with use_conv=True, name "conv", interpolate.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace zerodiff::models {

/// Options of Upsample2D.
struct Upsample2DOptions {
  explicit Upsample2DOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// nullopt = channels.
  TORCH_ARG(std::optional<int64_t>, out_channels) = std::nullopt;
};

/// x [B, channels, H, W] -> [B, out_channels, 2H, 2W], or [B, out_channels, h, w] when output_size = {h, w}
/// is given (the UNet passes the skip connection's size when the input is not a multiple of
/// 2^num_upsamplers). Parameter names: conv.
class Upsample2DImpl : public torch::nn::Cloneable<Upsample2DImpl> {
 public:
  explicit Upsample2DImpl(Upsample2DOptions options);
  void reset() override;
  /// Throws zerodiff::Error when x does not have `channels` channels or output_size is not {h, w}.
  at::Tensor forward(const at::Tensor& x, const std::optional<std::vector<int64_t>>& output_size = std::nullopt);

  Upsample2DOptions options;
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

}  // namespace zerodiff::models
