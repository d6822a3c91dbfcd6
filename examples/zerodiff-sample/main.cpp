// zerodiff-sample: text-to-image sampling from a diffusers Stable Diffusion folder.
//
//   zerodiff-sample --model DIR --prompt "a photo of a cat" [--prompt "..."] [--negative-prompt "..."]
//                   [--steps 50] [--guidance 7.5] [--scheduler ddim|euler|ddpm] [--seed 0] [--height H --width W]
//                   [--batch N] [--clip-skip K] [--eta E] [--device cpu|cuda] [--attention auto|sdpa|math]
//                   [--separate] --out FILE.png
//   zerodiff-sample --version
//
// --prompt may be repeated (one image row per prompt); --negative-prompt is given once (used for every prompt)
// or once per prompt. --batch is the number of images per prompt. Several images are written as ONE grid PNG
// (one row per prompt, --batch columns); with --separate they go to FILE-0.png, FILE-1.png, ... instead
// (prompt-major order). The seed drives a CPU generator exactly like diffusers'
// generator=torch.Generator().manual_seed(seed), so the same folder, prompt, sampler and seed give the same image
// as diffusers' StableDiffusionPipeline.
#include <CLI/CLI.hpp>

#include <torch/cuda.h>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "zerodiff/core/BuildInfo.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/models/Txt2ImgPipeline.h"
#include "zerodiff/nn/Attention.h"
#include "zerodiff/train/Modes.h"

