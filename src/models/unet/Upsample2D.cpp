#include "zerodiff/models/unet/Upsample2D.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"

namespace zerodiff::models {

Upsample2DImpl::Upsample2DImpl(Upsample2DOptions options_) : options(std::move(options_)) { reset(); }

void Upsample2DImpl::reset() {
  const int64_t out = options.out_channels().value_or(options.channels());
  conv = register_module("conv",
                         torch::nn::Conv2d(torch::nn::Conv2dOptions(options.channels(), out, 3).padding(1).bias(true)));
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& x, const std::optional<std::vector<int64_t>>& output_size) {
  ZD_CHECK(x.dim() == 4 && x.size(1) == options.channels(), "Upsample2D: input must be [B, ", options.channels(),
           ", H, W], got ", x.sizes().vec());
  at::Tensor h;
  if (output_size) {
    ZD_CHECK(output_size->size() == 2, "Upsample2D: output_size must be {h, w}, got ", *output_size);
    // F.interpolate(x, size=output_size, mode="nearest")
    h = at::upsample_nearest2d(x, at::OptionalIntArrayRef(*output_size), std::optional<at::ArrayRef<double>>());
  } else {
    // F.interpolate(x, scale_factor=2.0, mode="nearest")
    const std::vector<double> scales{2.0, 2.0};
    h = at::upsample_nearest2d(x, at::OptionalIntArrayRef(), std::optional<at::ArrayRef<double>>(scales));
  }
  return conv->forward(h);
}

}  // namespace zerodiff::models
