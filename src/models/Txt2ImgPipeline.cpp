// Txt2ImgPipeline: text-to-image sampling with classifier-free guidance. Reference: diffusers 0.42.1
// pipelines/stable_diffusion/pipeline_stable_diffusion.py (StableDiffusionPipeline.__call__, encode_prompt,
// prepare_latents) and pipelines/pipeline_utils.py (save_pretrained's model_index.json).
//
// Design rules: the pipeline owns no copies (the module holders share the caller's modules); a fresh scheduler
// is built per generate() call (schedulers are stateful); the same operation order as the reference, so fp32
// results agree to rounding; the random stream is one CPU generator seeded with `seed` that draws the initial
// latents first and then whatever the scheduler's step draws (DDPM, DDIM with eta > 0), as diffusers does with
// generator=torch.Generator().manual_seed(seed).
#include "zerodiff/models/Txt2ImgPipeline.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include <stb/stb_image_write.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/io/AtomicFile.h"
#include "zerodiff/io/Diffusers.h"

namespace zerodiff::models {

namespace fs = std::filesystem;

namespace {

constexpr const char* kDiffusersVersion = "0.42.1";
constexpr const char* kModelIndex = "model_index.json";
constexpr const char* kSchedulerConfig = "scheduler/scheduler_config.json";

// The diffusers JSON writer: json.dumps(obj, indent=2, sort_keys=True) + "\n" (nlohmann objects are sorted).
std::string dump_like_diffusers(const nlohmann::json& j) { return j.dump(2) + "\n"; }

nlohmann::json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw IoError(str(path.string(), ": cannot open"));
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw IoError(str(path.string(), ": not valid JSON: ", e.what()));
  }
}

// The library/class pairs of model_index.json that zerodiff reads, with the classes it accepts.
struct Component {
  const char* name;
  const char* library;
  std::vector<std::string> classes;
};
const std::vector<Component>& components() {
  static const std::vector<Component> list = {
      {"unet", "diffusers", {"UNet2DConditionModel"}},
      {"vae", "diffusers", {"AutoencoderKL"}},
      {"text_encoder", "transformers", {"CLIPTextModel"}},
      {"tokenizer", "transformers", {"CLIPTokenizer", "CLIPTokenizerFast"}},
      {"scheduler", "diffusers", {}},  // any class; unsupported ones fall back to DDIM (see from_pretrained)
  };
  return list;
}

/// Checks the folder layout and model_index.json before anything is loaded; one IoError names everything missing.
void check_folder(const fs::path& dir) {
  if (!fs::is_directory(dir)) {
    throw IoError(str(dir.string(), ": no such model folder (expected a diffusers Stable Diffusion folder with ",
                      kModelIndex, ", unet/, vae/, text_encoder/, tokenizer/, scheduler/)"));
  }
  std::vector<std::string> missing;
  if (!fs::is_regular_file(dir / kModelIndex)) missing.push_back(kModelIndex);
  for (const auto& c : components()) {
    if (!fs::is_directory(dir / c.name)) missing.push_back(std::string(c.name) + "/");
  }
  if (fs::is_directory(dir / "scheduler") && !fs::is_regular_file(dir / kSchedulerConfig)) {
    missing.push_back(kSchedulerConfig);
  }
  if (!missing.empty()) {
    throw IoError(str(dir.string(), ": incomplete diffusers Stable Diffusion folder: missing ", missing));
  }
  const nlohmann::json index = read_json_file(dir / kModelIndex);
  const std::string where = (dir / kModelIndex).string();
  if (!index.is_object()) throw IoError(str(where, ": expected a JSON object"));
  for (const auto& c : components()) {
    if (!index.contains(c.name) || !index[c.name].is_array() || index[c.name].size() != 2 ||
        !index[c.name][0].is_string() || !index[c.name][1].is_string()) {
      throw IoError(str(where, ": component '", c.name, "' is missing or null (expected [\"", c.library,
                        "\", \"<class>\"]), got ", index.contains(c.name) ? index[c.name].dump() : "nothing"));
    }
    const std::string cls = index[c.name][1].get<std::string>();
    if (!c.classes.empty() && std::find(c.classes.begin(), c.classes.end(), cls) == c.classes.end()) {
      throw NotImplementedError(
          str(where, ": component '", c.name, "' is a ", cls, "; zerodiff supports ", c.classes));
    }
  }
}

