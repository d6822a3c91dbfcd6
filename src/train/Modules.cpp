// TextToImageModule and AutoencoderModule. References: diffusers examples/text_to_image/
// train_text_to_image.py (frozen VAE and text encoder, latents = posterior sample * scaling_factor, the
// objective in models/LatentDiffusion) and the LDM first-stage objective (Rombach et al. 2022, §3 and App. G)
// without its perceptual and adversarial terms.
#include "zerodiff/train/Modules.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/models/Txt2ImgPipeline.h"
#include "zerodiff/nn/Autocast.h"

namespace fs = std::filesystem;

namespace zerodiff::train {

namespace {

// "dir/config.json" for a folder, the file itself for a .json path.
nlohmann::json read_json_path(const std::string& path, const std::string& key) {
  if (path.empty()) throw ConfigError(zerodiff::str("model config: '", key, "' is required"));
  if (fs::is_directory(path)) return io::read_config_json(path);
  if (!fs::exists(path)) throw IoError(zerodiff::str(path, ": does not exist (", key, ")"));
  if (io::looks_like_pickle(path)) {
    throw IoError(zerodiff::str(path, " (", key, "): a PyTorch pickle, where a model folder (config.json + ",
                                "safetensors weights) or a config.json was expected; ", io::pickle_refusal_advice()));
  }
  std::ifstream in(path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw IoError(zerodiff::str(path, ": invalid JSON: ", e.what()));
  }
}

// A folder's safetensors weights. A folder holding pickle weights instead is refused (never a silent random
// initialisation of a model the user meant to fine-tune).
bool has_weights(const std::string& path, const std::string& base) {
  if (!fs::is_directory(path)) return false;
  if (fs::exists(fs::path(path) / (base + ".safetensors")) ||
      fs::exists(fs::path(path) / (base + ".safetensors.index.json"))) {
    return true;
  }
  for (const char* ext : {".bin", ".ckpt", ".pt", ".pth", ".bin.index.json"}) {
    const fs::path pickle = fs::path(path) / (base + ext);
    if (fs::exists(pickle)) {
      throw IoError(zerodiff::str(path, ": only ", pickle.filename().string(), " (pickle weights) is present, no ", base,
                                  ".safetensors; ", io::pickle_refusal_advice()));
    }
  }
  return false;
}

models::UNet2DConditionModel load_unet(const std::string& path, bool read_weights = true) {
  if (read_weights && has_weights(path, io::kDiffusersWeightsName)) return models::unet_from_pretrained(path);
  ZD_LOG_INFO("UNet from config ", path, " (random initialisation)");
  return models::UNet2DConditionModel(models::UNet2DConditionOptions::from_json(read_json_path(path, "unet")));
}

models::AutoencoderKL load_vae(const std::string& path, bool weights_required, bool read_weights = true) {
  if (read_weights && has_weights(path, io::kDiffusersWeightsName)) return models::vae_from_pretrained(path);
  if (weights_required && read_weights) {
    throw IoError(zerodiff::str(path.empty() ? std::string("model config: 'vae'") : path,
                                ": a trained VAE folder (config.json + diffusion_pytorch_model.safetensors) is required; "
                                "train one with task: autoencoder first"));
  }
  ZD_LOG_INFO("VAE from config ", path, " (random initialisation)");
  return models::AutoencoderKL(models::AutoencoderKLOptions::from_json(read_json_path(path, "vae")));
}

models::CLIPTextModel load_text_encoder(const std::string& path, bool read_weights = true) {
  if (read_weights && has_weights(path, io::kTransformersWeightsName)) return models::clip_text_model_from_pretrained(path);
  ZD_LOG_INFO("text encoder from config ", path, " (random initialisation)");
  return models::CLIPTextModel(models::CLIPTextOptions::from_json(read_json_path(path, "text_encoder")));
}

models::SchedulerConfig sd_training_scheduler() {
  models::SchedulerConfig c = models::SchedulerConfig::defaults_for(models::SchedulerKind::ddpm);
  c.beta_schedule = models::BetaSchedule::scaled_linear;
  c.beta_start = 0.00085;
  c.beta_end = 0.012;
  c.steps_offset = 1;
  c.clip_sample = false;
  return c;
}

void freeze(torch::nn::Module& m) {
  for (auto& p : m.parameters()) p.set_requires_grad(false);
  m.eval();
}

}  // namespace

// ------------------------------------------------------------------ TextToImageModule

TextToImageModule::TextToImageModule(TextToImageConfig config) : config_(std::move(config)) {
  const auto& c = config_;
  if (c.pretrained.empty()) {
    for (auto [key, value] : {std::pair{"unet", &c.unet}, {"vae", &c.vae}, {"text_encoder", &c.text_encoder},
                              {"tokenizer", &c.tokenizer}}) {
      if (value->empty()) {
        throw ConfigError(zerodiff::str("text_to_image.", key, " is required when text_to_image.pretrained is not set"));
      }
    }
  }
}

void TextToImageModule::configure_model(const torch::Device& device) {
  const auto& c = config_;
  models::SchedulerConfig sched;
  if (!c.pretrained.empty() && !read_weights_) {
    // --dry-run: the components' architectures from their config.json files, nothing else read.
    if (!fs::is_directory(c.pretrained)) throw IoError(zerodiff::str(c.pretrained, ": pretrained folder does not exist"));
    const fs::path root(c.pretrained);
    unet_ = load_unet((root / "unet").string(), false);
    vae_ = load_vae((root / "vae").string(), false, false);
    text_encoder_ = load_text_encoder((root / "text_encoder").string(), false);
    sched = sd_training_scheduler();
    export_scheduler_ = sched;
  } else if (!c.pretrained.empty()) {
    if (!fs::is_directory(c.pretrained)) throw IoError(zerodiff::str(c.pretrained, ": pretrained folder does not exist"));
    // The pipeline loader reads every component and maps unsupported samplers (SD 1.5's PNDMScheduler) to DDIM
    // with the same betas. Training uses the DDPM forward process with those betas, as diffusers' scripts do;
    // the folder's own sampler config is kept for sample grids and the export.
    auto pipe = models::Txt2ImgPipeline::from_pretrained(c.pretrained);
    unet_ = pipe.unet();
    vae_ = pipe.vae();
    text_encoder_ = pipe.text_encoder();
    tokenizer_ = pipe.tokenizer();
    export_scheduler_ = pipe.scheduler_config();
    sched = models::convert_scheduler_config(*export_scheduler_, models::SchedulerKind::ddpm);
  } else {
    unet_ = load_unet(c.unet, read_weights_);
    vae_ = load_vae(c.vae, /*weights_required=*/true, read_weights_);
    text_encoder_ = load_text_encoder(c.text_encoder, read_weights_);
    if (read_weights_) tokenizer_ = models::CLIPTokenizer::from_pretrained(c.tokenizer);
    sched = c.scheduler.empty() ? sd_training_scheduler()
                                : models::SchedulerConfig::from_json(read_json_path(c.scheduler, "scheduler"));
    export_scheduler_ = sched;
  }
  if (c.prediction_type) {
    sched.prediction_type = *c.prediction_type;
    export_scheduler_->prediction_type = *c.prediction_type;
  }
  scheduler_ = models::NoiseScheduler::create(sched);
  loss_options_.prediction_type = sched.prediction_type;
  loss_options_.noise_offset = c.noise_offset;
  if (c.snr_gamma > 0) loss_options_.snr_gamma = c.snr_gamma;

  root_ = std::make_shared<torch::nn::Module>("TextToImage");
  root_->register_module("unet", unet_);
  root_->register_module("vae", vae_);
  root_->register_module("text_encoder", text_encoder_);
  freeze(*vae_);
  if (!c.train_text_encoder) freeze(*text_encoder_);
  unet_->enable_gradient_checkpointing(c.gradient_checkpointing);
  unet_->train();
  root_->to(device);
  int64_t trainable = 0;
  for (auto& [_, p] : trainable_parameters()) trainable += p.numel();
  ZD_LOG_INFO("text-to-image: UNet ", unet_->parameters().size(), " tensors; trainable parameters ", trainable,
              "; prediction ", sched.prediction_type);
}

std::vector<std::pair<std::string, at::Tensor>> TextToImageModule::trainable_parameters() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& g : parameter_groups()) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

