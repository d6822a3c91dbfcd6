// zerodiff/models/clip/CLIPTextEmbeddings.h — token + position embeddings of the CLIP text model.
// Follows transformers.models.clip.modeling_clip.CLIPTextEmbeddings (5.23). transformers' `position_ids`
// buffer is non-persistent (not in state_dict() or the checkpoints), so zerodiff computes the positions
// instead of registering it.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>

#include "zerodiff/models/clip/CLIPTextOptions.h"

namespace zerodiff::models {

/// Parameter names: token_embedding.weight [vocab, D], position_embedding.weight [max_positions, D].
class CLIPTextEmbeddingsImpl : public torch::nn::Cloneable<CLIPTextEmbeddingsImpl> {
 public:
  explicit CLIPTextEmbeddingsImpl(CLIPTextOptions options);
  void reset() override;
  /// input_ids [B, S] int64 (S <= max_position_embeddings), position_ids [B or 1, S] or undefined (0..S-1)
  /// -> [B, S, D]. Throws zerodiff::Error naming the sizes when S is too long.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& position_ids = {});

  CLIPTextOptions options;
  torch::nn::Embedding token_embedding{nullptr};
  torch::nn::Embedding position_embedding{nullptr};
};
TORCH_MODULE(CLIPTextEmbeddings);

}  // namespace zerodiff::models
