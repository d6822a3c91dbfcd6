#include "zerodiff/models/unet/GEGLU.h"
#include "zerodiff/nn/Linear.h"

#include <torch/torch.h>

namespace zerodiff::models {

GEGLUImpl::GEGLUImpl(int64_t dim_in_, int64_t dim_out_, bool bias_) : dim_in(dim_in_), dim_out(dim_out_), bias(bias_) {
  reset();
}

void GEGLUImpl::reset() {
  proj = register_module("proj", torch::nn::Linear(torch::nn::LinearOptions(dim_in, dim_out * 2).bias(bias)));
}

at::Tensor GEGLUImpl::forward(const at::Tensor& x) {
  const std::vector<at::Tensor> parts = nn::linear(proj, x).chunk(2, -1);
  return parts[0] * torch::gelu(parts[1]);
}

}  // namespace zerodiff::models
