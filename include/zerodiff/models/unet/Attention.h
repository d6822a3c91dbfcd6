// zerodiff/models/unet/Attention.h — multi-head (cross-)attention with projections.
// Follows diffusers.models.attention_processor.Attention + AttnProcessor2_0 (0.42.1) for the settings
// Stable Diffusion uses: the UNet's self/cross attention (no bias on q/k/v) and the VAE mid-block
// attention (group_norm, bias, residual_connection, rescale_output_factor). The attention itself is
// zerodiff::nn::attention, so its backend is swappable.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>

#include "zerodiff/nn/Attention.h"

namespace zerodiff::models {

/// Options of Attention (the diffusers constructor arguments of the same names).
struct AttentionOptions {
  explicit AttentionOptions(int64_t query_dim) : query_dim_(query_dim) {}
  TORCH_ARG(int64_t, query_dim);
  /// Channels of encoder_hidden_states (cross-attention); nullopt = query_dim (self-attention).
  TORCH_ARG(std::optional<int64_t>, cross_attention_dim) = std::nullopt;
  TORCH_ARG(int64_t, heads) = 8;
  TORCH_ARG(int64_t, dim_head) = 64;
  /// Dropout after to_out.0 (`to_out.1`).
  TORCH_ARG(double, dropout) = 0.0;
  /// Bias on to_q, to_k, to_v.
  TORCH_ARG(bool, bias) = false;
  /// diffusers' upcast_attention / upcast_softmax: compute attention in float32 for fp16/bf16 inputs.
  /// (diffusers' default SDPA processor ignores both; in float32 they change nothing.)
  TORCH_ARG(bool, upcast_attention) = false;
  TORCH_ARG(bool, upcast_softmax) = false;
  /// GroupNorm on the input (`group_norm`, eps = `eps`); nullopt = none.
  TORCH_ARG(std::optional<int64_t>, norm_num_groups) = std::nullopt;
  TORCH_ARG(double, eps) = 1e-5;
  /// Add the input to the output (VAE attention).
  TORCH_ARG(bool, residual_connection) = false;
  /// Divide the output by this factor.
  TORCH_ARG(double, rescale_output_factor) = 1.0;
  /// Bias on to_out.0.
  TORCH_ARG(bool, out_bias) = true;
  /// Which attention implementation runs (not a diffusers option).
  TORCH_ARG(nn::AttentionBackend, backend) = nn::AttentionBackend::automatic;
};

/// Parameter names: group_norm (optional), to_q, to_k, to_v, to_out.0 (to_out.1 is the dropout).
class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
 public:
  explicit AttentionImpl(AttentionOptions options);
  void reset() override;
  /// hidden_states [B, N, query_dim] or [B, query_dim, H, W] (then N = H*W and the output has the
  /// input's 4-d shape); encoder_hidden_states [B, S, cross_attention_dim] or undefined for
  /// self-attention. Returns hidden_states' shape and dtype. Throws zerodiff::Error on mismatched
  /// shapes (naming them).
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states = {});

  AttentionOptions options;
  torch::nn::GroupNorm group_norm{nullptr};  // only with norm_num_groups
  torch::nn::Linear to_q{nullptr};
  torch::nn::Linear to_k{nullptr};
  torch::nn::Linear to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // [0] Linear(inner, query_dim), [1] Dropout
};
TORCH_MODULE(Attention);

}  // namespace zerodiff::models