/// Restores the training flag of a module on scope exit (generate() runs in eval mode).
class EvalGuard {
 public:
  explicit EvalGuard(torch::nn::Module& m) : module_(m), was_training_(m.is_training()) { module_.eval(); }
  ~EvalGuard() { module_.train(was_training_); }
  EvalGuard(const EvalGuard&) = delete;
  EvalGuard& operator=(const EvalGuard&) = delete;

 private:
  torch::nn::Module& module_;
  bool was_training_;
};

at::Device device_of(const torch::nn::Module& m) {
  const auto params = m.parameters();
  return params.empty() ? at::Device(at::kCPU) : params.front().device();
}
at::ScalarType dtype_of(const torch::nn::Module& m) {
  const auto params = m.parameters();
  return params.empty() ? at::kFloat : params.front().scalar_type();
}

/// diffusers' sample_size: an int, or [height, width].
std::pair<int64_t, int64_t> unet_sample_size(const UNet2DConditionOptions& o) {
  const auto& s = o.sample_size();
  if (s.empty()) return {0, 0};
  if (s.size() == 1) return {s[0], s[0]};
  return {s[0], s[1]};
}

int64_t vae_scale_factor(const AutoencoderKLOptions& o) {
  return int64_t{1} << (static_cast<int64_t>(o.block_out_channels().size()) - 1);
}

/// embeds [B, S, D] -> [B * n, S, D], each row repeated n times consecutively (diffusers' repeat + view).
at::Tensor repeat_per_prompt(const at::Tensor& embeds, int64_t n) {
  if (n == 1) return embeds;
  const int64_t b = embeds.size(0), s = embeds.size(1);
  return embeds.repeat({1, n, 1}).view({b * n, s, -1});
}

}  // namespace

// ------------------------------------------------------------------ scheduler names

SchedulerKind scheduler_kind(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (auto kind = lookup_enum<SchedulerKind>(name)) return *kind;
  if (auto kind = lookup_enum<SchedulerKind>(lower)) return *kind;
  ZD_THROW("unknown scheduler '", name,
           "' (expected ddim | euler | ddpm, or DDIMScheduler | EulerDiscreteScheduler | DDPMScheduler)");
}

SchedulerConfig convert_scheduler_config(const SchedulerConfig& config, SchedulerKind class_name,
                                         const nlohmann::json& raw) {
  if (class_name == config.class_name) return config;
  nlohmann::json j = raw.is_object() ? raw : config.to_json();
  j["_class_name"] = std::string(name_of(class_name));
  return SchedulerConfig::from_json(j);
}

// ------------------------------------------------------------------ construction, loading, saving

Txt2ImgPipeline::Txt2ImgPipeline(UNet2DConditionModel unet, AutoencoderKL vae, CLIPTextModel text_encoder,
                                 CLIPTokenizer tokenizer, SchedulerConfig scheduler)
    : unet_(std::move(unet)),
      vae_(std::move(vae)),
      text_encoder_(std::move(text_encoder)),
      tokenizer_(std::move(tokenizer)),
      scheduler_(std::move(scheduler)) {
  ZD_CHECK(!unet_.is_empty() && !vae_.is_empty() && !text_encoder_.is_empty(),
           "Txt2ImgPipeline: the unet, vae and text_encoder must not be null");
  const int64_t hidden = text_encoder_->options.hidden_size();
  for (size_t i = 0; i < unet_->options.down_block_types().size(); ++i) {
    ZD_CHECK_EQ(unet_->options.cross_attention_dim_at(i), hidden,
                "Txt2ImgPipeline: the UNet's cross_attention_dim must equal the text encoder's hidden_size");
  }
  ZD_CHECK_EQ(unet_->options.in_channels(), vae_->options.latent_channels(),
              "Txt2ImgPipeline: the UNet's in_channels must equal the VAE's latent_channels");
  NoiseScheduler::create(scheduler_);  // validates the config now rather than at the first generate()
}

