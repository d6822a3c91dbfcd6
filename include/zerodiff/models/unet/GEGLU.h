// zerodiff/models/unet/GEGLU.h — gated GELU projection of the transformer feed-forward.
// Follows diffusers.models.activations.GEGLU (0.42.1).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace zerodiff::models {

/// proj: Linear(dim_in, 2 * dim_out); hidden, gate = proj(x).chunk(2, -1); out = hidden * gelu(gate)
/// (exact erf GELU). Parameter names: proj.
class GEGLUImpl : public torch::nn::Cloneable<GEGLUImpl> {
 public:
  GEGLUImpl(int64_t dim_in, int64_t dim_out, bool bias = true);
  void reset() override;
  /// x [..., dim_in] -> [..., dim_out].
  at::Tensor forward(const at::Tensor& x);

  int64_t dim_in, dim_out;
  bool bias;
  torch::nn::Linear proj{nullptr};
};
TORCH_MODULE(GEGLU);

}  // namespace zerodiff::models
