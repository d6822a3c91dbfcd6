// A custom TrainingModule: a small convolutional denoiser trained on zerodiff's synthetic shapes with the
// library's Trainer (AdamW, cosine schedule, EMA, checkpoints, metrics), then evaluated.
//
//   train_denoiser OUTPUT_DIR [STEPS]
//
// The pattern for your own model: subclass zerodiff::train::TrainingModule, build the model in
// configure_model(), return the loss from training_step(), and hand it to Trainer::fit with a DataLoader.
#include <torch/torch.h>

#include <iostream>

#include "zerodiff/data/DataLoader.h"
#include "zerodiff/data/SyntheticShapesDataset.h"
#include "zerodiff/train/Trainer.h"

namespace zt = zerodiff::train;
namespace zd = zerodiff::data;

// [B, 3, H, W] noisy image -> [B, 3, H, W] predicted noise.
struct DenoiserImpl : torch::nn::Module {
  DenoiserImpl() {
    body = register_module("body", torch::nn::Sequential(
                                       torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 32, 3).padding(1)), torch::nn::SiLU(),
                                       torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 32, 3).padding(1)), torch::nn::SiLU(),
                                       torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 3, 3).padding(1))));
  }
  torch::Tensor forward(const torch::Tensor& x) { return body->forward(x); }
  torch::nn::Sequential body{nullptr};
};
TORCH_MODULE(Denoiser);

class DenoiserModule : public zt::TrainingModule {
 public:
  void configure_model(const torch::Device& device) override {
    net_ = Denoiser();
    net_->to(device);
  }
  torch::nn::Module& model() override { return *net_; }
  zt::StepOutput training_step(const zd::Batch& batch, zt::StepContext& ctx) override {
    const auto x = batch.images.to(ctx.device);
    const auto noise = at::randn(x.sizes(), ctx.generator).to(ctx.device) * 0.3;
    const auto loss = torch::mse_loss(net_->forward(x + noise), noise);
    return {loss, {}};
  }
  Denoiser& net() { return net_; }

 private:
  Denoiser net_{nullptr};
};

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: train_denoiser OUTPUT_DIR [STEPS]\n";
    return 2;
  }
  try {
    zt::TrainerConfig config;
    config.output_dir = argv[1];
    config.max_steps = argc > 2 ? std::stoll(argv[2]) : 200;
    config.accelerator = zerodiff::train::Accelerator::cpu;
    config.log_every = std::max<int64_t>(1, config.max_steps / 4);
    config.optimizer.lr = 2e-3;
    config.lr_schedule.type = zerodiff::optim::LRScheduleType::cosine;
    config.ema.enabled = true;
    config.ema.decay = 0.99;

    auto dataset = std::make_shared<zd::SyntheticShapesDataset>(zd::SyntheticShapesOptions{.size = 256, .image_size = 16});
    zd::DataLoaderOptions loader_options;
    loader_options.batch_size = 16;
    loader_options.num_workers = 1;
    loader_options.image.resolution = 16;
    zd::DataLoader loader(dataset, loader_options);

    DenoiserModule module;
    const auto result = zt::Trainer(config).fit(module, loader);

    // Evaluate the trained weights (fit exports the EMA weights, then puts the raw ones back): residual noise
    // after denoising vs the noise added.
    torch::manual_seed(1);
    auto batch = loader.build_batch(0, 0);
    torch::NoGradGuard no_grad;
    const auto noise = torch::randn_like(batch.images) * 0.3;
    const double before = noise.pow(2).mean().item<double>();
    const double after = (module.net()->forward(batch.images + noise) - noise).pow(2).mean().item<double>();
    std::cout << "custom module: " << result.steps << " steps, noise MSE " << before << " -> residual " << after
              << "; exported to " << result.export_dir << std::endl;
    return after < before ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "train_denoiser: error: " << e.what() << std::endl;
    return 1;
  }
}