Txt2ImgPipeline Txt2ImgPipeline::from_pretrained(const std::string& dir, const std::string& variant) {
  const fs::path root(dir);
  check_folder(root);
  nlohmann::json sched_json = read_json_file(root / kSchedulerConfig);
  if (!sched_json.is_object()) throw IoError(str((root / kSchedulerConfig).string(), ": expected a JSON object"));
  SchedulerConfig sched;
  const std::string cls = sched_json.value("_class_name", std::string("DDPMScheduler"));
  try {
    sched = SchedulerConfig::from_json(sched_json);
  } catch (const NotImplementedError& e) {
    const auto kind = lookup_enum<SchedulerKind>(cls);
    if (kind && name_of(*kind) == cls) throw;  // a class zerodiff implements: its config is at fault
    // diffusers users swap samplers with DDIMScheduler.from_config(pipe.scheduler.config); do the same.
    ZD_LOG_WARN(dir, ": scheduler ", cls, " is not implemented by zerodiff; using DDIMScheduler with its config");
    nlohmann::json j;
    for (auto it = sched_json.begin(); it != sched_json.end(); ++it) {
      if (it.key() != "skip_prk_steps") j[it.key()] = it.value();
    }
    j["_class_name"] = std::string(name_of(SchedulerKind::ddim));
    sched_json = j;
    sched = SchedulerConfig::from_json(sched_json);
  }
  UNet2DConditionModel unet = unet_from_pretrained((root / "unet").string(), variant);
  AutoencoderKL vae = vae_from_pretrained((root / "vae").string(), variant);
  CLIPTextModel text_encoder = clip_text_model_from_pretrained((root / "text_encoder").string(), variant);
  CLIPTokenizer tokenizer = CLIPTokenizer::from_pretrained((root / "tokenizer").string());
  Txt2ImgPipeline pipe(std::move(unet), std::move(vae), std::move(text_encoder), std::move(tokenizer), sched);
  pipe.scheduler_json_ = std::move(sched_json);
  return pipe;
}

void Txt2ImgPipeline::save_pretrained(const std::string& dir) const {
  const fs::path root(dir);
  std::error_code ec;
  fs::create_directories(root / "scheduler", ec);
  if (ec) throw IoError(str(dir, ": cannot create the folder: ", ec.message()));
  models::save_pretrained(unet_, (root / "unet").string());
  models::save_pretrained(vae_, (root / "vae").string());
  models::save_pretrained(text_encoder_, (root / "text_encoder").string());
  tokenizer_.save_pretrained((root / "tokenizer").string());
  nlohmann::json sched = scheduler_.to_json();
  sched["_diffusers_version"] = kDiffusersVersion;
  io::write_file_atomic((root / kSchedulerConfig).string(), dump_like_diffusers(sched));
  // model_index.json last: a folder whose save was interrupted is reported incomplete, not loaded half-written.
  const nlohmann::json null_pair = nlohmann::json::array({nullptr, nullptr});
  const nlohmann::json index = {
      {"_class_name", "StableDiffusionPipeline"},
      {"_diffusers_version", kDiffusersVersion},
      {"feature_extractor", null_pair},
      {"image_encoder", null_pair},
      {"requires_safety_checker", false},
      {"safety_checker", null_pair},
      {"scheduler", nlohmann::json::array({"diffusers", std::string(name_of(scheduler_.class_name))})},
      {"text_encoder", nlohmann::json::array({"transformers", "CLIPTextModel"})},
      {"tokenizer", nlohmann::json::array({"transformers", "CLIPTokenizer"})},
      {"unet", nlohmann::json::array({"diffusers", "UNet2DConditionModel"})},
      {"vae", nlohmann::json::array({"diffusers", "AutoencoderKL"})},
  };
  io::write_file_atomic((root / kModelIndex).string(), dump_like_diffusers(index));
}

// ------------------------------------------------------------------ sampling

