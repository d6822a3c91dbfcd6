#include "zerodiff/models/unet/Downsample2D.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"

namespace zerodiff::models {

Downsample2DImpl::Downsample2DImpl(Downsample2DOptions options_) : options(std::move(options_)) { reset(); }

void Downsample2DImpl::reset() {
  const int64_t out = options.out_channels().value_or(options.channels());
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.channels(), out, 3)
                                                       .stride(2)
                                                       .padding(options.padding())
                                                       .bias(true)));
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& x) {
  ZD_CHECK(x.dim() == 4 && x.size(1) == options.channels(), "Downsample2D: input must be [B, ", options.channels(),
           ", H, W], got ", x.sizes().vec());
  if (options.padding() == 0) {
    return conv->forward(torch::constant_pad_nd(x, {0, 1, 0, 1}, 0));
  }
  return conv->forward(x);
}

}  // namespace zerodiff::models
