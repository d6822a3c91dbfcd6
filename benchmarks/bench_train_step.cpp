// One Stable Diffusion training step on the CPU, as diffusers' examples/text_to_image/train_text_to_image.py
// does it, timed: UNet forward + backward + gradient clipping + AdamW step, the VAE and the text encoder frozen.
// Its peer, benchmarks/python/train_step_peer.py, does the same step with diffusers + torch on the same configs;
// benchmarks/run_train_step.sh runs both alternately and prints the medians side by side (docs/performance.md).
//
//   bench_train_step [--model tiny|100m|sd15] [--mode pre|enc] [--batch 8] [--steps 8] [--warmup 2] [--latent 32]
//                    [--optimizer torch|hybrid_adam] [--attention auto|zerodiff|sdpa|math] [--threads N]
//                    [--device cpu|cuda] [--precision fp32|bf16-mixed]
//                    [--unet DIR] [--vae DIR] [--text-encoder DIR] [--tokenizer DIR] [--profile FILE]
//
// Modes:
//   pre  latents [B, 4, h, w] and text embeddings [B, 77, D] precomputed (a cached-latents run): the step is
//        timesteps + noise draw, add_noise, UNet forward, MSE, backward, clip_grad_norm(1.0), AdamW step;
//   enc  the images [B, 3, 8h, 8w] are encoded by the frozen VAE (posterior sample x scaling_factor) and the
//        captions tokenized and encoded by the frozen CLIP text encoder inside every step, without gradients.
// Models (random weights, built from the configs in configs/models): tiny = tiny/{unet_sd1, vae, text_vitl};
// 100m = bench/unet_100m (103 M parameters: SD 1.5's layout at block_out_channels 128, 256, 416, 416) with SD 1.5's
// VAE and text encoder; sd15 = sd15/{unet, vae, text_encoder} (860 M UNet). Tokenizer: configs/models/demo/tokenizer
// (CLIP's BPE vocabulary). Noise scheduler: DDPM, SD's scaled_linear betas 0.00085..0.012, 1000 steps.
// AdamW: lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2 (the script's defaults), by the trainer's default
// implementation (HybridAdam; --optimizer torch for torch::optim::AdamW). Precision float32, or --precision
// bf16-mixed: the UNet forward and loss under bfloat16 autocast (the VAE encode stays float32, as the trainer's
// vae_precision fp32), float32 weights and AdamW states. --device cuda runs everything on the GPU (the SD 1.5 row
// of issue #12 is --model sd15 --latent 64 --device cuda); step times then include a host sync (the loss's item()).
//
// Output: one line "zerodiff train step: ... N samples/s (median step M ms; steps ...) peak RSS R MiB", where
// samples/s = batch / median step time over the --steps timed steps (after --warmup untimed ones) and peak RSS is
// the process's VmHWM (/proc/self/status) at the end: every byte the run touched, model, states and activations;
// on CUDA the line also gives the caching allocator's peak of allocated bytes (what torch.cuda.max_memory_allocated
// reports on the Python side).
// --profile FILE writes a Chrome trace of the timed steps (LibTorch's profiler; benchmarks/python/trace_summary.py
// summarises it by operator).
#include <CLI/CLI.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "zerodiff/core/BuildConfig.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/models/LatentDiffusion.h"
#include "zerodiff/models/clip/CLIPTextModel.h"
#include "zerodiff/models/clip/CLIPTokenizer.h"
#include "zerodiff/models/schedulers/NoiseScheduler.h"
#include "zerodiff/models/unet/UNet2DConditionModel.h"
#include "zerodiff/models/vae/AutoencoderKL.h"
#include "zerodiff/nn/Attention.h"
#include "zerodiff/nn/Autocast.h"
#include "zerodiff/parallel/Strategy.h"

#if ZERODIFF_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace zm = zerodiff::models;
namespace zp = zerodiff::parallel;

namespace zerodiff_bench::bench_train_step {

#ifndef ZERODIFF_SOURCE_DIR
#define ZERODIFF_SOURCE_DIR "."
#endif

// VmHWM (peak resident set) or VmRSS of this process in MiB, from /proc/self/status.
double proc_status_mib(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream fields(line.substr(key.size() + 1));
      double kib = 0;
      fields >> kib;
      return kib / 1024.0;
    }
  }
  throw zerodiff::Error("/proc/self/status has no " + key + " line");
}