std::vector<parallel::UnitSpec> TextToImageModule::sharding_units() {
  std::vector<parallel::UnitSpec> out;
  if (config_.train_text_encoder) {
    parallel::UnitSpec text{"text_encoder", {}};
    for (auto& p : text_encoder_->named_parameters(true)) text.params.emplace_back("text_encoder." + p.key(), p.value());
    out.push_back(std::move(text));
  }
  for (const auto& unit : unet_->units()) {
    parallel::UnitSpec spec{"unet." + unit.name, {}};
    for (auto& p : unit.module->named_parameters(true)) spec.params.emplace_back(p.key(), p.value());
    out.push_back(std::move(spec));
  }
  return out;
}

void TextToImageModule::set_unit_hooks(parallel::UnitHooks* hooks) {
  unit_hooks_ = hooks;
  unet_->set_unit_hooks(hooks, config_.train_text_encoder ? 1 : 0);
}

at::Tensor TextToImageModule::text_embeddings(const data::Batch& batch, const StepContext& ctx, bool grad) {
  const at::Tensor ids = (*tokenizer_)(batch.captions).input_ids.to(ctx.device);
  // A trained text encoder is zero3's unit 0: gathered around its forward.
  auto encode = [&] {
    if (!config_.train_text_encoder) return text_encoder_->encode(ids, config_.clip_skip);
    return parallel::run_unit(unit_hooks_, 0, [&] { return text_encoder_->encode(ids, config_.clip_skip); });
  };
  if (grad && config_.train_text_encoder) return encode();
  torch::NoGradGuard no_grad;
  return encode();
}

