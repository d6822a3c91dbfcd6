#include "zerodiff/models/unet/CrossAttnUpBlock2D.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "Checkpointed.h"

namespace zerodiff::models {

CrossAttnUpBlock2DImpl::CrossAttnUpBlock2DImpl(CrossAttnUpBlock2DOptions options_) : options(std::move(options_)) {
  reset();
}

void CrossAttnUpBlock2DImpl::reset() {
  const auto& layers = options.transformer_layers_per_block();
  const int64_t n = options.num_layers();
  ZD_CHECK(layers.size() == 1 || static_cast<int64_t>(layers.size()) == n,
           "CrossAttnUpBlock2D: transformer_layers_per_block must have 1 or num_layers (", n, ") entries, got ",
           layers);
  const int64_t heads = options.num_attention_heads();
  ZD_CHECK(heads > 0 && options.out_channels() % heads == 0, "CrossAttnUpBlock2D: out_channels ",
           options.out_channels(), " is not divisible by num_attention_heads ", heads);
  // Registration order = diffusers' (attentions before resnets), so named_parameters() orders match.
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t res_skip_channels = i == n - 1 ? options.in_channels() : options.out_channels();
    const int64_t resnet_in_channels = i == 0 ? options.prev_output_channel() : options.out_channels();
    resnets->push_back(ResnetBlock2D(ResnetBlock2DOptions(resnet_in_channels + res_skip_channels, options.out_channels())
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
  upsamplers = nullptr;
  if (options.add_upsample()) {
    upsamplers = register_module(
        "upsamplers",
        torch::nn::ModuleList(Upsample2D(Upsample2DOptions(options.out_channels()).out_channels(options.out_channels()))));
  }
}

at::Tensor CrossAttnUpBlock2DImpl::forward(const at::Tensor& hidden_states,
                                           const std::vector<at::Tensor>& res_hidden_states, const at::Tensor& temb,
                                           const at::Tensor& encoder_hidden_states,
                                           const std::optional<std::vector<int64_t>>& upsample_size) {
  ZD_CHECK(res_hidden_states.size() >= resnets->size(), "CrossAttnUpBlock2D: needs ", resnets->size(),
           " skip states, got ", res_hidden_states.size());
  at::Tensor x = hidden_states;
  size_t next = res_hidden_states.size();
  for (size_t i = 0; i < resnets->size(); ++i) {
    x = torch::cat({x, res_hidden_states[--next]}, 1);
    x = detail::run_resnet(resnets, i, x, temb, gradient_checkpointing);
    x = detail::run_transformer(attentions, i, x, encoder_hidden_states, gradient_checkpointing);
  }
  if (upsamplers) x = upsamplers->at<Upsample2DImpl>(0).forward(x, upsample_size);
  return x;
}

}  // namespace zerodiff::models
