#include "zerodiff/models/unet/BasicTransformerBlock.h"

#include <torch/torch.h>

namespace zerodiff::models {

BasicTransformerBlockImpl::BasicTransformerBlockImpl(BasicTransformerBlockOptions options_)
    : options(std::move(options_)) {
  reset();
}

void BasicTransformerBlockImpl::reset() {
  const int64_t dim = options.dim();
  auto layer_norm = [&] {
    return torch::nn::LayerNorm(
        torch::nn::LayerNormOptions({dim}).eps(options.norm_eps()).elementwise_affine(options.norm_elementwise_affine()));
  };
  auto attention = [&](std::optional<int64_t> cross_dim) {
    return Attention(AttentionOptions(dim)
                         .cross_attention_dim(cross_dim)
                         .heads(options.num_attention_heads())
                         .dim_head(options.attention_head_dim())
                         .dropout(options.dropout())
                         .bias(options.attention_bias())
                         .upcast_attention(options.upcast_attention())
                         .out_bias(true)
                         .backend(options.attention_backend()));
  };
  norm1 = register_module("norm1", layer_norm());
  attn1 = register_module("attn1", attention(std::nullopt));
  norm2 = nullptr;
  attn2 = nullptr;
  if (options.cross_attention_dim()) {
    norm2 = register_module("norm2", layer_norm());
    attn2 = register_module("attn2", attention(options.cross_attention_dim()));
  }
  norm3 = register_module("norm3", layer_norm());
  ff = register_module("ff", FeedForward(FeedForwardOptions(dim).dropout(options.dropout())));
}

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& hidden_states,
                                              const at::Tensor& encoder_hidden_states) {
  at::Tensor x = hidden_states;
  x = attn1->forward(norm1->forward(x)) + x;
  if (attn2) {
    x = attn2->forward(norm2->forward(x), encoder_hidden_states) + x;
  }
  x = ff->forward(norm3->forward(x)) + x;
  return x;
}

}  // namespace zerodiff::models
