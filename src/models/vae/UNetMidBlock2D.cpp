#include "zerodiff/models/vae/UNetMidBlock2D.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"

namespace zerodiff::models {

UNetMidBlock2DImpl::UNetMidBlock2DImpl(UNetMidBlock2DOptions options_) : options(std::move(options_)) { reset(); }

void UNetMidBlock2DImpl::reset() {
  const int64_t channels = options.in_channels();
  const int64_t head_dim = options.attention_head_dim().value_or(channels);
  ZD_CHECK(head_dim > 0 && channels % head_dim == 0, "UNetMidBlock2D: in_channels ", channels,
           " is not divisible by attention_head_dim ", head_dim);
  auto make_resnet = [&] {
    return ResnetBlock2D(ResnetBlock2DOptions(channels, channels)
                             .temb_channels(std::nullopt)
                             .eps(options.resnet_eps())
                             .groups(options.resnet_groups())
                             .dropout(options.dropout())
                             .output_scale_factor(options.output_scale_factor()));
  };
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets = register_module("resnets", torch::nn::ModuleList());
  resnets->push_back(make_resnet());
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    if (options.add_attention()) {
      Attention attention(AttentionOptions(channels)
                              .heads(channels / head_dim)
                              .dim_head(head_dim)
                              .rescale_output_factor(options.output_scale_factor())
                              .eps(options.resnet_eps())
                              .norm_num_groups(options.resnet_groups())
                              .residual_connection(true)
                              .bias(true)
                              .upcast_softmax(true)
                              .backend(options.attention_backend()));
      attentions->push_back(attention);
    }
    resnets->push_back(make_resnet());
  }
}

at::Tensor UNetMidBlock2DImpl::forward(const at::Tensor& hidden_states) {
  at::Tensor x = resnets->at<ResnetBlock2DImpl>(0).forward(hidden_states);
  for (size_t i = 1; i < resnets->size(); ++i) {
    if (!attentions->is_empty()) x = attentions->at<AttentionImpl>(i - 1).forward(x);
    x = resnets->at<ResnetBlock2DImpl>(i).forward(x);
  }
  return x;
}

}  // namespace zerodiff::models
