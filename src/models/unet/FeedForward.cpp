#include "zerodiff/models/unet/FeedForward.h"
#include "zerodiff/nn/Linear.h"

#include <torch/torch.h>

namespace zerodiff::models {

FeedForwardImpl::FeedForwardImpl(FeedForwardOptions options_) : options(std::move(options_)) { reset(); }

void FeedForwardImpl::reset() {
  const int64_t inner = options.inner_dim().value_or(options.dim() * options.mult());
  const int64_t out = options.dim_out().value_or(options.dim());
  net = register_module("net", torch::nn::ModuleList(GEGLU(options.dim(), inner, options.bias()),
                                                     torch::nn::Dropout(options.dropout()),
                                                     torch::nn::Linear(torch::nn::LinearOptions(inner, out).bias(options.bias()))));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) {
  at::Tensor h = net->at<GEGLUImpl>(0).forward(x);
  h = net->at<torch::nn::DropoutImpl>(1).forward(h);
  return nn::linear(torch::nn::Linear(net->ptr<torch::nn::LinearImpl>(2)), h);
}

}  // namespace zerodiff::models
