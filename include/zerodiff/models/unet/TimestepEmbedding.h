// zerodiff/models/unet/TimestepEmbedding.h — the MLP on the sinusoidal timestep embedding.
// Follows diffusers.models.embeddings.TimestepEmbedding (0.42.1) with act_fn "silu", no cond_proj and
// no post_act (the only settings Stable Diffusion 1.x/2.x use).
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>

namespace zerodiff::models {

/// Options of TimestepEmbedding.
struct TimestepEmbeddingOptions {
  TimestepEmbeddingOptions(int64_t in_channels, int64_t time_embed_dim)
      : in_channels_(in_channels), time_embed_dim_(time_embed_dim) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, time_embed_dim);
  /// Output size; nullopt = time_embed_dim.
  TORCH_ARG(std::optional<int64_t>, out_dim) = std::nullopt;
};

/// linear_1 -> SiLU -> linear_2. Parameters: `linear_1.{weight,bias}`, `linear_2.{weight,bias}`.
class TimestepEmbeddingImpl : public torch::nn::Cloneable<TimestepEmbeddingImpl> {
 public:
  explicit TimestepEmbeddingImpl(TimestepEmbeddingOptions options);
  void reset() override;
  /// sample [B, in_channels] -> [B, out_dim].
  at::Tensor forward(const at::Tensor& sample);

  TimestepEmbeddingOptions options;
  torch::nn::Linear linear_1{nullptr};
  torch::nn::Linear linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

}  // namespace zerodiff::models
