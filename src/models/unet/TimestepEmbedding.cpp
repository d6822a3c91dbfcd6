#include "zerodiff/models/unet/TimestepEmbedding.h"
#include "zerodiff/nn/Linear.h"

#include <torch/torch.h>

namespace zerodiff::models {

TimestepEmbeddingImpl::TimestepEmbeddingImpl(TimestepEmbeddingOptions options_) : options(std::move(options_)) {
  reset();
}

void TimestepEmbeddingImpl::reset() {
  const int64_t out = options.out_dim().value_or(options.time_embed_dim());
  linear_1 = register_module("linear_1", torch::nn::Linear(options.in_channels(), options.time_embed_dim()));
  linear_2 = register_module("linear_2", torch::nn::Linear(options.time_embed_dim(), out));
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& sample) {
  return nn::linear(linear_2, torch::silu(nn::linear(linear_1, sample)));
}

}  // namespace zerodiff::models