namespace {

/// FILE.png -> FILE-<i>.png.
std::string indexed_path(const std::string& out, int64_t i) {
  const std::filesystem::path p(out);
  std::filesystem::path q = p.parent_path() / (p.stem().string() + "-" + std::to_string(i) + p.extension().string());
  return q.string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"zerodiff-sample: generate images from text prompts with a diffusers Stable Diffusion folder"};
  std::string model, out, scheduler, device = "auto";
  std::vector<std::string> prompts, negatives;
  int64_t steps = 50, seed = 0, height = 0, width = 0, batch = 1, clip_skip = -1;
  double guidance = 7.5, eta = 0.0;
  bool separate = false, show_version = false;
  app.add_flag("--version", show_version, "Print the build info line and exit");
  app.add_option("--model", model, "diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
                                   "scheduler/)");
  app.add_option("--prompt", prompts, "Prompt (repeat for several)");
  app.add_option("--negative-prompt", negatives, "Negative prompt (once for all prompts, or once per prompt)");
  app.add_option("--steps", steps, "Number of denoising steps")->capture_default_str();
  app.add_option("--guidance", guidance, "Classifier-free guidance scale (<= 1 disables it)")->capture_default_str();
  app.add_option("--scheduler", scheduler, "ddim | euler | ddpm (default: the folder's scheduler)")
      ->check(CLI::IsMember({"ddim", "euler", "ddpm"}, CLI::ignore_case));
  app.add_option("--seed", seed, "Seed of the CPU generator for the initial latents (and sampler noise)")
      ->capture_default_str();
  app.add_option("--height", height, "Image height in pixels, a multiple of 8 (default: the model's)");
  app.add_option("--width", width, "Image width in pixels, a multiple of 8 (default: the model's)");
  app.add_option("--batch", batch, "Images per prompt")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--clip-skip", clip_skip, "Text-encoder layers to skip from the end (diffusers' clip_skip)");
  app.add_option("--eta", eta, "DDIM eta (0 = deterministic)")->capture_default_str();
  app.add_option("--device", device, zerodiff::enum_list<zerodiff::train::Accelerator>(" | "))
      ->capture_default_str()
      ->check(CLI::IsMember(zerodiff::enum_choices<zerodiff::train::Accelerator>()));
  std::string attention = "auto";
  app.add_option("--attention", attention,
                 "Attention backend of every model, as the run config's `attention`: auto (ours where it supports "
                 "the call and is the faster one, SDPA elsewhere), sdpa, math (the reference); the log says which ran")
      ->capture_default_str()
      ->check(CLI::IsMember(zerodiff::names_of(std::span<const zerodiff::nn::AttentionBackend>(
          zerodiff::nn::kAttentionPolicies))));
  app.add_flag("--separate", separate, "Write FILE-<i>.png per image instead of one grid");
  app.add_option("--out", out, "Output PNG file");
  CLI11_PARSE(app, argc, argv);
  if (show_version) {
    std::cout << zerodiff::build_info() << std::endl;
    return 0;
  }
  try {
    zerodiff::log::init({});
    if (model.empty() || prompts.empty() || out.empty()) {
      std::cerr << "zerodiff-sample: error: --model, --prompt and --out are required\n" << app.help() << std::endl;
      return 2;
    }
    ZD_CHECK(negatives.size() <= 1 || negatives.size() == prompts.size(), "--negative-prompt was given ",
             negatives.size(), " times for ", prompts.size(), " prompts; give it once or once per prompt");
    if (negatives.size() == 1 && prompts.size() > 1) negatives.assign(prompts.size(), negatives.front());

    const zerodiff::nn::AttentionPolicyScope attention_policy(
        zerodiff::parse_enum<zerodiff::nn::AttentionBackend>(attention, "--attention"));
    zerodiff::models::Txt2ImgPipeline pipe = zerodiff::models::Txt2ImgPipeline::from_pretrained(model);
    using zerodiff::train::Accelerator;
    const Accelerator accelerator = zerodiff::parse_enum<Accelerator>(device, "--device");
    const bool cuda = accelerator == Accelerator::cuda ||
                      (accelerator == Accelerator::automatic && torch::cuda::is_available());
    if (cuda) {
      ZD_CHECK(torch::cuda::is_available(), "--device cuda: no CUDA device is available");
      pipe.unet()->to(torch::kCUDA);
      pipe.vae()->to(torch::kCUDA);
      pipe.text_encoder()->to(torch::kCUDA);
    }

    zerodiff::models::GenerateOptions opts;
    opts.prompts = prompts;
    opts.negative_prompts = negatives;
    opts.num_inference_steps = steps;
    opts.guidance_scale = guidance;
    opts.scheduler = scheduler;
    opts.seed = seed;
    opts.height = height;
    opts.width = width;
    opts.num_images_per_prompt = batch;
    opts.eta = eta;
    if (clip_skip >= 0) opts.clip_skip = clip_skip;
    ZD_LOG_INFO("zerodiff-sample: ", model, ", ", prompts.size(), " prompt(s) x ", batch, ", ", steps, " steps (",
                scheduler.empty() ? std::string(zerodiff::name_of(pipe.scheduler_config().class_name)) : scheduler, "), guidance ", guidance,
                ", seed ", seed, cuda ? ", cuda" : ", cpu");
    const at::Tensor images = pipe.generate(opts);  // [N, 3, H, W] in [0, 1]
    const int64_t n = images.size(0);
    if (n == 1) {
      zerodiff::models::write_png(images[0], out);
      std::cout << "zerodiff-sample: wrote " << out << " (" << images.size(3) << "x" << images.size(2) << ")\n";
    } else if (separate) {
      for (int64_t i = 0; i < n; ++i) {
        const std::string path = indexed_path(out, i);
        zerodiff::models::write_png(images[i], path);
        std::cout << "zerodiff-sample: wrote " << path << " (" << images.size(3) << "x" << images.size(2) << ")\n";
      }
    } else {
      const at::Tensor grid = zerodiff::models::make_image_grid(images, batch);
      zerodiff::models::write_png(grid, out);
      std::cout << "zerodiff-sample: wrote " << out << " (" << grid.size(2) << "x" << grid.size(1) << ", a grid of "
                << n << " images)\n";
    }
    return 0;
  } catch (const zerodiff::Error& e) {
    std::cerr << "zerodiff-sample: error: " << e.what() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "zerodiff-sample: error: " << e.what() << std::endl;
    return 1;
  }
}
