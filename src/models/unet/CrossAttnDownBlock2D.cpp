#include "zerodiff/models/unet/CrossAttnDownBlock2D.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "Checkpointed.h"

namespace zerodiff::models {

CrossAttnDownBlock2DImpl::CrossAttnDownBlock2DImpl(CrossAttnDownBlock2DOptions options_)
    : options(std::move(options_)) {
  reset();
}

void CrossAttnDownBlock2DImpl::reset() {
  const auto& layers = options.transformer_layers_per_block();
  ZD_CHECK(layers.size() == 1 || static_cast<int64_t>(layers.size()) == options.num_layers(),
           "CrossAttnDownBlock2D: transformer_layers_per_block must have 1 or num_layers (", options.num_layers(),
           ") entries, got ", layers);
  const int64_t heads = options.num_attention_heads();
  ZD_CHECK(heads > 0 && options.out_channels() % heads == 0, "CrossAttnDownBlock2D: out_channels ",
           options.out_channels(), " is not divisible by num_attention_heads ", heads);
  // Registration order = diffusers' (attentions before resnets), so named_parameters() orders match.
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    const int64_t in = i == 0 ? options.in_channels() : options.out_channels();
    resnets->push_back(ResnetBlock2D(ResnetBlock2DOptions(in, options.out_channels())
                                         .temb_channels(options.temb_channels())
                                         .eps(options.resnet_eps())
                                         .groups(options.resnet_groups())
                                         .dropout(options.dropout())
                                         .output_scale_factor(options.output_scale_factor())));
    attentions->push_back(Transformer2DModel(
        Transformer2DModelOptions(heads, options.out_channels() / heads, options.out_channels())
            .num_layers(layers.size() == 1 ? layers[0] : layers[i])
            .cross_attention_dim(options.cross_attention_dim())
            .norm_num_groups(options.resnet_groups())
            .use_linear_projection(options.use_linear_projection())
            .upcast_attention(options.upcast_attention())
            .attention_backend(options.attention_backend())));
  }
  downsamplers = nullptr;
  if (options.add_downsample()) {
    downsamplers = register_module(
        "downsamplers", torch::nn::ModuleList(Downsample2D(Downsample2DOptions(options.out_channels())
                                                               .out_channels(options.out_channels())
                                                               .padding(options.downsample_padding()))));
  }
}

std::pair<at::Tensor, std::vector<at::Tensor>> CrossAttnDownBlock2DImpl::forward(
    const at::Tensor& hidden_states, const at::Tensor& temb, const at::Tensor& encoder_hidden_states) {
  std::vector<at::Tensor> output_states;
  at::Tensor x = hidden_states;
  for (size_t i = 0; i < resnets->size(); ++i) {
    x = detail::run_resnet(resnets, i, x, temb, gradient_checkpointing);
    x = detail::run_transformer(attentions, i, x, encoder_hidden_states, gradient_checkpointing);
    output_states.push_back(x);
  }
  if (downsamplers) {
    x = downsamplers->at<Downsample2DImpl>(0).forward(x);
    output_states.push_back(x);
  }
  return {x, output_states};
}

}  // namespace zerodiff::models
