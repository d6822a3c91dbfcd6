// zerodiff/nn/Linear.h — the forward of a torch::nn::Linear through ATen's at::linear, as PyTorch's Python
// F.linear runs it.
//
// LibTorch's C++ torch::nn::Linear::forward (torch/nn/functional/linear.h) fuses the bias only for 2-d inputs
// (addmm); for [B, N, C] inputs it runs matmul, then `+= bias`, and its backward a separate bias reduction.
// at::linear flattens contiguous N-d inputs and calls addmm (bias folded into the GEMM). Every Linear of the model
// stack (UNet, VAE and CLIP attention projections, feed-forward, GEGLU, time embedding) goes through this.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

namespace zerodiff::nn {

/// y = x Wᵀ + b for x [..., in_features] -> [..., out_features], in x's dtype (under autocast, its cast policy):
/// the same result as layer->forward(x) within float rounding. Throws c10::Error (from ATen) when x's last dim is
/// not in_features.
inline at::Tensor linear(const torch::nn::Linear& layer, const at::Tensor& x) {
  return at::linear(x, layer->weight, layer->bias.defined() ? std::optional<at::Tensor>(layer->bias) : std::nullopt);
}

}  // namespace zerodiff::nn
