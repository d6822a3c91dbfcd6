// zerodiff/models/clip/CLIPAttention.h — multi-head self-attention of the CLIP text encoder.
// Follows transformers.models.clip.modeling_clip.CLIPAttention (5.23): q/k/v/out projections with bias, scale
// head_dim^-0.5, an additive or boolean mask (the causal mask, optionally combined with padding).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "zerodiff/models/clip/CLIPTextOptions.h"

namespace zerodiff::models {

/// Parameter names: q_proj, k_proj, v_proj, out_proj (each weight [D, D] and bias [D]).
class CLIPAttentionImpl : public torch::nn::Cloneable<CLIPAttentionImpl> {
 public:
  explicit CLIPAttentionImpl(CLIPTextOptions options);
  void reset() override;
  /// hidden_states [B, S, D]; mask: undefined = causal, else a boolean [B, 1, S, S] (true = attend) that
  /// already includes causality -> [B, S, D].
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& mask = {});

  CLIPTextOptions options;
  torch::nn::Linear q_proj{nullptr};
  torch::nn::Linear k_proj{nullptr};
  torch::nn::Linear v_proj{nullptr};
  torch::nn::Linear out_proj{nullptr};
};
TORCH_MODULE(CLIPAttention);

}  // namespace zerodiff::models
