// zerodiff/models/clip/CLIPMLP.h — the feed-forward block of a CLIP encoder layer.
// Follows transformers.models.clip.modeling_clip.CLIPMLP (5.23): fc1 -> activation -> fc2.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "zerodiff/models/clip/CLIPTextOptions.h"

namespace zerodiff::models {

/// x * sigmoid(1.702 x), gelu (erf) or the tanh approximation, as `activation` says.
at::Tensor clip_activation(const at::Tensor& x, CLIPActivation activation);

/// Parameter names: fc1 [intermediate, D], fc2 [D, intermediate] (with biases).
class CLIPMLPImpl : public torch::nn::Cloneable<CLIPMLPImpl> {
 public:
  explicit CLIPMLPImpl(CLIPTextOptions options);
  void reset() override;
  /// [B, S, D] -> [B, S, D].
  at::Tensor forward(const at::Tensor& hidden_states);

  CLIPTextOptions options;
  CLIPActivation activation = CLIPActivation::quick_gelu;
  torch::nn::Linear fc1{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(CLIPMLP);

}  // namespace zerodiff::models
