// zerodiff/models/unet/FeedForward.h — the transformer block's MLP.
// Follows diffusers.models.attention.FeedForward (0.42.1) with activation_fn "geglu", no final dropout.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>

#include "zerodiff/models/unet/GEGLU.h"

namespace zerodiff::models {

/// Options of FeedForward.
struct FeedForwardOptions {
  explicit FeedForwardOptions(int64_t dim) : dim_(dim) {}
  TORCH_ARG(int64_t, dim);
  /// nullopt = dim.
  TORCH_ARG(std::optional<int64_t>, dim_out) = std::nullopt;
  /// Hidden size = dim * mult unless inner_dim is set.
  TORCH_ARG(int64_t, mult) = 4;
  TORCH_ARG(std::optional<int64_t>, inner_dim) = std::nullopt;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(bool, bias) = true;
};

/// net.0 = GEGLU(dim, inner) (`net.0.proj`), net.1 = Dropout, net.2 = Linear(inner, dim_out).
class FeedForwardImpl : public torch::nn::Cloneable<FeedForwardImpl> {
 public:
  explicit FeedForwardImpl(FeedForwardOptions options);
  void reset() override;
  /// x [..., dim] -> [..., dim_out].
  at::Tensor forward(const at::Tensor& x);

  FeedForwardOptions options;
  torch::nn::ModuleList net{nullptr};  // [0] GEGLU, [1] Dropout, [2] Linear
};
TORCH_MODULE(FeedForward);

}  // namespace zerodiff::models
