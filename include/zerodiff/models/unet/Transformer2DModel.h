// zerodiff/models/unet/Transformer2DModel.h — the spatial transformer of the UNet's attention blocks.
// Follows diffusers.models.transformers.transformer_2d.Transformer2DModel (0.42.1) for continuous
// inputs (in_channels set, no patches, no vector embeddings), norm_type "layer_norm".
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "zerodiff/models/unet/BasicTransformerBlock.h"

namespace zerodiff::models {

/// Options of Transformer2DModel.
struct Transformer2DModelOptions {
  Transformer2DModelOptions(int64_t num_attention_heads, int64_t attention_head_dim, int64_t in_channels)
      : num_attention_heads_(num_attention_heads),
        attention_head_dim_(attention_head_dim),
        in_channels_(in_channels) {}
  TORCH_ARG(int64_t, num_attention_heads);
  TORCH_ARG(int64_t, attention_head_dim);
  TORCH_ARG(int64_t, in_channels);
  /// nullopt = in_channels.
  TORCH_ARG(std::optional<int64_t>, out_channels) = std::nullopt;
  /// Number of BasicTransformerBlocks (`transformer_layers_per_block`).
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(double, dropout) = 0.0;
  /// Groups of the input GroupNorm (eps 1e-6).
  TORCH_ARG(int64_t, norm_num_groups) = 32;
  TORCH_ARG(std::optional<int64_t>, cross_attention_dim) = std::nullopt;
  TORCH_ARG(bool, attention_bias) = false;
  /// proj_in / proj_out are Linear layers on [B, HW, C] (SD 2.x) instead of 1x1 convolutions (SD 1.x).
  TORCH_ARG(bool, use_linear_projection) = false;
  TORCH_ARG(bool, upcast_attention) = false;
  /// LayerNorm eps inside the transformer blocks.
  TORCH_ARG(double, norm_eps) = 1e-5;
  TORCH_ARG(nn::AttentionBackend, attention_backend) = nn::AttentionBackend::automatic;
};

/// norm -> proj_in -> transformer_blocks -> proj_out, plus the input. With 1x1 convolutions the
/// projection runs before flattening to [B, HW, inner] (and proj_out after unflattening); with linear
/// projection it is the other way round, exactly as diffusers.
/// Parameter names: norm, proj_in, transformer_blocks.<i>, proj_out.
class Transformer2DModelImpl : public torch::nn::Cloneable<Transformer2DModelImpl> {
 public:
  explicit Transformer2DModelImpl(Transformer2DModelOptions options);
  void reset() override;
  /// hidden_states [B, in_channels, H, W], encoder_hidden_states [B, S, cross_attention_dim]
  /// -> [B, out_channels, H, W]. Throws zerodiff::Error on a wrong input shape.
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states = {});

  Transformer2DModelOptions options;
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d proj_in_conv{nullptr};    // proj_in without use_linear_projection
  torch::nn::Linear proj_in_linear{nullptr};  // proj_in with use_linear_projection
  torch::nn::ModuleList transformer_blocks{nullptr};  // BasicTransformerBlock
  torch::nn::Conv2d proj_out_conv{nullptr};
  torch::nn::Linear proj_out_linear{nullptr};
};
TORCH_MODULE(Transformer2DModel);

}  // namespace zerodiff::models
