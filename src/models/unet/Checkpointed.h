// Private to the UNet blocks: run a resnet or transformer layer of a ModuleList, through nn::checkpoint when
// the block's gradient_checkpointing is on (diffusers' enable_gradient_checkpointing: each resnet and each
// Transformer2DModel of the down, mid and up blocks is recomputed in backward).
#pragma once

#include <torch/nn/modules/container/modulelist.h>

#include "zerodiff/models/unet/ResnetBlock2D.h"
#include "zerodiff/models/unet/Transformer2DModel.h"
#include "zerodiff/nn/Checkpoint.h"

namespace zerodiff::models::detail {

inline at::Tensor run_resnet(const torch::nn::ModuleList& list, size_t i, const at::Tensor& x, const at::Tensor& temb,
                             bool checkpointed) {
  auto layer = list->ptr<ResnetBlock2DImpl>(i);
  if (!checkpointed) return layer->forward(x, temb);
  return nn::checkpoint([layer](const std::vector<at::Tensor>& in) { return layer->forward(in[0], in[1]); }, {x, temb});
}

inline at::Tensor run_transformer(const torch::nn::ModuleList& list, size_t i, const at::Tensor& x,
                                  const at::Tensor& encoder_hidden_states, bool checkpointed) {
  auto layer = list->ptr<Transformer2DModelImpl>(i);
  if (!checkpointed) return layer->forward(x, encoder_hidden_states);
  return nn::checkpoint([layer](const std::vector<at::Tensor>& in) { return layer->forward(in[0], in[1]); },
                        {x, encoder_hidden_states});
}

}  // namespace zerodiff::models::detail
