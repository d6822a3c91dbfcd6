// The built-in training modules: a few real steps on tiny models; what is frozen stays frozen; exports load.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "zerodiff/core/Config.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/data/DataConfig.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/models/Txt2ImgPipeline.h"
#include "zerodiff/train/RunConfig.h"

namespace fs = std::filesystem;
namespace zt = zerodiff::train;

namespace {
const std::string kSource = ZERODIFF_SOURCE_DIR;

std::string fresh(const std::string& name) {
  const auto dir = fs::path(testing::TempDir()) / "zd_modules" / name;
  fs::remove_all(dir);
  return dir.string();
}

zt::FitResult run(const std::string& yaml, const std::string& name, zt::TrainingModule** module_out = nullptr) {
  static std::unique_ptr<zt::TrainingModule> keep;
  const auto cfg = zerodiff::config::load_string<zt::RunConfig>(yaml, name + ".yaml");
  keep = zt::make_module(cfg);
  zt::Trainer trainer(cfg.trainer);
  zerodiff::data::DataLoader loader(zerodiff::data::make_dataset(cfg.data), zerodiff::data::make_loader_options(cfg.data));
  auto r = trainer.fit(*keep, loader);
  if (module_out) *module_out = keep.get();
  return r;
}
}  // namespace

TEST(AutoencoderModule, TrainsAndExportsWithMeasuredScalingFactor) {
  const std::string out = fresh("vae");
  const auto r = run("task: autoencoder\ntrainer:\n  output_dir: " + out +
                         "\n  max_steps: 4\n  accelerator: cpu\n  log_every: 2\n  sample_prompts: [x]\n"
                         "data:\n  dataset: synthetic\n  synthetic_size: 16\n  resolution: 16\n  batch_size: 4\n"
                         "autoencoder:\n  vae: " + kSource + "/configs/models/tiny/vae/config.json\n",
                     "vae");
  EXPECT_EQ(r.steps, 4);
  EXPECT_TRUE(std::isfinite(r.last_loss));
  const auto vae = zerodiff::models::vae_from_pretrained(out + "/final");
  EXPECT_NE(vae->options.scaling_factor(), 0.18215);  // 1 / std of the latents seen
  EXPECT_GT(vae->options.scaling_factor(), 0.0);
  EXPECT_TRUE(fs::exists(out + "/samples/final.png"));
}

TEST(TextToImageModule, TrainsTheUNetOnlyAndExportsADiffusersFolder) {
  const std::string out = fresh("t2i");
  const std::string yaml = "task: text_to_image\ntrainer:\n  output_dir: " + out +
                           "\n  max_steps: 3\n  accelerator: cpu\n  log_every: 1\n"
                           "  optimizer:\n    lr: 1.0e-3\n"
                           "  sample_prompts: [a red circle on a blue background]\n"
                           "data:\n  dataset: synthetic\n  synthetic_size: 8\n  resolution: 16\n  batch_size: 2\n"
                           "text_to_image:\n"
                           "  unet: " + kSource + "/configs/models/tiny/unet_sd1/config.json\n"
                           "  vae: " + kSource + "/tests/data/parity/vae_tiny\n"
                           "  text_encoder: " + kSource + "/tests/data/clip/text_vitl_tiny\n"
                           "  tokenizer: " + kSource + "/tests/data/clip/tokenizer\n"
                           "  snr_gamma: 5.0\n  noise_offset: 0.05\n  sample_steps: 2\n";
  zt::TrainingModule* module = nullptr;
  const auto r = run(yaml, "t2i", &module);
  EXPECT_EQ(r.steps, 3);
  EXPECT_TRUE(std::isfinite(r.last_loss));
  // Frozen components are bit-identical to their source folders; the UNet is saved and loads in the pipeline.
  const auto vae_src = zerodiff::io::load_weights(kSource + "/tests/data/parity/vae_tiny");
  const auto vae_out = zerodiff::io::load_weights(out + "/final/vae");
  for (const auto& [k, v] : vae_src) EXPECT_TRUE(torch::equal(v.to(torch::kFloat), vae_out.at(k))) << k;
  const auto te_src = zerodiff::io::load_weights(kSource + "/tests/data/clip/text_vitl_tiny", "model");
  const auto te_out = zerodiff::io::load_weights(out + "/final/text_encoder", "model");
  for (const auto& [k, v] : te_out) {
    const std::string key = te_src.count(k) ? k : "text_model." + k;
    ASSERT_TRUE(te_src.count(key)) << k;
    EXPECT_TRUE(torch::equal(v, te_src.at(key).to(torch::kFloat))) << k;
  }
  auto pipe = zerodiff::models::Txt2ImgPipeline::from_pretrained(out + "/final");
  zerodiff::models::GenerateOptions o;
  o.prompts = {"a red circle"};
  o.num_inference_steps = 2;
  const auto images = pipe.generate(o);
  EXPECT_EQ(images.sizes(), (std::vector<int64_t>{1, 3, 16, 16}));
  EXPECT_TRUE(fs::exists(out + "/samples/final.png"));
}

TEST(TextToImageModule, MissingComponentsAreNamed) {
  zt::TextToImageConfig c;
  c.unet = "x";
  try {
    zt::TextToImageModule m(c);
    FAIL();
  } catch (const zerodiff::ConfigError& e) {
    EXPECT_STREQ(e.what(), "text_to_image.vae is required when text_to_image.pretrained is not set");
  }
  c.vae = "/nonexistent/vae";
  c.text_encoder = "t";
  c.tokenizer = "k";
  zt::TextToImageModule m(c);
  try {
    m.configure_model(torch::kCPU);
    FAIL();
  } catch (const zerodiff::Error& e) {
    EXPECT_NE(std::string(e.what()).find("x: does not exist (unet)"), std::string::npos) << e.what();
  }
}
