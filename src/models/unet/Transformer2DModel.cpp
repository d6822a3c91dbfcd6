#include "zerodiff/models/unet/Transformer2DModel.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "zerodiff/nn/Linear.h"

namespace zerodiff::models {

Transformer2DModelImpl::Transformer2DModelImpl(Transformer2DModelOptions options_) : options(std::move(options_)) {
  reset();
}

void Transformer2DModelImpl::reset() {
  const int64_t in = options.in_channels();
  const int64_t out = options.out_channels().value_or(in);
  const int64_t inner = options.num_attention_heads() * options.attention_head_dim();
  ZD_CHECK(in % options.norm_num_groups() == 0, "Transformer2DModel: in_channels ", in,
           " is not divisible by norm_num_groups ", options.norm_num_groups());
  norm = register_module(
      "norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(options.norm_num_groups(), in).eps(1e-6).affine(true)));
  proj_in_conv = nullptr;
  proj_in_linear = nullptr;
  proj_out_conv = nullptr;
  proj_out_linear = nullptr;
  if (options.use_linear_projection()) {
    proj_in_linear = register_module("proj_in", torch::nn::Linear(in, inner));
  } else {
    proj_in_conv = register_module(
        "proj_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, inner, 1).stride(1).padding(0)));
  }
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    BasicTransformerBlock block(BasicTransformerBlockOptions(inner, options.num_attention_heads(),
                                                             options.attention_head_dim())
                                    .dropout(options.dropout())
                                    .cross_attention_dim(options.cross_attention_dim())
                                    .attention_bias(options.attention_bias())
                                    .upcast_attention(options.upcast_attention())
                                    .norm_eps(options.norm_eps())
                                    .attention_backend(options.attention_backend()));
    transformer_blocks->push_back(block);
  }
  if (options.use_linear_projection()) {
    proj_out_linear = register_module("proj_out", torch::nn::Linear(inner, out));
  } else {
    proj_out_conv = register_module(
        "proj_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(inner, out, 1).stride(1).padding(0)));
  }
}

at::Tensor Transformer2DModelImpl::forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states) {
  ZD_CHECK(hidden_states.dim() == 4 && hidden_states.size(1) == options.in_channels(),
           "Transformer2DModel: hidden_states must be [B, ", options.in_channels(), ", H, W], got ",
           hidden_states.sizes().vec());
  const int64_t batch = hidden_states.size(0), height = hidden_states.size(2), width = hidden_states.size(3);
  const at::Tensor& residual = hidden_states;
  at::Tensor x = norm->forward(hidden_states);
  int64_t inner_dim = 0;
  if (!options.use_linear_projection()) {
    x = proj_in_conv->forward(x);
    inner_dim = x.size(1);
    x = x.permute({0, 2, 3, 1}).reshape({batch, height * width, inner_dim});
  } else {
    inner_dim = x.size(1);
    x = x.permute({0, 2, 3, 1}).reshape({batch, height * width, inner_dim});
    x = nn::linear(proj_in_linear, x);
  }
  for (size_t i = 0; i < transformer_blocks->size(); ++i) {
    x = transformer_blocks->at<BasicTransformerBlockImpl>(i).forward(x, encoder_hidden_states);
  }
  if (!options.use_linear_projection()) {
    x = x.reshape({batch, height, width, inner_dim}).permute({0, 3, 1, 2}).contiguous();
    x = proj_out_conv->forward(x);
  } else {
    x = nn::linear(proj_out_linear, x);
    x = x.reshape({batch, height, width, inner_dim}).permute({0, 3, 1, 2}).contiguous();
  }
  return x + residual;
}

}  // namespace zerodiff::models
