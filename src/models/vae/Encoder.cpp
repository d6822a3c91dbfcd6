#include "zerodiff/models/vae/Encoder.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"

namespace zerodiff::models {

EncoderImpl::EncoderImpl(EncoderOptions options_) : options(std::move(options_)) { reset(); }

void EncoderImpl::reset() {
  const auto& boc = options.block_out_channels();
  ZD_CHECK(!boc.empty(), "Encoder: block_out_channels must not be empty");
  const size_t n = boc.size();
  const int64_t groups = options.norm_num_groups();
  conv_in = register_module("conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), boc[0], 3)
                                                             .stride(1)
                                                             .padding(1)));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  int64_t output_channel = boc[0];
  for (size_t i = 0; i < n; ++i) {
    const int64_t input_channel = output_channel;
    output_channel = boc[i];
    DownEncoderBlock2D block(DownEncoderBlock2DOptions(input_channel, output_channel)
                                 .num_layers(options.layers_per_block())
                                 .resnet_eps(1e-6)
                                 .resnet_groups(groups)
                                 .add_downsample(i != n - 1)
                                 .downsample_padding(0));
    down_blocks->push_back(block);
  }
  mid_block = register_module("mid_block", UNetMidBlock2D(UNetMidBlock2DOptions(boc[n - 1])
                                                               .resnet_eps(1e-6)
                                                               .output_scale_factor(1.0)
                                                               .attention_head_dim(boc[n - 1])
                                                               .resnet_groups(groups)
                                                               .add_attention(options.mid_block_add_attention())
                                                               .attention_backend(options.attention_backend())));
  conv_norm_out = register_module(
      "conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, boc[n - 1]).eps(1e-6).affine(true)));
  const int64_t conv_out_channels = options.double_z() ? 2 * options.out_channels() : options.out_channels();
  conv_out = register_module(
      "conv_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(boc[n - 1], conv_out_channels, 3).padding(1)));
}

at::Tensor EncoderImpl::forward(const at::Tensor& sample) {
  ZD_CHECK(sample.dim() == 4 && sample.size(1) == options.in_channels(), "Encoder: sample must be [B, ",
           options.in_channels(), ", H, W], got ", sample.sizes().vec());
  at::Tensor x = conv_in->forward(sample);
  for (size_t i = 0; i < down_blocks->size(); ++i) x = down_blocks->at<DownEncoderBlock2DImpl>(i).forward(x);
  x = mid_block->forward(x);
  x = torch::silu(conv_norm_out->forward(x));
  return conv_out->forward(x);
}

}  // namespace zerodiff::models