at::Tensor TextToImageModule::posterior_parameters(const at::Tensor& images, const StepContext& ctx) {
  torch::NoGradGuard no_grad;
  // Known trap: SD's VAE overflows in float16. Unless asked otherwise, it runs in float32 inside mixed steps.
  std::optional<nn::AutocastScope> fp32;
  if (config_.vae_precision == VaePrecision::fp32) fp32.emplace(ctx.device.type(), std::nullopt);
  return vae_->encode(images.to(ctx.device)).parameters();
}

at::Tensor TextToImageModule::training_latents(const data::Batch& batch, StepContext& ctx) {
  torch::NoGradGuard no_grad;
  at::Tensor parameters;
  if (!config_.cache_latents) {
    parameters = posterior_parameters(batch.images, ctx);
  } else {
    std::vector<at::Tensor> cached;
    cached.reserve(static_cast<size_t>(batch.size()));
    for (int64_t i = 0; i < batch.size(); ++i) {
      const int64_t index = batch.indices[static_cast<size_t>(i)];
      auto it = latent_cache_.find(index);
      if (it == latent_cache_.end()) {
        const at::Tensor one = posterior_parameters(batch.images.slice(0, i, i + 1), ctx)[0];
        it = latent_cache_.emplace(index, one.to(torch::kCPU).clone()).first;
      }
      cached.push_back(it->second);
    }
    parameters = torch::stack(cached).to(ctx.device);
  }
  return vae_->scale_latents(models::DiagonalGaussianDistribution(parameters).sample(ctx.generator));
}

std::vector<ParameterGroup> TextToImageModule::parameter_groups() {
  std::vector<ParameterGroup> groups(1);
  groups[0].name = "unet";
  for (auto& p : unet_->named_parameters(true)) groups[0].params.emplace_back("unet." + p.key(), p.value());
  if (config_.train_text_encoder) {
    ParameterGroup text{"text_encoder", {}, config_.text_encoder_lr};
    for (auto& p : text_encoder_->named_parameters(true)) text.params.emplace_back("text_encoder." + p.key(), p.value());
    groups.push_back(std::move(text));
  }
  return groups;
}

StepOutput TextToImageModule::training_step(const data::Batch& batch, StepContext& ctx) {
  const at::Tensor text = text_embeddings(batch, ctx, /*grad=*/true);
  const at::Tensor latents = training_latents(batch, ctx);
  auto out = models::diffusion_loss(unet_, *scheduler_, latents, text, ctx.generator, loss_options_);
  return {out.loss, {}};
}

std::optional<StepOutput> TextToImageModule::validation_step(const data::Batch& batch, StepContext& ctx) {
  torch::NoGradGuard no_grad;
  const bool unet_training = unet_->is_training(), text_training = text_encoder_->is_training();
  unet_->eval();
  text_encoder_->eval();
  const at::Tensor text = text_embeddings(batch, ctx, /*grad=*/false);
  const at::Tensor latents = vae_->scale_latents(
      models::DiagonalGaussianDistribution(posterior_parameters(batch.images, ctx)).sample(ctx.generator));
  auto out = models::diffusion_loss(unet_, *scheduler_, latents, text, ctx.generator, loss_options_);
  if (unet_training) unet_->train();
  if (text_training) text_encoder_->train();
  return StepOutput{out.loss, {}};
}

std::optional<at::Tensor> TextToImageModule::sample(const std::vector<std::string>& prompts, int64_t seed) {
  const bool was_training = unet_->is_training();
  unet_->eval();
  text_encoder_->eval();
  models::Txt2ImgPipeline pipe(unet_, vae_, text_encoder_, *tokenizer_, *export_scheduler_);
  models::GenerateOptions o;
  o.prompts = prompts;
  o.num_inference_steps = config_.sample_steps;
  o.guidance_scale = config_.sample_guidance_scale;
  o.scheduler = std::string(name_of(config_.sample_scheduler));
  o.seed = seed;
  o.clip_skip = config_.clip_skip;
  at::Tensor images = pipe.generate(o);
  if (was_training) unet_->train();
  if (config_.train_text_encoder && was_training) text_encoder_->train();
  return images;
}

