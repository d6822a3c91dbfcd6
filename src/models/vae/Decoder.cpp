#include "zerodiff/models/vae/Decoder.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"

namespace zerodiff::models {

DecoderImpl::DecoderImpl(DecoderOptions options_) : options(std::move(options_)) { reset(); }

void DecoderImpl::reset() {
  const auto& boc = options.block_out_channels();
  ZD_CHECK(!boc.empty(), "Decoder: block_out_channels must not be empty");
  const size_t n = boc.size();
  const int64_t groups = options.norm_num_groups();
  conv_in = register_module(
      "conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), boc[n - 1], 3).stride(1).padding(1)));
  // diffusers registers up_blocks before mid_block; same order here.
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  mid_block = register_module("mid_block", UNetMidBlock2D(UNetMidBlock2DOptions(boc[n - 1])
                                                               .resnet_eps(1e-6)
                                                               .output_scale_factor(1.0)
                                                               .attention_head_dim(boc[n - 1])
                                                               .resnet_groups(groups)
                                                               .add_attention(options.mid_block_add_attention())
                                                               .attention_backend(options.attention_backend())));
  int64_t output_channel = boc[n - 1];
  for (size_t i = 0; i < n; ++i) {
    const int64_t prev_output_channel = output_channel;
    output_channel = boc[n - 1 - i];
    UpDecoderBlock2D block(UpDecoderBlock2DOptions(prev_output_channel, output_channel)
                               .num_layers(options.layers_per_block() + 1)
                               .resnet_eps(1e-6)
                               .resnet_groups(groups)
                               .add_upsample(i != n - 1));
    up_blocks->push_back(block);
  }
  conv_norm_out = register_module(
      "conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, boc[0]).eps(1e-6).affine(true)));
  conv_out = register_module(
      "conv_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(boc[0], options.out_channels(), 3).padding(1)));
}

at::Tensor DecoderImpl::forward(const at::Tensor& sample) {
  ZD_CHECK(sample.dim() == 4 && sample.size(1) == options.in_channels(), "Decoder: sample must be [B, ",
           options.in_channels(), ", h, w], got ", sample.sizes().vec());
  at::Tensor x = conv_in->forward(sample);
  x = mid_block->forward(x);
  for (size_t i = 0; i < up_blocks->size(); ++i) x = up_blocks->at<UpDecoderBlock2DImpl>(i).forward(x);
  x = torch::silu(conv_norm_out->forward(x));
  return conv_out->forward(x);
}

}  // namespace zerodiff::models
