// zerodiff/models/unet/UNet2DConditionModel.h — the Stable Diffusion denoiser.
// Follows diffusers.models.unets.unet_2d_condition.UNet2DConditionModel (0.42.1). Module names equal
// diffusers' state-dict keys, so diffusers checkpoints load without renaming.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "zerodiff/models/unet/CrossAttnDownBlock2D.h"
#include "zerodiff/models/unet/CrossAttnUpBlock2D.h"
#include "zerodiff/models/unet/DownBlock2D.h"
#include "zerodiff/models/unet/TimestepEmbedding.h"
#include "zerodiff/models/unet/Timesteps.h"
#include "zerodiff/models/unet/UNet2DConditionOptions.h"
#include "zerodiff/models/unet/UNetMidBlock2DCrossAttn.h"
#include "zerodiff/models/unet/UpBlock2D.h"
#include "zerodiff/nn/Unit.h"
#include "zerodiff/parallel/UnitHooks.h"

namespace zerodiff::models {

/// Parameter names: conv_in, time_embedding.linear_{1,2}, down_blocks.<i>, mid_block, up_blocks.<i>,
/// conv_norm_out, conv_out (time_proj has none). Parameters are float32 on CPU after construction.
class UNet2DConditionModelImpl : public torch::nn::Cloneable<UNet2DConditionModelImpl> {
 public:
  /// Builds the model (random init, as torch's default initialisers). Throws ConfigError /
  /// NotImplementedError from options.validate().
  explicit UNet2DConditionModelImpl(UNet2DConditionOptions options);
  void reset() override;

  /// sample [B, in_channels, H, W] (any H, W; sizes that are not a multiple of 2^num_upsamplers
  /// are handled as diffusers does), timestep a 0-d, [1] or [B] tensor (integer or floating),
  /// encoder_hidden_states [B, S, cross_attention_dim] -> [B, out_channels, H, W] in sample's dtype.
  /// Throws zerodiff::Error naming the tensor on a wrong shape.
  at::Tensor forward(const at::Tensor& sample, const at::Tensor& timestep, const at::Tensor& encoder_hidden_states);

  /// Sharding units in execution order: "stem" (time_embedding + conv_in), "down_blocks.<i>",
  /// "mid_block", "up_blocks.<i>", "head" (conv_norm_out + conv_out). Every parameter is in one unit.
  /// The grouping modules of "stem" and "head" are built on each call (cheap; they share parameters).
  std::vector<nn::Unit> units() const;

  /// Calls `hooks` (zero3) around each unit's forward, unit i of units() reported as first_unit + i; null
  /// removes them. The hooks are not owned and must outlive their use.
  void set_unit_hooks(parallel::UnitHooks* hooks, size_t first_unit = 0) {
    unit_hooks_ = hooks;
    first_unit_ = first_unit;
  }

  /// diffusers' enable_gradient_checkpointing / disable_gradient_checkpointing: every resnet and transformer of
  /// the down, mid and up blocks runs through nn::checkpoint while training with grad enabled (activations of
  /// those layers are recomputed in backward; the gradients are unchanged).
  void enable_gradient_checkpointing(bool on = true);
  bool gradient_checkpointing() const { return gradient_checkpointing_; }

  /// Number of upsamplers (= len(block_out_channels) - 1).
  int64_t num_upsamplers() const { return num_upsamplers_; }

  UNet2DConditionOptions options;
  torch::nn::Conv2d conv_in{nullptr};
  Timesteps time_proj{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};  // CrossAttnDownBlock2D / DownBlock2D
  UNetMidBlock2DCrossAttn mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};  // UpBlock2D / CrossAttnUpBlock2D
  torch::nn::GroupNorm conv_norm_out{nullptr};
  torch::nn::Conv2d conv_out{nullptr};

 private:
  int64_t num_upsamplers_ = 0;
  bool gradient_checkpointing_ = false;
  parallel::UnitHooks* unit_hooks_ = nullptr;
  size_t first_unit_ = 0;
};
TORCH_MODULE(UNet2DConditionModel);

/// Builds a UNet from a diffusers folder (`<dir>/config.json` + `diffusion_pytorch_model[.<variant>]
/// .safetensors` or its sharded index) and loads the weights strictly (float32, CPU). Throws IoError
/// (missing files; missing/unexpected/mis-shaped keys, all named), ConfigError / NotImplementedError
/// (config problems, prefixed with the config.json path).
UNet2DConditionModel unet_from_pretrained(const std::string& dir, const std::string& variant = "");

/// Writes `<dir>/config.json` (options.to_json()) and `<dir>/diffusion_pytorch_model.safetensors`, a
/// folder diffusers' UNet2DConditionModel.from_pretrained loads. Throws IoError on write failures.
void save_pretrained(const UNet2DConditionModel& model, const std::string& dir);

}  // namespace zerodiff::models