void TextToImageModule::export_to(const std::string& dir) {
  models::Txt2ImgPipeline pipe(unet_, vae_, text_encoder_, *tokenizer_, *export_scheduler_);
  pipe.save_pretrained(dir);
}

// ------------------------------------------------------------------ AutoencoderModule

AutoencoderModule::AutoencoderModule(AutoencoderConfig config) : config_(std::move(config)) {
  if (config_.vae.empty()) throw ConfigError("autoencoder.vae is required (a VAE folder or config.json)");
}

void AutoencoderModule::configure_model(const torch::Device& device) {
  vae_ = load_vae(config_.vae, /*weights_required=*/false, read_weights_);
  vae_->train();
  vae_->to(device);
}

StepOutput AutoencoderModule::training_step(const data::Batch& batch, StepContext& ctx) {
  const at::Tensor x = batch.images.to(ctx.device);
  if (!sample_batch_.defined()) {
    sample_batch_ = x.slice(0, 0, std::min<int64_t>(config_.sample_images, x.size(0))).detach().clone();
  }
  const auto posterior = vae_->encode(x);
  const at::Tensor z = posterior.sample(ctx.generator);
  {
    // Running moments of the latents: the exported scaling_factor is 1 / std (LDM paper, Sec. 4.3.2).
    torch::NoGradGuard no_grad;
    latent_sum_ += z.sum().item<double>();
    latent_sq_sum_ += z.pow(2).sum().item<double>();
    latent_count_ += static_cast<double>(z.numel());
  }
  return loss(x, vae_->decode(z), posterior);
}

StepOutput AutoencoderModule::loss(const at::Tensor& x, const at::Tensor& rec,
                                   const models::DiagonalGaussianDistribution& posterior) const {
  const at::Tensor rec_loss = config_.reconstruction == ReconstructionLoss::l1 ? torch::l1_loss(rec, x) : torch::mse_loss(rec, x);
  const double pixels = static_cast<double>(x.size(1) * x.size(2) * x.size(3));
  const at::Tensor kl = posterior.kl().mean() / pixels;
  return {rec_loss + config_.kl_weight * kl, {{"rec", rec_loss.item<double>()}, {"kl", kl.item<double>() * pixels}}};
}

std::optional<StepOutput> AutoencoderModule::validation_step(const data::Batch& batch, StepContext& ctx) {
  torch::NoGradGuard no_grad;
  const bool was_training = vae_->is_training();
  vae_->eval();
  const at::Tensor x = batch.images.to(ctx.device);
  const auto posterior = vae_->encode(x);
  const at::Tensor rec = vae_->decode(posterior.mode());
  if (was_training) vae_->train();
  return loss(x, rec, posterior);
}

std::optional<at::Tensor> AutoencoderModule::sample(const std::vector<std::string>&, int64_t) {
  if (!sample_batch_.defined()) return std::nullopt;
  torch::NoGradGuard no_grad;
  const bool was_training = vae_->is_training();
  vae_->eval();
  const at::Tensor rec = vae_->decode(vae_->encode(sample_batch_).mode());
  if (was_training) vae_->train();
  return torch::cat({sample_batch_, rec}).add(1).div(2).clamp(0, 1).cpu();
}

std::map<std::string, at::Tensor> AutoencoderModule::extra_state() {
  std::map<std::string, at::Tensor> out = {
      {"latent_moments", torch::tensor({latent_sum_, latent_sq_sum_, latent_count_}, torch::kDouble)}};
  if (sample_batch_.defined()) out["sample_batch"] = sample_batch_.cpu();
  return out;
}

void AutoencoderModule::load_extra_state(const std::map<std::string, at::Tensor>& state) {
  auto it = state.find("latent_moments");
  if (it == state.end() || it->second.numel() != 3) throw IoError("autoencoder checkpoint state: no latent_moments");
  const at::Tensor m = it->second.to(torch::kDouble).contiguous();
  latent_sum_ = m[0].item<double>();
  latent_sq_sum_ = m[1].item<double>();
  latent_count_ = m[2].item<double>();
  auto sb = state.find("sample_batch");
  if (sb != state.end()) sample_batch_ = sb->second.clone();
}

void AutoencoderModule::export_to(const std::string& dir) {
  if (latent_count_ > 0) {
    const double mean = latent_sum_ / latent_count_;
    const double var = latent_sq_sum_ / latent_count_ - mean * mean;
    if (var > 0) {
      vae_->options.scaling_factor(1.0 / std::sqrt(var));
      ZD_LOG_INFO("VAE latent std ", std::sqrt(var), " over training: scaling_factor set to ", 1.0 / std::sqrt(var));
    }
  }
  models::save_pretrained(vae_, dir);
}

}  // namespace zerodiff::train
