// zerodiff/models/clip/CLIPEncoder.h — the stack of CLIP encoder layers.
// Follows transformers.models.clip.modeling_clip.CLIPEncoder (5.23).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "zerodiff/models/clip/CLIPEncoderLayer.h"
#include "zerodiff/models/clip/CLIPTextOptions.h"

namespace zerodiff::models {

/// Parameter names: layers.<i>.* (CLIPEncoderLayer), i < num_hidden_layers.
class CLIPEncoderImpl : public torch::nn::Cloneable<CLIPEncoderImpl> {
 public:
  explicit CLIPEncoderImpl(CLIPTextOptions options);
  void reset() override;
  /// Runs the first `num_layers` layers (-1 = all) on inputs_embeds [B, S, D]. When `hidden_states` is
  /// given, appends the input and every layer's output to it (transformers' output_hidden_states order).
  at::Tensor forward(const at::Tensor& inputs_embeds, const at::Tensor& mask = {}, int64_t num_layers = -1,
                     std::vector<at::Tensor>* hidden_states = nullptr);

  CLIPTextOptions options;
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(CLIPEncoder);

}  // namespace zerodiff::models
