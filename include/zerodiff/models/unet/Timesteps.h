// zerodiff/models/unet/Timesteps.h — sinusoidal timestep embedding (no parameters).
// Follows diffusers.models.embeddings.get_timestep_embedding / Timesteps (0.42.1) op for op.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace zerodiff::models {

/// The DDPM sinusoidal embedding of timesteps, exactly diffusers' `get_timestep_embedding`:
///   half = dim / 2; freqs = exp(-ln(max_period) * arange(half) / (half - downscale_freq_shift));
///   emb = scale * t[:, None].float() * freqs[None]; emb = cat(sin(emb), cos(emb));
///   with flip_sin_to_cos the halves are swapped to (cos, sin); odd dims get one zero column.
/// `timesteps`: [N], any real or integer dtype (fractional values allowed). Returns [N, dim] float32 on
/// timesteps' device. Throws zerodiff::Error when `timesteps` is not 1-d or dim < 1.
at::Tensor get_timestep_embedding(const at::Tensor& timesteps, int64_t embedding_dim, bool flip_sin_to_cos = false,
                                  double downscale_freq_shift = 1.0, double scale = 1.0,
                                  int64_t max_period = 10000);

/// Options of Timesteps (diffusers `Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift, scale)`).
struct TimestepsOptions {
  explicit TimestepsOptions(int64_t num_channels) : num_channels_(num_channels) {}
  /// Embedding size (the UNet uses block_out_channels[0]).
  TORCH_ARG(int64_t, num_channels);
  /// Output order (cos, sin) instead of (sin, cos); config key `flip_sin_to_cos`.
  TORCH_ARG(bool, flip_sin_to_cos) = true;
  /// Frequency denominator shift; config key `freq_shift`.
  TORCH_ARG(double, downscale_freq_shift) = 0.0;
  TORCH_ARG(double, scale) = 1.0;
  TORCH_ARG(int64_t, max_period) = 10000;
};

/// Module wrapper of get_timestep_embedding (diffusers `Timesteps`); registered as `time_proj`.
class TimestepsImpl : public torch::nn::Cloneable<TimestepsImpl> {
 public:
  explicit TimestepsImpl(TimestepsOptions options);
  void reset() override {}
  /// timesteps [N] -> [N, num_channels] float32.
  at::Tensor forward(const at::Tensor& timesteps) const;

  TimestepsOptions options;
};
TORCH_MODULE(Timesteps);

}  // namespace zerodiff::models
