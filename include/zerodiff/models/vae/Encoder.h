// zerodiff/models/vae/Encoder.h — the VAE encoder: image -> latent moments.
// Follows diffusers.models.autoencoders.vae.Encoder (0.42.1) with DownEncoderBlock2D blocks, double_z.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "zerodiff/models/vae/DownEncoderBlock2D.h"
#include "zerodiff/models/vae/UNetMidBlock2D.h"

namespace zerodiff::models {

/// Options of Encoder.
struct EncoderOptions {
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Latent channels; conv_out has 2 * out_channels (mean and logvar) with double_z.
  TORCH_ARG(int64_t, out_channels) = 3;
  TORCH_ARG(std::vector<int64_t>, block_out_channels) = std::vector<int64_t>{64};
  TORCH_ARG(int64_t, layers_per_block) = 2;
  TORCH_ARG(int64_t, norm_num_groups) = 32;
  TORCH_ARG(bool, double_z) = true;
  TORCH_ARG(bool, mid_block_add_attention) = true;
  TORCH_ARG(nn::AttentionBackend, attention_backend) = nn::AttentionBackend::automatic;
};

/// conv_in -> down_blocks -> mid_block -> conv_norm_out -> SiLU -> conv_out.
class EncoderImpl : public torch::nn::Cloneable<EncoderImpl> {
 public:
  explicit EncoderImpl(EncoderOptions options);
  void reset() override;
  /// sample [B, in_channels, H, W] -> [B, 2 * out_channels, H / 2^(n-1), W / 2^(n-1)].
  at::Tensor forward(const at::Tensor& sample);

  EncoderOptions options;
  torch::nn::Conv2d conv_in{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  UNetMidBlock2D mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
  torch::nn::Conv2d conv_out{nullptr};
};
TORCH_MODULE(Encoder);

}  // namespace zerodiff::models
