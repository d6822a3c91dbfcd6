#include "zerodiff/models/unet/UpBlock2D.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "Checkpointed.h"

namespace zerodiff::models {

UpBlock2DImpl::UpBlock2DImpl(UpBlock2DOptions options_) : options(std::move(options_)) { reset(); }

void UpBlock2DImpl::reset() {
  resnets = register_module("resnets", torch::nn::ModuleList());
  const int64_t n = options.num_layers();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t res_skip_channels = i == n - 1 ? options.in_channels() : options.out_channels();
    const int64_t resnet_in_channels = i == 0 ? options.prev_output_channel() : options.out_channels();
    resnets->push_back(ResnetBlock2D(ResnetBlock2DOptions(resnet_in_channels + res_skip_channels, options.out_channels())
                                         .temb_channels(options.temb_channels())
                                         .eps(options.resnet_eps())
                                         .groups(options.resnet_groups())
                                         .dropout(options.dropout())
                                         .output_scale_factor(options.output_scale_factor())));
  }
  upsamplers = nullptr;
  if (options.add_upsample()) {
    upsamplers = register_module(
        "upsamplers",
        torch::nn::ModuleList(Upsample2D(Upsample2DOptions(options.out_channels()).out_channels(options.out_channels()))));
  }
}

at::Tensor UpBlock2DImpl::forward(const at::Tensor& hidden_states, const std::vector<at::Tensor>& res_hidden_states,
                                  const at::Tensor& temb, const std::optional<std::vector<int64_t>>& upsample_size) {
  ZD_CHECK(res_hidden_states.size() >= resnets->size(), "UpBlock2D: needs ", resnets->size(), " skip states, got ",
           res_hidden_states.size());
  at::Tensor x = hidden_states;
  size_t next = res_hidden_states.size();
  for (size_t i = 0; i < resnets->size(); ++i) {
    x = torch::cat({x, res_hidden_states[--next]}, 1);
    x = detail::run_resnet(resnets, i, x, temb, gradient_checkpointing);
  }
  if (upsamplers) x = upsamplers->at<Upsample2DImpl>(0).forward(x, upsample_size);
  return x;
}

}  // namespace zerodiff::models
