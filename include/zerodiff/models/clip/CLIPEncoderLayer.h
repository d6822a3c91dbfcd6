// zerodiff/models/clip/CLIPEncoderLayer.h — one pre-norm transformer layer of the CLIP text encoder.
// Follows transformers.models.clip.modeling_clip.CLIPEncoderLayer (5.23):
//   x = x + self_attn(layer_norm1(x)); x = x + mlp(layer_norm2(x)).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "zerodiff/models/clip/CLIPAttention.h"
#include "zerodiff/models/clip/CLIPMLP.h"
#include "zerodiff/models/clip/CLIPTextOptions.h"

namespace zerodiff::models {

/// Parameter names: self_attn.{q,k,v,out}_proj, layer_norm1, mlp.fc{1,2}, layer_norm2.
class CLIPEncoderLayerImpl : public torch::nn::Cloneable<CLIPEncoderLayerImpl> {
 public:
  explicit CLIPEncoderLayerImpl(CLIPTextOptions options);
  void reset() override;
  /// hidden_states [B, S, D], mask as CLIPAttention -> [B, S, D].
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& mask = {});

  CLIPTextOptions options;
  CLIPAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr};
  CLIPMLP mlp{nullptr};
  torch::nn::LayerNorm layer_norm2{nullptr};
};
TORCH_MODULE(CLIPEncoderLayer);

}  // namespace zerodiff::models
