#include "zerodiff/models/vae/UpDecoderBlock2D.h"

#include <torch/torch.h>

namespace zerodiff::models {

UpDecoderBlock2DImpl::UpDecoderBlock2DImpl(UpDecoderBlock2DOptions options_) : options(std::move(options_)) {
  reset();
}

void UpDecoderBlock2DImpl::reset() {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    const int64_t in = i == 0 ? options.in_channels() : options.out_channels();
    ResnetBlock2D resnet(ResnetBlock2DOptions(in, options.out_channels())
                             .temb_channels(std::nullopt)
                             .eps(options.resnet_eps())
                             .groups(options.resnet_groups())
                             .dropout(options.dropout())
                             .output_scale_factor(options.output_scale_factor()));
    resnets->push_back(resnet);
  }
  upsamplers = nullptr;
  if (options.add_upsample()) {
    Upsample2D upsampler(Upsample2DOptions(options.out_channels()).out_channels(options.out_channels()));
    upsamplers = register_module("upsamplers", torch::nn::ModuleList(upsampler));
  }
}

at::Tensor UpDecoderBlock2DImpl::forward(const at::Tensor& hidden_states) {
  at::Tensor x = hidden_states;
  for (size_t i = 0; i < resnets->size(); ++i) x = resnets->at<ResnetBlock2DImpl>(i).forward(x);
  if (upsamplers) x = upsamplers->at<Upsample2DImpl>(0).forward(x);
  return x;
}

}  // namespace zerodiff::models