// The captions of the enc mode, benchmarks/data/captions.txt (one per line, shared with the Python peer): varied
// lengths, as a captioned dataset has (padded to 77 tokens either way). Throws zerodiff::IoError naming the file.
std::vector<std::string> captions(int64_t batch) {
  const std::string path = std::string(ZERODIFF_SOURCE_DIR) + "/benchmarks/data/captions.txt";
  std::ifstream in(path);
  if (!in) throw zerodiff::IoError("cannot open the benchmark captions " + path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  if (lines.empty()) throw zerodiff::IoError("the benchmark captions " + path + " has no caption");
  std::vector<std::string> out;
  for (int64_t i = 0; i < batch; ++i) out.push_back(lines[static_cast<size_t>(i) % lines.size()]);
  return out;
}


int run(int argc, char** argv) {
  CLI::App app{"One Stable Diffusion training step (UNet fwd + bwd + AdamW), timed; peer: python/train_step_peer.py"};
  std::string model = "tiny", mode = "pre", optimizer = "hybrid_adam", attention = "auto", profile;
  std::string unet_dir, vae_dir, text_dir, tokenizer_dir, device_name = "cpu", precision = "fp32";
  int64_t batch = 8, latent = 32;
  int steps = 8, warmup = 2, threads = 0;
  app.add_option("--model", model, "tiny | 100m | sd15 (configs/models; random weights)")
      ->check(CLI::IsMember({"tiny", "100m", "sd15"}));
  app.add_option("--mode", mode, "pre: precomputed latents and text embeddings; enc: VAE + text encoder in the step")
      ->check(CLI::IsMember({"pre", "enc"}));
  app.add_option("--batch", batch, "Samples per step")->check(CLI::Range(1, 4096));
  app.add_option("--steps", steps, "Timed steps")->check(CLI::Range(1, 100000));
  app.add_option("--warmup", warmup, "Untimed steps first")->check(CLI::Range(0, 100000));
  app.add_option("--latent", latent, "Latent side h = w (images are 8x that with SD's VAE)")->check(CLI::Range(8, 512));
  app.add_option("--optimizer", optimizer, "AdamW implementation: torch (torch::optim::AdamW) or hybrid_adam")
      ->check(CLI::IsMember({"torch", "hybrid_adam"}));
  app.add_option("--attention", attention, "Attention backend: auto | zerodiff | sdpa | math");
  app.add_option("--threads", threads, "Intra-op threads (0 = ATen's default)")->check(CLI::Range(0, 1024));
  app.add_option("--device", device_name, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--precision", precision, "fp32 or bf16-mixed (UNet forward + loss under bfloat16 autocast)")
      ->check(CLI::IsMember({"fp32", "bf16-mixed"}));
  app.add_option("--unet", unet_dir, "UNet config folder (overrides --model's)");
  app.add_option("--vae", vae_dir, "VAE config folder (overrides --model's)");
  app.add_option("--text-encoder", text_dir, "Text encoder config folder (overrides --model's)");
  app.add_option("--tokenizer", tokenizer_dir, "CLIP tokenizer folder (default configs/models/demo/tokenizer)");
  app.add_option("--profile", profile, "Write a Chrome trace of the timed steps to this file");
  CLI11_PARSE(app, argc, argv);
  zerodiff::log::init({.level = zerodiff::log::Level::warn});
  try {
    if (threads > 0) torch::set_num_threads(threads);
    if (device_name == "cuda" && !torch::cuda::is_available()) throw zerodiff::Error("--device cuda: no CUDA device");
    const torch::Device device(device_name == "cuda" ? torch::kCUDA : torch::kCPU);
    const zerodiff::nn::AttentionPolicyScope policy(zerodiff::nn::parse_attention_backend(attention));
    const std::string root = std::string(ZERODIFF_SOURCE_DIR) + "/configs/models/";
    if (model == "tiny") {
      if (unet_dir.empty()) unet_dir = root + "tiny/unet_sd1";
      if (vae_dir.empty()) vae_dir = root + "tiny/vae";
      if (text_dir.empty()) text_dir = root + "tiny/text_vitl";
    } else {
      if (unet_dir.empty()) unet_dir = root + (model == "100m" ? "bench/unet_100m" : "sd15/unet");
      if (vae_dir.empty()) vae_dir = root + "sd15/vae";
      if (text_dir.empty()) text_dir = root + "sd15/text_encoder";
    }
    if (tokenizer_dir.empty()) tokenizer_dir = root + "demo/tokenizer";

    torch::manual_seed(0);
    const auto unet_options = zm::UNet2DConditionOptions::from_json(zerodiff::io::read_config_json(unet_dir));
    zm::UNet2DConditionModel unet(unet_options);
    unet->train();
    unet->to(device);
    std::optional<zm::AutoencoderKL> vae;
    std::optional<zm::CLIPTextModel> text_encoder;
    std::optional<zm::CLIPTokenizer> tokenizer;
    const auto text_options = zm::CLIPTextOptions::from_json(zerodiff::io::read_config_json(text_dir));
    const auto vae_options = zm::AutoencoderKLOptions::from_json(zerodiff::io::read_config_json(vae_dir));
    const int64_t image = latent << (vae_options.block_out_channels().size() - 1);
    if (mode == "enc") {
      vae.emplace(vae_options);
      text_encoder.emplace(text_options);
      tokenizer.emplace(zm::CLIPTokenizer::from_pretrained(tokenizer_dir));
      for (auto& p : (*vae)->parameters()) p.set_requires_grad(false);
      for (auto& p : (*text_encoder)->parameters()) p.set_requires_grad(false);
      (*vae)->eval();
      (*text_encoder)->eval();
      (*vae)->to(device);
      (*text_encoder)->to(device);
    }
    auto sched_config = zm::SchedulerConfig::defaults_for(zm::SchedulerKind::ddpm);
    sched_config.beta_schedule = zerodiff::models::BetaSchedule::scaled_linear;
    sched_config.beta_start = 0.00085;
    sched_config.beta_end = 0.012;
    sched_config.clip_sample = false;
    const auto scheduler = zm::NoiseScheduler::create(sched_config);

    zp::StrategyOptions options;
    options.hybrid_adam = optimizer == "hybrid_adam";
    auto strategy = zp::make_strategy("single", zerodiff::dist::ProcessGroup::single(), options);
    std::vector<std::pair<std::string, at::Tensor>> params;
    std::vector<at::Tensor> all;
    int64_t numel = 0;
    for (auto& p : unet->named_parameters(true)) {
      params.emplace_back(p.key(), p.value());
      all.push_back(p.value());
      numel += p.value().numel();
    }
    strategy->setup({zp::ParamGroupSpec{"unet", params, 1e-4}}, all, zp::AdamWSettings{});

    at::Generator gen = at::detail::createCPUGenerator(0);
    const int64_t latent_channels = unet_options.in_channels();
    const at::Tensor pre_latents = torch::randn({batch, latent_channels, latent, latent}).to(device);
    const at::Tensor pre_text =
        torch::randn({batch, text_options.max_position_embeddings(), text_options.hidden_size()}).to(device);
    const at::Tensor images = (torch::rand({batch, 3, image, image}) * 2 - 1).to(device);
    const std::vector<std::string> texts = captions(batch);
    const zm::DiffusionLossOptions loss_options;

    auto one_step = [&] {
      strategy->zero_grad();
      at::Tensor latents = pre_latents, text = pre_text;
      if (mode == "enc") {
        torch::NoGradGuard no_grad;
        text = (*text_encoder)->encode((*tokenizer)(texts).input_ids.to(device));
        latents = (*vae)->scale_latents((*vae)->encode(images).sample(gen));
      }
      std::optional<zerodiff::nn::AutocastScope> autocast;
      if (precision == "bf16-mixed") autocast.emplace(device.type(), at::kBFloat16);
      auto out = zm::diffusion_loss(unet, *scheduler, latents, text, gen, loss_options);
      autocast.reset();
      strategy->begin_backward(true);
      out.loss.backward();
      strategy->end_backward(true);
      strategy->clip_grad_norm(1.0);
      strategy->step();
      return out.loss.item<double>();
    };
    for (int s = 0; s < warmup; ++s) one_step();
    std::vector<double> ms;
    double loss = 0;
    {
      std::unique_ptr<torch::autograd::profiler::RecordProfile> trace;
      if (!profile.empty()) trace = std::make_unique<torch::autograd::profiler::RecordProfile>(profile);
      for (int s = 0; s < steps; ++s) {
        const auto t0 = std::chrono::steady_clock::now();
        loss = one_step();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
    }
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                            : (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]) / 2;
    std::string gpu_peak;
#if ZERODIFF_CUDA
    if (device.is_cuda()) {
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
      const auto peak = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
      gpu_peak = " peak CUDA allocated " + std::to_string(static_cast<double>(peak) / (1024.0 * 1024.0)) + " MiB;";
    }
#endif
    std::string each;
    for (double m : ms) each += (each.empty() ? "" : ", ") + std::to_string(static_cast<int64_t>(m + 0.5));
    std::printf("zerodiff train step: model=%s (%.1f M UNet parameters) mode=%s batch=%lld latent=%lldx%lld "
                "image=%lldx%lld threads=%d attention=%s optimizer=%s device=%s precision=%s: %.3f samples/s (median "
                "step %.1f ms; steps %s ms) peak RSS %.1f MiB;%s last loss %.4f\n",
                model.c_str(), static_cast<double>(numel) / 1e6, mode.c_str(), static_cast<long long>(batch),
                static_cast<long long>(latent), static_cast<long long>(latent), static_cast<long long>(image),
                static_cast<long long>(image), at::get_num_threads(), attention.c_str(), optimizer.c_str(), device_name.c_str(), precision.c_str(),
                static_cast<double>(batch) / (median / 1000.0), median, each.c_str(), proc_status_mib("VmHWM"), gpu_peak.c_str(), loss);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
}

}  // namespace zerodiff_bench::bench_train_step
