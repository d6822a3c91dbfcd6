#include "zerodiff/models/unet/Timesteps.h"

#include <torch/torch.h>

#include <cmath>

#include "zerodiff/core/Error.h"

namespace zerodiff::models {

at::Tensor get_timestep_embedding(const at::Tensor& timesteps, int64_t embedding_dim, bool flip_sin_to_cos,
                                  double downscale_freq_shift, double scale, int64_t max_period) {
  ZD_CHECK(timesteps.defined() && timesteps.dim() == 1, "get_timestep_embedding: timesteps must be 1-d [N], got ",
           timesteps.defined() ? timesteps.sizes().vec() : std::vector<int64_t>{});
  ZD_CHECK(embedding_dim >= 1, "get_timestep_embedding: embedding_dim must be >= 1, got ", embedding_dim);
  const int64_t half_dim = embedding_dim / 2;
  // Same ops in the same order as diffusers (float32 throughout).
  at::Tensor exponent =
      torch::arange(0, half_dim, torch::TensorOptions().dtype(torch::kFloat32).device(timesteps.device())) *
      (-std::log(static_cast<double>(max_period)));
  exponent = exponent / (static_cast<double>(half_dim) - downscale_freq_shift);
  at::Tensor emb = torch::exp(exponent);
  emb = timesteps.unsqueeze(1).to(torch::kFloat32) * emb.unsqueeze(0);
  emb = emb * scale;
  emb = torch::cat({torch::sin(emb), torch::cos(emb)}, -1);
  if (flip_sin_to_cos) {
    emb = torch::cat({emb.slice(1, half_dim), emb.slice(1, 0, half_dim)}, -1);
  }
  if (embedding_dim % 2 == 1) {
    emb = torch::constant_pad_nd(emb, {0, 1, 0, 0}, 0);
  }
  return emb;
}

TimestepsImpl::TimestepsImpl(TimestepsOptions options_) : options(std::move(options_)) {}

at::Tensor TimestepsImpl::forward(const at::Tensor& timesteps) const {
  return get_timestep_embedding(timesteps, options.num_channels(), options.flip_sin_to_cos(),
                                options.downscale_freq_shift(), options.scale(), options.max_period());
}

}  // namespace zerodiff::models