at::Tensor Txt2ImgPipeline::encode_prompt(const std::vector<std::string>& prompts,
                                          std::optional<int64_t> clip_skip) const {
  CLIPTextModel te = text_encoder_;
  const CLIPTokens tokens = tokenizer_(prompts);
  return te->encode(tokens.input_ids.to(device_of(*te)), clip_skip);
}

at::Tensor Txt2ImgPipeline::generate(const GenerateOptions& o) const {
  const int64_t batch = static_cast<int64_t>(o.prompts.size());
  ZD_CHECK(batch >= 1, "generate: at least one prompt is needed");
  ZD_CHECK(o.negative_prompts.empty() || static_cast<int64_t>(o.negative_prompts.size()) == batch,
           "generate: `negative_prompts` has batch size ", o.negative_prompts.size(), ", but `prompts` has ", batch,
           "; pass one negative prompt per prompt, or none");
  ZD_CHECK(o.num_images_per_prompt >= 1, "generate: num_images_per_prompt must be >= 1, got ",
           o.num_images_per_prompt);
  ZD_CHECK(o.num_inference_steps >= 1, "generate: num_inference_steps must be >= 1, got ", o.num_inference_steps);

  UNet2DConditionModel unet = unet_;
  AutoencoderKL vae = vae_;
  CLIPTextModel te = text_encoder_;
  torch::NoGradGuard no_grad;
  EvalGuard unet_eval(*unet), vae_eval(*vae), te_eval(*te);

  // 0. Default height and width: unet sample_size * vae scale factor.
  const int64_t factor = vae_scale_factor(vae->options);
  const auto [sample_h, sample_w] = unet_sample_size(unet->options);
  const int64_t height = o.height > 0 ? o.height : sample_h * factor;
  const int64_t width = o.width > 0 ? o.width : sample_w * factor;
  // 1. check_inputs: diffusers requires multiples of 8 (whatever the VAE factor), and so must the latents.
  ZD_CHECK(height > 0 && width > 0 && height % 8 == 0 && width % 8 == 0 && height % factor == 0 &&
               width % factor == 0,
           "generate: `height` and `width` have to be positive multiples of 8 (and of the VAE factor ", factor,
           ") but are ", height, " and ", width);

  // 2./3. Prompt embeddings; the unconditional ones only with guidance > 1 (no clip_skip for them, as diffusers).
  const bool cfg = o.guidance_scale > 1.0;
  const at::Device device = device_of(*unet);
  const at::ScalarType dtype = dtype_of(*unet);
  at::Tensor cond = encode_prompt(o.prompts, o.clip_skip);  // [B, S, D]
  cond = repeat_per_prompt(cond.to(device, dtype), o.num_images_per_prompt);
  at::Tensor embeds = cond;
  if (cfg) {
    const std::vector<std::string> uncond_text =
        o.negative_prompts.empty() ? std::vector<std::string>(static_cast<size_t>(batch), "") : o.negative_prompts;
    const CLIPTokens tokens = tokenizer_(uncond_text, cond.size(1));
    at::Tensor uncond = te->encode(tokens.input_ids.to(device_of(*te)), std::nullopt);
    uncond = repeat_per_prompt(uncond.to(device, dtype), o.num_images_per_prompt);
    embeds = at::cat({uncond, cond});  // [2 * B * n, S, D]
  }

  // 4. Timesteps.
  const SchedulerKind cls = o.scheduler.empty() ? scheduler_.class_name : scheduler_kind(o.scheduler);
  const std::unique_ptr<NoiseScheduler> scheduler =
      NoiseScheduler::create(convert_scheduler_config(scheduler_, cls, scheduler_json_));
  scheduler->set_timesteps(o.num_inference_steps);
  const at::Tensor timesteps = scheduler->timesteps().to(at::kCPU);

  // 5. Initial latents: randn from the seeded CPU generator (drawn on the CPU, then moved), * init_noise_sigma.
  const int64_t n = batch * o.num_images_per_prompt;
  const std::vector<int64_t> shape{n, unet->options.in_channels(), height / factor, width / factor};
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(o.seed));
  at::Tensor latents;
  if (o.latents.defined()) {
    ZD_CHECK(o.latents.sizes() == at::IntArrayRef(shape), "generate: `latents` has shape ", o.latents.sizes(),
             ", expected ", shape);
    latents = o.latents.to(device, dtype);
  } else {
    latents = at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat)).to(device, dtype);
  }
  latents = latents * scheduler->init_noise_sigma();

  // 7. Denoising loop.
  SchedulerStepOptions step_options;
  step_options.generator = generator;
  step_options.eta = o.eta;
  for (int64_t i = 0; i < timesteps.size(0); ++i) {
    const at::Tensor t = timesteps[i];
    const double t_value = t.item<double>();
    at::Tensor model_input = cfg ? at::cat({latents, latents}) : latents;
    model_input = scheduler->scale_model_input(model_input, t_value);
    at::Tensor noise_pred = unet->forward(model_input, t.to(device), embeds);
    if (cfg) {
      const auto halves = noise_pred.chunk(2);
      noise_pred = halves[0] + o.guidance_scale * (halves[1] - halves[0]);
    }
    latents = scheduler->step(noise_pred, t_value, latents, step_options).prev_sample;
    ZD_LOG_DEBUG("generate: step ", i + 1, "/", timesteps.size(0), " t=", t_value);
  }

  // Decode latents / scaling_factor (+ shift_factor when set), then (x / 2 + 0.5).clamp(0, 1).
  const at::Tensor z = vae->unscale_latents(latents.to(device_of(*vae), dtype_of(*vae)));
  const at::Tensor image = vae->decode(z);
  return (image / 2 + 0.5).clamp(0, 1).to(at::kCPU, at::kFloat).contiguous();
}

