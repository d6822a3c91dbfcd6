// zerodiff/train/Modules.h — the built-in TrainingModules:
//   TextToImageModule  latent diffusion (UNet denoiser on VAE latents, conditioned on CLIP text embeddings),
//                      as diffusers' examples/text_to_image/train_text_to_image.py;
//   AutoencoderModule  an AutoencoderKL trained from scratch or fine-tuned (reconstruction + KL), as the
//                      LDM paper's first stage without the perceptual/adversarial terms.
// Paths in these configs are relative to the working directory.
#pragma once

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "zerodiff/models/LatentDiffusion.h"
#include "zerodiff/models/clip/CLIPTextModel.h"
#include "zerodiff/models/clip/CLIPTokenizer.h"
#include "zerodiff/models/schedulers/NoiseScheduler.h"
#include "zerodiff/models/unet/UNet2DConditionModel.h"
#include "zerodiff/models/vae/AutoencoderKL.h"
#include "zerodiff/train/TrainingModule.h"

namespace zerodiff::train {

/// Where the VAE encode of a mixed-precision step runs (text_to_image.vae_precision).
enum class VaePrecision { fp32, autocast };
inline constexpr EnumName<VaePrecision> kVaePrecisionNames[] = {{VaePrecision::fp32, "fp32"},
                                                                {VaePrecision::autocast, "autocast"}};
constexpr std::span<const EnumName<VaePrecision>> enum_names(VaePrecision) { return kVaePrecisionNames; }

/// The autoencoder's reconstruction loss (autoencoder.reconstruction).
enum class ReconstructionLoss { l1, mse };
inline constexpr EnumName<ReconstructionLoss> kReconstructionLossNames[] = {{ReconstructionLoss::l1, "l1"},
                                                                            {ReconstructionLoss::mse, "mse"}};
constexpr std::span<const EnumName<ReconstructionLoss>> enum_names(ReconstructionLoss) {
  return kReconstructionLossNames;
}

/// What a text-to-image run may train the UNet to predict (a scheduler may also say `sample`; not trained here).
inline constexpr models::PredictionType kTrainedPredictionTypes[] = {models::PredictionType::epsilon,
                                                                     models::PredictionType::v_prediction};
/// The samplers of the sample grids, in the order the reference lists them.
inline constexpr models::SchedulerKind kSampleSchedulers[] = {
    models::SchedulerKind::ddim, models::SchedulerKind::euler_discrete, models::SchedulerKind::ddpm};

struct TextToImageConfig {
  std::string pretrained;    ///< a diffusers Stable Diffusion folder (all components); or the fields below
  std::string unet;          ///< folder with config.json (+ weights to fine-tune) or a config.json (from scratch)
  std::string vae;           ///< folder with config.json + weights (frozen)
  std::string text_encoder;  ///< folder with config.json (+ weights) or a config.json (from scratch)
  std::string tokenizer;     ///< tokenizer folder (vocab.json + merges.txt)
  std::string scheduler;     ///< scheduler_config.json; "" = DDPM with SD's scaled_linear 0.00085..0.012 betas
  bool train_text_encoder = false;
  std::optional<double> text_encoder_lr;  ///< peak lr of the text encoder; none = trainer.optimizer.lr
  bool cache_latents = false;   ///< encode each training image once; reuse its posterior every epoch
  VaePrecision vae_precision = VaePrecision::fp32;  ///< the VAE encode inside a mixed-precision step
  bool gradient_checkpointing = false;  ///< recompute the UNet's resnet / transformer activations in backward
  std::optional<models::PredictionType> prediction_type;  ///< none = the scheduler's
  double noise_offset = 0.0;
  double snr_gamma = 0.0;       ///< min-SNR-gamma weighting; 0 = off
  std::optional<int64_t> clip_skip;
  int64_t sample_steps = 25;
  double sample_guidance_scale = 7.5;
  models::SchedulerKind sample_scheduler = models::SchedulerKind::ddim;

