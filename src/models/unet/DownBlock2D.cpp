#include "zerodiff/models/unet/DownBlock2D.h"

#include "Checkpointed.h"

#include <torch/torch.h>

namespace zerodiff::models {

DownBlock2DImpl::DownBlock2DImpl(DownBlock2DOptions options_) : options(std::move(options_)) { reset(); }

void DownBlock2DImpl::reset() {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    const int64_t in = i == 0 ? options.in_channels() : options.out_channels();
    resnets->push_back(ResnetBlock2D(ResnetBlock2DOptions(in, options.out_channels())
                                         .temb_channels(options.temb_channels())
                                         .eps(options.resnet_eps())
                                         .groups(options.resnet_groups())
                                         .dropout(options.dropout())
                                         .output_scale_factor(options.output_scale_factor())));
  }
  downsamplers = nullptr;
  if (options.add_downsample()) {
    downsamplers = register_module(
        "downsamplers", torch::nn::ModuleList(Downsample2D(Downsample2DOptions(options.out_channels())
                                                               .out_channels(options.out_channels())
                                                               .padding(options.downsample_padding()))));
  }
}

std::pair<at::Tensor, std::vector<at::Tensor>> DownBlock2DImpl::forward(const at::Tensor& hidden_states,
                                                                        const at::Tensor& temb) {
  std::vector<at::Tensor> output_states;
  at::Tensor x = hidden_states;
  for (size_t i = 0; i < resnets->size(); ++i) {
    x = detail::run_resnet(resnets, i, x, temb, gradient_checkpointing);
    output_states.push_back(x);
  }
  if (downsamplers) {
    x = downsamplers->at<Downsample2DImpl>(0).forward(x);
    output_states.push_back(x);
  }
  return {x, output_states};
}

}  // namespace zerodiff::models
