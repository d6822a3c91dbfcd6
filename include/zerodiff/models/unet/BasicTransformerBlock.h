// zerodiff/models/unet/BasicTransformerBlock.h — self-attention, cross-attention and feed-forward
// with pre-LayerNorm residuals. Follows diffusers.models.attention.BasicTransformerBlock (0.42.1) with
// norm_type "layer_norm", activation_fn "geglu", only_cross_attention / double_self_attention False,
// attention_type "default", no positional embeddings.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>

#include "zerodiff/models/unet/Attention.h"
#include "zerodiff/models/unet/FeedForward.h"

namespace zerodiff::models {

/// Options of BasicTransformerBlock.
struct BasicTransformerBlockOptions {
  BasicTransformerBlockOptions(int64_t dim, int64_t num_attention_heads, int64_t attention_head_dim)
      : dim_(dim), num_attention_heads_(num_attention_heads), attention_head_dim_(attention_head_dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_attention_heads);
  TORCH_ARG(int64_t, attention_head_dim);
  TORCH_ARG(double, dropout) = 0.0;
  /// Channels of the text embedding; nullopt = no cross-attention (no norm2/attn2).
  TORCH_ARG(std::optional<int64_t>, cross_attention_dim) = std::nullopt;
  TORCH_ARG(bool, attention_bias) = false;
  TORCH_ARG(bool, upcast_attention) = false;
  TORCH_ARG(double, norm_eps) = 1e-5;
  TORCH_ARG(bool, norm_elementwise_affine) = true;
  TORCH_ARG(nn::AttentionBackend, attention_backend) = nn::AttentionBackend::automatic;
};

/// x = attn1(norm1(x)) + x; x = attn2(norm2(x), context) + x; x = ff(norm3(x)) + x.
/// Parameter names: norm1, attn1, norm2, attn2, norm3, ff.
class BasicTransformerBlockImpl : public torch::nn::Cloneable<BasicTransformerBlockImpl> {
 public:
  explicit BasicTransformerBlockImpl(BasicTransformerBlockOptions options);
  void reset() override;
  /// hidden_states [B, N, dim], encoder_hidden_states [B, S, cross_attention_dim] (undefined: attn2
  /// attends to hidden_states itself, as in diffusers) -> [B, N, dim].
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states = {});

  BasicTransformerBlockOptions options;
  torch::nn::LayerNorm norm1{nullptr};
  Attention attn1{nullptr};
  torch::nn::LayerNorm norm2{nullptr};  // null without cross_attention_dim
  Attention attn2{nullptr};             // null without cross_attention_dim
  torch::nn::LayerNorm norm3{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

}  // namespace zerodiff::models