  template <class V>
  void visit(V& v) {
    v("pretrained", pretrained, "Diffusers Stable Diffusion folder to fine-tune (all components)");
    v("unet", unet, "UNet folder (config.json + weights) or config.json to train from scratch");
    v("vae", vae, "VAE folder (config.json + weights), frozen");
    v("text_encoder", text_encoder, "Text encoder folder or config.json");
    v("tokenizer", tokenizer, "CLIP tokenizer folder (vocab.json + merges.txt)");
    v("scheduler", scheduler, "Noise scheduler config (scheduler_config.json)");
    v("train_text_encoder", train_text_encoder, "Train the text encoder with the UNet");
    v("text_encoder_lr", text_encoder_lr,
      "Peak learning rate of the text encoder (its own AdamW group, same schedule); empty = trainer.optimizer.lr");
    v("vae_precision", vae_precision,
      "VAE encode under 16-mixed / bf16-mixed: fp32 (default; SD's VAE overflows in float16) or autocast");
    v("gradient_checkpointing", gradient_checkpointing,
      "Activation checkpointing of the UNet (every resnet and transformer of its blocks is recomputed in "
      "backward): less activation memory for more compute; the gradients are unchanged");
    v("cache_latents", cache_latents,
      "Encode each training image once and reuse its VAE posterior (a fresh latent sample every step); needs "
      "deterministic images (data.random_flip false; data.center_crop true unless synthetic); CPU memory: "
      "2 x latent size per sample");
    v.choice("prediction_type", prediction_type, std::span<const models::PredictionType>(kTrainedPredictionTypes),
             "epsilon or v_prediction; empty or null = the scheduler's");
    v("noise_offset", noise_offset, "Offset noise strength (0 = off)");
    v("snr_gamma", snr_gamma, "Min-SNR-gamma loss weighting (0 = off; 5 is the paper's)");
    v("clip_skip", clip_skip, "Text encoder layers skipped from the end");
    v("sample_steps", sample_steps, "Sampling steps of the sample grids");
    v("sample_guidance_scale", sample_guidance_scale, "Classifier-free guidance scale of the sample grids");
    v.choice("sample_scheduler", sample_scheduler, std::span<const models::SchedulerKind>(kSampleSchedulers),
             "Sampler of the sample grids");
    v.check(!text_encoder_lr || *text_encoder_lr > 0, "text_encoder_lr", "must be > 0, got ", text_encoder_lr.value_or(0));
    v.check(!text_encoder_lr || train_text_encoder, "text_encoder_lr", "needs train_text_encoder: true");
    v.check(noise_offset >= 0, "noise_offset", "must be >= 0, got ", noise_offset);
    v.check(snr_gamma >= 0, "snr_gamma", "must be >= 0, got ", snr_gamma);
    v.check(sample_steps >= 1, "sample_steps", "must be >= 1, got ", sample_steps);
  }
};

class TextToImageModule : public TrainingModule {
 public:
  /// Throws ConfigError when neither `pretrained` nor (unet, vae, text_encoder, tokenizer) are given.
  explicit TextToImageModule(TextToImageConfig config);
  void configure_model(const torch::Device& device) override;
  torch::nn::Module& model() override { return *root_; }
  std::vector<std::pair<std::string, at::Tensor>> trainable_parameters() override;
  /// "unet" (trainer.optimizer.lr) and, when the text encoder is trained, "text_encoder" (text_encoder_lr).
  std::vector<ParameterGroup> parameter_groups() override;
  /// Loss of diffusion_loss (models/LatentDiffusion.h) on latents = posterior sample x scaling_factor of the
  /// frozen VAE (from the latent cache when cache_latents is on) and the caption embeddings.
  StepOutput training_step(const data::Batch& batch, StepContext& ctx) override;
  /// The same loss without gradients, the UNet and text encoder in eval mode, never from the latent cache.
  std::optional<StepOutput> validation_step(const data::Batch& batch, StepContext& ctx) override;
  std::optional<at::Tensor> sample(const std::vector<std::string>& prompts, int64_t seed) override;
  /// A diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
  void export_to(const std::string& dir) override;

  models::UNet2DConditionModel& unet() { return unet_; }

  /// zero3 units: "text_encoder" (when trained) then the UNet's units() (stem, down_blocks.i, mid_block,
  /// up_blocks.i, head).
  std::vector<parallel::UnitSpec> sharding_units() override;
  void set_unit_hooks(parallel::UnitHooks* hooks) override;

