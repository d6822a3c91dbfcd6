// The full-size Stable Diffusion models built from configs/models/*: parameter counts and the sorted
// (name, shape) lists must equal diffusers' (tests/data/parity/sd_key_lists/*.json, written by
// tools/fixtures/make_parity_fixtures.py). Also: strict loading names every missing, unexpected and
// mis-shaped key at once.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "ParityUtil.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/models/unet/UNet2DConditionModel.h"
#include "zerodiff/models/vae/AutoencoderKL.h"

namespace fs = std::filesystem;
using zerodiff::testing::parity_dir;
namespace zm = zerodiff::models;
namespace zio = zerodiff::io;

using zerodiff::testing::config_dir;
using zerodiff::testing::read_json;

namespace {

using KeyList = std::vector<std::pair<std::string, std::vector<int64_t>>>;

KeyList reference_keys(const nlohmann::json& ref, const char* field) {
  KeyList keys;
  for (const auto& entry : ref.at(field)) {
    keys.emplace_back(entry.at(0).get<std::string>(), entry.at(1).get<std::vector<int64_t>>());
  }
  return keys;
}

void compare_with_reference(const torch::nn::Module& model, const std::string& key_list) {
  const nlohmann::json ref = read_json(parity_dir() + "/sd_key_lists/" + key_list + ".json");
  KeyList params, buffers;
  int64_t count = 0;
  for (const auto& p : model.named_parameters()) {
    params.emplace_back(p.key(), p.value().sizes().vec());
    count += p.value().numel();
  }
  for (const auto& b : model.named_buffers()) buffers.emplace_back(b.key(), b.value().sizes().vec());
  std::sort(params.begin(), params.end());
  std::sort(buffers.begin(), buffers.end());
  EXPECT_EQ(count, ref.at("num_params").get<int64_t>()) << key_list;
  EXPECT_EQ(static_cast<int64_t>(params.size() + buffers.size()), ref.at("num_tensors").get<int64_t>()) << key_list;
  const KeyList want = reference_keys(ref, "params");
  EXPECT_EQ(params.size(), want.size()) << key_list;
  // Report the first few differences by name rather than one giant vector dump.
  size_t shown = 0;
  for (size_t i = 0, j = 0; (i < params.size() || j < want.size()) && shown < 10;) {
    if (j == want.size() || (i < params.size() && params[i].first < want[j].first)) {
      ADD_FAILURE() << key_list << ": unexpected parameter " << params[i].first;
      ++i, ++shown;
    } else if (i == params.size() || want[j].first < params[i].first) {
      ADD_FAILURE() << key_list << ": missing parameter " << want[j].first;
      ++j, ++shown;
    } else {
      if (params[i].second != want[j].second) {
        ADD_FAILURE() << key_list << ": " << params[i].first << " has shape " << zerodiff::str(params[i].second)
                      << ", diffusers " << zerodiff::str(want[j].second);
        ++shown;
      }
      ++i, ++j;
    }
  }
  EXPECT_EQ(buffers, reference_keys(ref, "buffers")) << key_list;
}

// Full-size models are built on the CPU in float32 one at a time (SD UNet: 3.4 GB), then freed.
TEST(ModelKeys, StableDiffusion15UNet) {
  const auto start = std::chrono::steady_clock::now();
  const nlohmann::json config = zio::read_config_json(config_dir("sd15/unet"));
  EXPECT_EQ(zm::UNet2DConditionOptions::from_json(config).to_json(), config);
  torch::NoGradGuard no_grad;
  zm::UNet2DConditionModel unet(zm::UNet2DConditionOptions::from_json(config));
  compare_with_reference(*unet, "unet_sd15");
  std::printf("[keys] SD 1.5 UNet built and checked in %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

TEST(ModelKeys, StableDiffusion21UNet) {
  const nlohmann::json config = zio::read_config_json(config_dir("sd21/unet"));
  EXPECT_EQ(zm::UNet2DConditionOptions::from_json(config).to_json(), config);
  torch::NoGradGuard no_grad;
  zm::UNet2DConditionModel unet(zm::UNet2DConditionOptions::from_json(config));
  compare_with_reference(*unet, "unet_sd21");
  // SD 2.x: linear projections and per-block head counts [5, 10, 20, 20] (head dim 64).
  EXPECT_TRUE(unet->options.use_linear_projection());
  EXPECT_EQ(unet->options.heads_at(0), 5);
}

TEST(ModelKeys, StableDiffusion15Vae) {
  const nlohmann::json config = zio::read_config_json(config_dir("sd15/vae"));
  torch::NoGradGuard no_grad;
  zm::AutoencoderKL vae(zm::AutoencoderKLOptions::from_json(config));
  compare_with_reference(*vae, "vae_sd15");
  zm::AutoencoderKL vae21(zm::AutoencoderKLOptions::from_json(zio::read_config_json(config_dir("sd21/vae"))));
  compare_with_reference(*vae21, "vae_sd15");
}

TEST(ModelKeys, TinyConfigsInConfigsMatchTheFixtures) {
  for (const auto& [cfg, fixture] : std::vector<std::pair<std::string, std::string>>{
           {"tiny/unet_sd1", "unet_sd1_tiny"}, {"tiny/unet_sd2", "unet_sd2_tiny"}}) {
    const nlohmann::json config = zio::read_config_json(config_dir(cfg));
    EXPECT_EQ(config, zio::read_config_json(parity_dir() + "/" + fixture)) << cfg;
    EXPECT_EQ(zm::UNet2DConditionOptions::from_json(config).to_json(), config) << cfg;
  }
  const nlohmann::json vae = zio::read_config_json(config_dir("tiny/vae"));
  EXPECT_EQ(zm::AutoencoderKLOptions::from_json(vae).to_json(), vae);
}

TEST(ModelKeys, StrictLoadingNamesMissingUnexpectedAndMisshapedKeys) {
  const std::string src = parity_dir() + "/unet_sd1_tiny";
  zio::TensorMap weights = zio::load_weights(src);
  const std::string missing = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight";
  const std::string reshaped = "mid_block.resnets.0.conv1.weight";
  const std::string extra = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.bias";
  ASSERT_EQ(weights.erase(missing), 1u);
  weights[extra] = torch::zeros({32});
  ASSERT_TRUE(weights.count(reshaped));
  weights[reshaped] = torch::zeros({64, 64, 1, 1});
  const fs::path tmp = fs::temp_directory_path() / ("zerodiff_unet_bad_weights_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  zio::write_config_json(tmp.string(), zio::read_config_json(src));
  zio::save_safetensors((tmp / "diffusion_pytorch_model.safetensors").string(), weights);
  try {
    zm::unet_from_pretrained(tmp.string());
    FAIL() << "loading a mismatching checkpoint must fail";
  } catch (const zerodiff::IoError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("missing keys (1): " + missing), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected keys (1): " + extra), std::string::npos) << msg;
    EXPECT_NE(msg.find("shape mismatches (1): " + reshaped + ": file [64, 64, 1, 1] vs model [64, 64, 3, 3]"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find(tmp.string()), std::string::npos) << msg;
  }
  fs::remove_all(tmp);
}

TEST(ModelKeys, Fp16VariantLoads) {
  // The fixtures store F16 weights; a folder with only the .fp16 variant loads with variant "fp16".
  const std::string src = parity_dir() + "/unet_sd1_tiny";
  const fs::path tmp = fs::temp_directory_path() / ("zerodiff_unet_fp16_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  zio::write_config_json(tmp.string(), zio::read_config_json(src));
  zio::save_safetensors((tmp / "diffusion_pytorch_model.fp16.safetensors").string(), zio::load_weights(src));
  zm::UNet2DConditionModel a = zm::unet_from_pretrained(tmp.string(), "fp16");
  zm::UNet2DConditionModel b = zm::unet_from_pretrained(src);
  for (const auto& p : b->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), a->named_parameters()[p.key()])) << p.key();
    EXPECT_EQ(a->named_parameters()[p.key()].scalar_type(), torch::kFloat32);
  }
  EXPECT_THROW(zm::unet_from_pretrained(tmp.string()), zerodiff::IoError);
  fs::remove_all(tmp);
}

}  // namespace