// ------------------------------------------------------------------ images

at::Tensor make_image_grid(const at::Tensor& images, int64_t columns) {
  ZD_CHECK(images.defined() && images.dim() == 4 && images.size(0) >= 1,
           "make_image_grid: expected images [N, C, H, W] with N >= 1, got ",
           images.defined() ? images.sizes() : at::IntArrayRef{});
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const int64_t cols = columns > 0 ? std::min(columns, n)
                                   : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int64_t rows = (n + cols - 1) / cols;
  at::Tensor grid = at::zeros({c, rows * h, cols * w}, images.options());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = i / cols, col = i % cols;
    grid.slice(1, r * h, (r + 1) * h).slice(2, col * w, (col + 1) * w).copy_(images[i]);
  }
  return grid;
}

std::string encode_png(const at::Tensor& image) {
  ZD_CHECK(image.defined() && image.dim() == 3 &&
               (image.size(0) == 1 || image.size(0) == 3 || image.size(0) == 4) && image.size(1) > 0 &&
               image.size(2) > 0,
           "encode_png: expected an image [C, H, W] with C in {1, 3, 4}, got ",
           image.defined() ? image.sizes() : at::IntArrayRef{});
  // diffusers' numpy_to_pil: (images * 255).round().astype("uint8") on [0, 1] values.
  const at::Tensor hwc = (image.detach().to(at::kCPU, at::kFloat).clamp(0, 1) * 255)
                             .round()
                             .to(at::kByte)
                             .permute({1, 2, 0})
                             .contiguous();
  const int c = static_cast<int>(image.size(0)), h = static_cast<int>(image.size(1)),
            w = static_cast<int>(image.size(2));
  std::string bytes;
  auto sink = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
  };
  ZD_CHECK(stbi_write_png_to_func(sink, &bytes, w, h, c, hwc.data_ptr<uint8_t>(), w * c), "PNG encoding failed (", w,
           "x", h, "x", c, ")");
  return bytes;
}

void write_png(const at::Tensor& image, const std::string& path) {
  std::string bytes;
  try {
    bytes = encode_png(image);
  } catch (const Error& e) {
    throw Error(str(path, ": ", e.what()));
  }
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) throw IoError(str(path, ": cannot create the folder: ", ec.message()));
  }
  io::write_file_atomic(path, bytes);
}

}  // namespace zerodiff::models