 private:
  TextToImageConfig config_;
  parallel::UnitHooks* unit_hooks_ = nullptr;
  std::shared_ptr<torch::nn::Module> root_;
  models::UNet2DConditionModel unet_{nullptr};
  models::AutoencoderKL vae_{nullptr};
  models::CLIPTextModel text_encoder_{nullptr};
  std::optional<models::CLIPTokenizer> tokenizer_;
  std::unique_ptr<models::NoiseScheduler> scheduler_;        // training noise (DDPM forward process)
  std::optional<models::SchedulerConfig> export_scheduler_;  // sampler of grids and of the export
  models::DiffusionLossOptions loss_options_;
  // cache_latents: VAE posterior parameters [2C, h, w] (CPU) by dataset index. Each image is encoded alone,
  // so a cached posterior does not depend on the batch it first came in (a resumed run refills it exactly).
  std::unordered_map<int64_t, at::Tensor> latent_cache_;

  at::Tensor text_embeddings(const data::Batch& batch, const StepContext& ctx, bool grad);
  // VAE posterior parameters [B, 2C, h, w] of images [B, 3, H, W] in [-1, 1], without gradients, in float32
  // unless vae_precision is autocast.
  at::Tensor posterior_parameters(const at::Tensor& images, const StepContext& ctx);
  at::Tensor training_latents(const data::Batch& batch, StepContext& ctx);
};

struct AutoencoderConfig {
  std::string vae;                     ///< folder (config.json + weights) or config.json (from scratch)
  ReconstructionLoss reconstruction = ReconstructionLoss::l1;
  double kl_weight = 1e-6;
  int64_t sample_images = 8;           ///< reconstructions shown in the sample grid
  template <class V>
  void visit(V& v) {
    v("vae", vae, "VAE folder (config.json + weights) or config.json to train from scratch");
    v("reconstruction", reconstruction, "Reconstruction loss");
    v("kl_weight", kl_weight, "Weight of the KL term (per-pixel normalised)");
    v("sample_images", sample_images, "Images reconstructed in the sample grid");
    v.check(kl_weight >= 0, "kl_weight", "must be >= 0, got ", kl_weight);
  }
};

class AutoencoderModule : public TrainingModule {
 public:
  /// Throws ConfigError when `vae` is empty.
  explicit AutoencoderModule(AutoencoderConfig config);
  void configure_model(const torch::Device& device) override;
  torch::nn::Module& model() override { return *vae_; }
  /// loss = rec(x, decode(z)) + kl_weight * KL(q(z|x) || N(0, I)) / (C * H * W), z ~ q(z|x) from ctx.generator.
  StepOutput training_step(const data::Batch& batch, StepContext& ctx) override;
  /// The first sample_images training images (row 1) above their reconstructions (row 2); prompts unused.
  std::optional<at::Tensor> sample(const std::vector<std::string>& prompts, int64_t seed) override;
  /// Latent moments and the sample-grid images, so a resumed run exports the same scaling_factor.
  std::map<std::string, at::Tensor> extra_state() override;
  void load_extra_state(const std::map<std::string, at::Tensor>& state) override;
  /// L1/MSE reconstruction of the posterior mode (no sampling, no gradients) and the KL term, as training logs.
  std::optional<StepOutput> validation_step(const data::Batch& batch, StepContext& ctx) override;
  /// Writes the VAE folder with scaling_factor = 1 / std of the latents seen in training (LDM, Sec. 4.3.2).
  void export_to(const std::string& dir) override;

 private:
  AutoencoderConfig config_;
  models::AutoencoderKL vae_{nullptr};
  // rec(x, rec) + kl_weight * KL / (C * H * W), with "rec" and "kl" (per image) as logs.
  StepOutput loss(const at::Tensor& x, const at::Tensor& rec, const models::DiagonalGaussianDistribution& posterior) const;
  double latent_sum_ = 0, latent_sq_sum_ = 0, latent_count_ = 0;
  at::Tensor sample_batch_;  // [N, 3, H, W] in [-1, 1], the first images seen
};

}  // namespace zerodiff::train
