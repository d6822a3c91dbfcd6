// Fixtures shared by the Trainer tests (tests/unit/test_trainer.cpp) and the fault tests (tests/fault/): a toy conv
// net trained on synthetic shapes, a small TrainerConfig, and a fresh temporary output folder per test.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <string>

#include "zerodiff/data/DataLoader.h"
#include "zerodiff/data/SyntheticShapesDataset.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/train/Trainer.h"

namespace fs = std::filesystem;
namespace zt = zerodiff::train;
namespace zd = zerodiff::data;
namespace zio = zerodiff::io;

namespace trainer_test {

// A small conv net predicting the horizontally flipped image; noise from the run's generator.
struct ToyNet : torch::nn::Module {
  ToyNet() {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    norm = register_module("norm", torch::nn::GroupNorm(2, 8));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 3, 3).padding(1)));
  }
  torch::Tensor forward(torch::Tensor x) { return conv2(torch::silu(norm(conv1(x)))); }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::GroupNorm norm{nullptr};
};

struct ToyModule : zt::TrainingModule {
  std::shared_ptr<ToyNet> net;
  void configure_model(const torch::Device& device) override {
    net = std::make_shared<ToyNet>();
    net->to(device);
  }
  torch::nn::Module& model() override { return *net; }
  zt::StepOutput training_step(const zd::Batch& batch, zt::StepContext& ctx) override {
    auto noise = at::randn(batch.images.sizes(), ctx.generator) * 0.1;
    auto pred = net->forward(batch.images + noise);
    return {torch::mse_loss(pred, batch.images.flip(-1)), {}};
  }
};

inline std::shared_ptr<zd::SyntheticShapesDataset> shapes() {
  return std::make_shared<zd::SyntheticShapesDataset>(zd::SyntheticShapesOptions{.size = 12, .image_size = 16, .seed = 3});
}

inline zd::DataLoaderOptions loader_options(int64_t batch) {
  zd::DataLoaderOptions o;
  o.batch_size = batch;
  o.num_workers = 1;
  o.seed = 5;
  o.image.resolution = 16;
  o.image.random_flip = true;
  return o;
}

inline zt::TrainerConfig config(const std::string& dir, int64_t steps) {
  zt::TrainerConfig c;
  c.output_dir = dir;
  c.max_steps = steps;
  c.accelerator = zerodiff::train::Accelerator::cpu;
  c.log_every = 2;
  c.optimizer.lr = 1e-2;
  c.lr_schedule.type = zerodiff::optim::LRScheduleType::cosine;
  c.lr_schedule.warmup_steps = 2;
  c.ema.enabled = true;
  c.ema.decay = 0.9;
  c.gradient_accumulation_steps = 2;
  return c;
}

inline std::string fresh(const std::string& name) {
  const auto dir = fs::path(testing::TempDir()) / "zd_trainer" / name;
  fs::remove_all(dir);
  return dir.string();
}

inline zio::TensorMap final_weights(const std::string& dir) { return zio::load_safetensors(dir + "/final/model.safetensors"); }

}  // namespace trainer_test
