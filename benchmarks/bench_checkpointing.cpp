// Activation memory and step time of the UNet with and without activation checkpointing, on the CPU.
//
//   bench_checkpointing [--model tiny|sd15|both] [--latent 32] [--batch 1] [--iters 2]
//
// Memory: a counting allocator wraps LibTorch's CPU allocator; after a warm-up step (so the parameters'
// .grad buffers exist), the peak of live bytes above the level before forward, over one forward + backward,
// is the activation memory (saved activations plus the temporaries of backward). Time: the median wall time
// of --iters forward + backward steps. Both modes run in the same process on the same weights and inputs;
// "without" is the reference. Model configs: configs/models/tiny/unet_sd1, configs/models/sd15/unet.
#include <CLI/CLI.hpp>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/models/unet/UNet2DConditionModel.h"

namespace zerodiff_bench::bench_checkpointing {

// Counts live bytes (and their peak) of every CPU allocation, delegating to the allocator it replaces. The
// DataPtr's context is the data pointer itself (raw_allocate, used by oneDNN, requires that), so the original
// DataPtr and size are kept in a table keyed by address.
class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) { instance_ = this; }
  c10::DataPtr allocate(size_t n) override {
    auto inner = base_->allocate(n);
    void* data = inner.get();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_ += static_cast<int64_t>(n);
      peak_ = std::max(peak_, live_);
      blocks_.emplace(data, Block{std::move(inner), n});
    }
    return {data, data, &CountingAllocator::release, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &CountingAllocator::release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
  int64_t live() {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_;
  }
  int64_t peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    return peak_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    peak_ = live_;
  }

 private:
  struct Block {
    c10::DataPtr inner;
    size_t bytes;
  };
  static void release(void* data) {
    if (!data) return;
    Block block;
    {
      std::lock_guard<std::mutex> lock(instance_->mutex_);
      auto it = instance_->blocks_.find(data);
      if (it == instance_->blocks_.end()) return;
      block = std::move(it->second);
      instance_->blocks_.erase(it);
      instance_->live_ -= static_cast<int64_t>(block.bytes);
    }
    // block.inner frees the memory through the base allocator here, outside the lock.
  }
  static inline CountingAllocator* instance_ = nullptr;
  c10::Allocator* base_;
  std::mutex mutex_;
  int64_t live_ = 0, peak_ = 0;
  std::unordered_map<void*, Block> blocks_;
};

struct Figures {
  double activation_mib = 0;
  double step_s = 0;
};

Figures measure(zerodiff::models::UNet2DConditionModel& unet, bool checkpointed, const at::Tensor& sample,
                const at::Tensor& context, int iters, CountingAllocator& counter) {
  unet->enable_gradient_checkpointing(checkpointed);
  const auto t = torch::tensor({500});
  auto step = [&] {
    const auto out = unet->forward(sample, t, context);
    out.pow(2).mean().backward();
  };
  step();  // warm-up: allocates the .grad buffers, warms caches
  Figures f;
  {
    const int64_t before = counter.live();
    counter.reset_peak();
    step();
    f.activation_mib = static_cast<double>(counter.peak() - before) / (1024.0 * 1024.0);
  }
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  f.step_s = times[times.size() / 2];
  return f;
}


int run(int argc, char** argv) {
  CLI::App app{"UNet activation memory and step time with and without activation checkpointing (CPU)"};
  std::string model = "tiny";
  int64_t latent = 32, batch = 1;
  int iters = 2;
  std::string source = ZERODIFF_SOURCE_DIR;
  app.add_option("--model", model, "tiny, sd15 or both")->check(CLI::IsMember({"tiny", "sd15", "both"}));
  app.add_option("--latent", latent, "latent side (32 = 256 px images for SD)");
  app.add_option("--batch", batch, "batch size");
  app.add_option("--iters", iters, "timed forward+backward steps per mode (median reported)");
  app.add_option("--source", source, "repository root (for configs/models)");
  CLI11_PARSE(app, argc, argv);
  try {
    static CountingAllocator counter(c10::GetCPUAllocator());
    c10::SetCPUAllocator(&counter, /*priority=*/100);
    std::vector<std::pair<std::string, std::string>> models;
    if (model == "tiny" || model == "both") models.emplace_back("tiny", source + "/configs/models/tiny/unet_sd1");
    if (model == "sd15" || model == "both") models.emplace_back("sd15", source + "/configs/models/sd15/unet");
    std::printf("%-6s %8s %6s | %12s %12s %9s | %10s %10s %9s\n", "model", "latent", "batch", "act MiB", "act MiB ckpt",
                "saved", "step s", "step ckpt", "overhead");
    for (const auto& [name, dir] : models) {
      torch::manual_seed(0);
      zerodiff::models::UNet2DConditionModel unet(
          zerodiff::models::UNet2DConditionOptions::from_json(zerodiff::io::read_config_json(dir)));
      unet->train();
      const auto sample = torch::randn({batch, unet->options.in_channels(), latent, latent});
      const auto context = torch::randn({batch, 77, unet->options.cross_attention_dim()[0]});
      const Figures plain = measure(unet, false, sample, context, iters, counter);
      const Figures ckpt = measure(unet, true, sample, context, iters, counter);
      std::printf("%-6s %8lld %6lld | %12.1f %12.1f %8.0f%% | %10.3f %10.3f %8.0f%%\n", name.c_str(),
                  static_cast<long long>(latent), static_cast<long long>(batch), plain.activation_mib,
                  ckpt.activation_mib, 100.0 * (1.0 - ckpt.activation_mib / plain.activation_mib), plain.step_s,
                  ckpt.step_s, 100.0 * (ckpt.step_s / plain.step_s - 1.0));
      std::fflush(stdout);
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_checkpointing: error: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace zerodiff_bench::bench_checkpointing
