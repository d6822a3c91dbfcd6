// zerodiff/models/vae/Decoder.h — the VAE decoder: latents -> image.
// Follows diffusers.models.autoencoders.vae.Decoder (0.42.1) with UpDecoderBlock2D blocks and
// norm_type "group".
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "zerodiff/models/vae/UNetMidBlock2D.h"
#include "zerodiff/models/vae/UpDecoderBlock2D.h"

namespace zerodiff::models {

/// Options of Decoder.
struct DecoderOptions {
  /// Latent channels.
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(int64_t, out_channels) = 3;
  TORCH_ARG(std::vector<int64_t>, block_out_channels) = std::vector<int64_t>{64};
  /// Up blocks have layers_per_block + 1 resnets.
  TORCH_ARG(int64_t, layers_per_block) = 2;
  TORCH_ARG(int64_t, norm_num_groups) = 32;
  TORCH_ARG(bool, mid_block_add_attention) = true;
  TORCH_ARG(nn::AttentionBackend, attention_backend) = nn::AttentionBackend::automatic;
};

/// conv_in -> mid_block -> up_blocks -> conv_norm_out -> SiLU -> conv_out.
class DecoderImpl : public torch::nn::Cloneable<DecoderImpl> {
 public:
  explicit DecoderImpl(DecoderOptions options);
  void reset() override;
  /// sample [B, in_channels, h, w] -> [B, out_channels, h * 2^(n-1), w * 2^(n-1)].
  at::Tensor forward(const at::Tensor& sample);

  DecoderOptions options;
  torch::nn::Conv2d conv_in{nullptr};
  UNetMidBlock2D mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
  torch::nn::Conv2d conv_out{nullptr};
};
TORCH_MODULE(Decoder);

}  // namespace zerodiff::models
