// zerodiff/models/unet/ResnetBlock2D.h — the residual block of the UNet and the VAE.
// Follows diffusers.models.resnet.ResnetBlock2D (0.42.1) with time_embedding_norm "default",
// non_linearity SiLU, pre_norm, no up/down sampling inside the block, conv_shortcut_bias.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>

namespace zerodiff::models {

/// Options of ResnetBlock2D.
struct ResnetBlock2DOptions {
  ResnetBlock2DOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// Size of the time embedding; nullopt = no `time_emb_proj` (the VAE).
  TORCH_ARG(std::optional<int64_t>, temb_channels) = 512;
  /// GroupNorm groups of norm1 (and of norm2 unless groups_out is set).
  TORCH_ARG(int64_t, groups) = 32;
  TORCH_ARG(std::optional<int64_t>, groups_out) = std::nullopt;
  TORCH_ARG(double, eps) = 1e-6;
  TORCH_ARG(double, dropout) = 0.0;
  /// The output is (shortcut + residual) / output_scale_factor.
  TORCH_ARG(double, output_scale_factor) = 1.0;
};

/// norm1 -> SiLU -> conv1 (+ time_emb_proj(SiLU(temb))[:, :, None, None]) -> norm2 -> SiLU -> dropout
/// -> conv2, plus the input (through the 1x1 `conv_shortcut` when in_channels != out_channels).
/// Parameter names: norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut.
class ResnetBlock2DImpl : public torch::nn::Cloneable<ResnetBlock2DImpl> {
 public:
  explicit ResnetBlock2DImpl(ResnetBlock2DOptions options);
  void reset() override;
  /// input [B, in_channels, H, W], temb [B, temb_channels] (undefined when the block has no
  /// time_emb_proj; ignored then) -> [B, out_channels, H, W]. Throws zerodiff::Error when the block has a
  /// time_emb_proj but `temb` is undefined.
  at::Tensor forward(const at::Tensor& input, const at::Tensor& temb = {});

  ResnetBlock2DOptions options;
  torch::nn::GroupNorm norm1{nullptr};
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};  // null without temb_channels
  torch::nn::GroupNorm norm2{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::nn::Conv2d conv2{nullptr};
  torch::nn::Conv2d conv_shortcut{nullptr};  // null when in_channels == out_channels
};
TORCH_MODULE(ResnetBlock2D);

}  // namespace zerodiff::models
