#include "zerodiff/models/unet/ResnetBlock2D.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "zerodiff/nn/Linear.h"

namespace zerodiff::models {

ResnetBlock2DImpl::ResnetBlock2DImpl(ResnetBlock2DOptions options_) : options(std::move(options_)) { reset(); }

void ResnetBlock2DImpl::reset() {
  const int64_t in = options.in_channels(), out = options.out_channels();
  const int64_t groups_out = options.groups_out().value_or(options.groups());
  ZD_CHECK(in % options.groups() == 0, "ResnetBlock2D: in_channels ", in, " is not divisible by groups ",
           options.groups());
  ZD_CHECK(out % groups_out == 0, "ResnetBlock2D: out_channels ", out, " is not divisible by groups ", groups_out);
  norm1 = register_module(
      "norm1", torch::nn::GroupNorm(torch::nn::GroupNormOptions(options.groups(), in).eps(options.eps()).affine(true)));
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(1).padding(1)));
  time_emb_proj = nullptr;
  if (options.temb_channels()) {
    time_emb_proj = register_module("time_emb_proj", torch::nn::Linear(*options.temb_channels(), out));
  }
  norm2 = register_module(
      "norm2", torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups_out, out).eps(options.eps()).affine(true)));
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
  conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).stride(1).padding(1)));
  conv_shortcut = nullptr;
  if (in != out) {
    conv_shortcut = register_module(
        "conv_shortcut", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).stride(1).padding(0).bias(true)));
  }
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& input, const at::Tensor& temb) {
  ZD_CHECK(input.dim() == 4 && input.size(1) == options.in_channels(), "ResnetBlock2D: input must be [B, ",
           options.in_channels(), ", H, W], got ", input.sizes().vec());
  at::Tensor h = torch::silu(norm1->forward(input));
  h = conv1->forward(h);
  if (time_emb_proj) {
    ZD_CHECK(temb.defined(), "ResnetBlock2D: this block has a time_emb_proj but no temb was given");
    at::Tensor t = nn::linear(time_emb_proj, torch::silu(temb));
    h = h + t.unsqueeze(-1).unsqueeze(-1);
  }
  h = torch::silu(norm2->forward(h));
  h = dropout->forward(h);
  h = conv2->forward(h);
  at::Tensor shortcut = conv_shortcut ? conv_shortcut->forward(input) : input;
  at::Tensor out = shortcut + h;
  if (options.output_scale_factor() != 1.0) out = out / options.output_scale_factor();
  return out;
}

}  // namespace zerodiff::models
