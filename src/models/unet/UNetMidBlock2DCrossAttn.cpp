#include "zerodiff/models/unet/UNetMidBlock2DCrossAttn.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "Checkpointed.h"

namespace zerodiff::models {

UNetMidBlock2DCrossAttnImpl::UNetMidBlock2DCrossAttnImpl(UNetMidBlock2DCrossAttnOptions options_)
    : options(std::move(options_)) {
  reset();
}

void UNetMidBlock2DCrossAttnImpl::reset() {
  const auto& layers = options.transformer_layers_per_block();
  ZD_CHECK(layers.size() == 1 || static_cast<int64_t>(layers.size()) == options.num_layers(),
           "UNetMidBlock2DCrossAttn: transformer_layers_per_block must have 1 or num_layers (", options.num_layers(),
           ") entries, got ", layers);
  const int64_t channels = options.in_channels();
  const int64_t heads = options.num_attention_heads();
  ZD_CHECK(heads > 0 && channels % heads == 0, "UNetMidBlock2DCrossAttn: in_channels ", channels,
           " is not divisible by num_attention_heads ", heads);
  auto make_resnet = [&] {
    return ResnetBlock2D(ResnetBlock2DOptions(channels, channels)
                             .temb_channels(options.temb_channels())
                             .eps(options.resnet_eps())
                             .groups(options.resnet_groups())
                             .dropout(options.dropout())
                             .output_scale_factor(options.output_scale_factor()));
  };
  // Registration order = diffusers' (attentions before resnets), so named_parameters() orders match.
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets = register_module("resnets", torch::nn::ModuleList());
  resnets->push_back(make_resnet());
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    attentions->push_back(Transformer2DModel(Transformer2DModelOptions(heads, channels / heads, channels)
                                                 .num_layers(layers.size() == 1 ? layers[0] : layers[i])
                                                 .cross_attention_dim(options.cross_attention_dim())
                                                 .norm_num_groups(options.resnet_groups())
                                                 .use_linear_projection(options.use_linear_projection())
                                                 .upcast_attention(options.upcast_attention())
                                                 .attention_backend(options.attention_backend())));
    resnets->push_back(make_resnet());
  }
}

at::Tensor UNetMidBlock2DCrossAttnImpl::forward(const at::Tensor& hidden_states, const at::Tensor& temb,
                                                const at::Tensor& encoder_hidden_states) {
  at::Tensor x = detail::run_resnet(resnets, 0, hidden_states, temb, gradient_checkpointing);
  for (size_t i = 0; i < attentions->size(); ++i) {
    x = detail::run_transformer(attentions, i, x, encoder_hidden_states, gradient_checkpointing);
    x = detail::run_resnet(resnets, i + 1, x, temb, gradient_checkpointing);
  }
  return x;
}

}  // namespace zerodiff::models
