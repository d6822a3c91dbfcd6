// zerodiff/models/Txt2ImgPipeline.h — text-to-image sampling with classifier-free guidance over a
// diffusers Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
// Follows diffusers' StableDiffusionPipeline (0.42): prompt and negative-prompt encoding, initial latents
// randn * init_noise_sigma, per step scale_model_input -> UNet on [uncond, cond] -> guidance ->
// scheduler.step, then VAE decode of latents / scaling_factor and (x / 2 + 0.5).clamp(0, 1).
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "zerodiff/models/clip/CLIPTextModel.h"
#include "zerodiff/models/clip/CLIPTokenizer.h"
#include "zerodiff/models/schedulers/NoiseScheduler.h"
#include "zerodiff/models/unet/UNet2DConditionModel.h"
#include "zerodiff/models/vae/AutoencoderKL.h"

namespace zerodiff::models {

/// Per-call sampling options.
struct GenerateOptions {
  std::vector<std::string> prompts;           ///< B prompts
  std::vector<std::string> negative_prompts;  ///< empty (= "" for all) or B prompts
  int64_t num_inference_steps = 50;
  double guidance_scale = 7.5;                ///< <= 1 disables classifier-free guidance (no uncond pass)
  std::string scheduler;                      ///< "" = the folder's; or DDIMScheduler | EulerDiscreteScheduler | DDPMScheduler (or ddim | euler | ddpm)
  int64_t seed = 0;                           ///< CPU generator seed for the initial latents (and DDPM/eta noise)
  int64_t height = 0, width = 0;              ///< pixels; 0 = unet sample_size * vae scale factor
  int64_t num_images_per_prompt = 1;
  double eta = 0.0;                           ///< DDIM eta
  std::optional<int64_t> clip_skip;           ///< diffusers' clip_skip (layers skipped from the end)
  at::Tensor latents;                         ///< optional initial latents [B*n, C, h, w] (not yet scaled by init_noise_sigma)
};

/// The components of a Stable Diffusion pipeline, sharing the modules passed in (no copies).
class Txt2ImgPipeline {
 public:
  Txt2ImgPipeline(UNet2DConditionModel unet, AutoencoderKL vae, CLIPTextModel text_encoder, CLIPTokenizer tokenizer,
                  SchedulerConfig scheduler);

  /// Loads a diffusers folder. Throws IoError naming the missing sub-folder/file (model_index.json,
  /// unet/, vae/, text_encoder/, tokenizer/, scheduler/scheduler_config.json) or the bad key. A scheduler class
  /// zerodiff lacks (e.g. SD 1.5's PNDMScheduler) is replaced by DDIMScheduler.from_config(...) with a warning.
  static Txt2ImgPipeline from_pretrained(const std::string& dir, const std::string& variant = "");

  /// Writes the whole folder so that diffusers' StableDiffusionPipeline.from_pretrained loads it.
  void save_pretrained(const std::string& dir) const;

  /// Prompt embeddings [B, 77, D] (the text encoder's last hidden state, or clip_skip's layer + final norm).
  at::Tensor encode_prompt(const std::vector<std::string>& prompts, std::optional<int64_t> clip_skip = {}) const;

  /// Images [B * num_images_per_prompt, 3, H, W] float32 in [0, 1] on the CPU. Runs on the UNet's device
  /// without gradients. Throws zerodiff::Error for bad sizes (H, W not multiples of 8 * ...), a negative prompt
  /// count that differs from the prompts', or an unknown scheduler name.
  at::Tensor generate(const GenerateOptions& options) const;

  UNet2DConditionModel& unet() { return unet_; }
  AutoencoderKL& vae() { return vae_; }
  CLIPTextModel& text_encoder() { return text_encoder_; }
  const CLIPTokenizer& tokenizer() const { return tokenizer_; }
  const SchedulerConfig& scheduler_config() const { return scheduler_; }

 private:
  UNet2DConditionModel unet_;
  AutoencoderKL vae_;
  CLIPTextModel text_encoder_;
  CLIPTokenizer tokenizer_;
  SchedulerConfig scheduler_;
  nlohmann::json scheduler_json_;  // scheduler_config.json as read by from_pretrained (null otherwise)
};

/// The 8-bit PNG file bytes of one image [3, H, W] (float in [0, 1]; also [1, H, W] grey or [4, H, W] RGBA),
/// via stb_image_write. Pixels are round(x * 255) after clamping to [0, 1], as diffusers' numpy_to_pil.
/// Throws zerodiff::Error for a bad shape.
std::string encode_png(const at::Tensor& image);

/// Writes encode_png(image) to `path` atomically (temp file + rename). Throws zerodiff::Error naming the file
/// for a bad shape, IoError when the file cannot be written.
void write_png(const at::Tensor& image, const std::string& path);

/// Tiles images [N, C, H, W] row-major into one [C, rows * H, columns * W] image (diffusers' make_image_grid);
/// columns = 0 picks ceil(sqrt(N)); unused cells are black (0). Throws zerodiff::Error for a bad shape.
at::Tensor make_image_grid(const at::Tensor& images, int64_t columns = 0);

/// The scheduler class a name denotes: diffusers' class names or ddim | euler | ddpm in any case
/// (kSchedulerKindNames). Throws zerodiff::Error naming the accepted names otherwise.
SchedulerKind scheduler_kind(const std::string& name);

/// `config` as diffusers' `<Class>.from_config(config)` would build another scheduler class: the fields that
/// `raw` (the scheduler_config.json object it was read from, or config.to_json() when null) sets are kept,
/// the rest take the new class's defaults.
SchedulerConfig convert_scheduler_config(const SchedulerConfig& config, SchedulerKind class_name,
                                         const nlohmann::json& raw = nullptr);

}  // namespace zerodiff::models
