// diffusers folder layout: single, fp16 variant, sharded index; strict loading; pickle refusal; save.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/Diffusers.h"

namespace zio = zerodiff::io;
namespace fs = std::filesystem;

namespace {

struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    proj = register_module("proj", torch::nn::Linear(3, 2));
    norm = register_module("norm", torch::nn::BatchNorm1d(2));
  }
  torch::nn::Linear proj{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
};

std::string fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(testing::TempDir()) / "zd_diffusers" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string load_error(torch::nn::Module& m, const zio::TensorMap& w) {
  try {
    zio::load_state_dict(m, w, true, "unet/");
  } catch (const zerodiff::IoError& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST(DiffusersIO, SaveAndLoadRoundTrip) {
  torch::manual_seed(0);
  TinyImpl a, b;
  const std::string dir = fresh_dir("roundtrip");
  zio::save_pretrained(a, dir, {{"_class_name", "Tiny"}, {"features", 3}});
  EXPECT_EQ(zio::read_config_json(dir)["features"], 3);
  zio::load_state_dict(b, zio::load_weights(dir));
  EXPECT_TRUE(torch::equal(a.proj->weight, b.proj->weight));
  EXPECT_TRUE(torch::equal(a.norm->running_var, b.norm->running_var));
}

TEST(DiffusersIO, Fp16VariantAndShardedIndex) {
  torch::manual_seed(0);
  TinyImpl src, dst;
  const std::string dir = fresh_dir("variants");
  auto sd = zio::state_dict(src);
  zio::TensorMap half;
  for (auto& [k, v] : sd) half[k] = v.is_floating_point() ? v.to(torch::kHalf) : v;
  zio::save_safetensors(dir + "/diffusion_pytorch_model.fp16.safetensors", half);
  zio::load_state_dict(dst, zio::load_weights(dir, "diffusion_pytorch_model", "fp16"));
  EXPECT_EQ(dst.proj->weight.scalar_type(), torch::kFloat);  // converted to the module's dtype
  EXPECT_TRUE(torch::allclose(dst.proj->weight, src.proj->weight, 1e-3, 1e-3));

  // Sharded: proj.* in shard 1, norm.* in shard 2.
  zio::TensorMap s1, s2;
  nlohmann::json map;
  for (auto& [k, v] : sd) {
    (k.rfind("proj", 0) == 0 ? s1 : s2)[k] = v;
    map[k] = k.rfind("proj", 0) == 0 ? "m-00001-of-00002.safetensors" : "m-00002-of-00002.safetensors";
  }
  zio::save_safetensors(dir + "/m-00001-of-00002.safetensors", s1);
  zio::save_safetensors(dir + "/m-00002-of-00002.safetensors", s2);
  std::ofstream(dir + "/diffusion_pytorch_model.safetensors.index.json") << nlohmann::json{{"weight_map", map}}.dump();
  TinyImpl sharded;
  zio::load_state_dict(sharded, zio::load_weights(dir));
  EXPECT_TRUE(torch::equal(sharded.proj->bias, src.proj->bias));
  EXPECT_TRUE(torch::equal(sharded.norm->weight, src.norm->weight));

  // An index entry pointing at a shard without the tensor is an error naming both.
  map["proj.weight"] = "m-00002-of-00002.safetensors";
  std::ofstream(dir + "/diffusion_pytorch_model.safetensors.index.json") << nlohmann::json{{"weight_map", map}}.dump();
  try {
    zio::load_weights(dir);
    FAIL();
  } catch (const zerodiff::IoError& e) {
    EXPECT_EQ(std::string(e.what()), dir + "/diffusion_pytorch_model.safetensors.index.json: tensor 'proj.weight' is "
                                           "mapped to m-00002-of-00002.safetensors which does not contain it");
  }
}

TEST(DiffusersIO, StrictLoadingNamesEveryProblem) {
  TinyImpl m;
  auto sd = zio::state_dict(m);
  sd.erase("proj.bias");
  sd["proj.extra"] = torch::zeros({1});
  sd["norm.weight"] = torch::zeros({5});
  const auto before = m.norm->weight.clone();
  EXPECT_EQ(load_error(m, sd),
            "unet/: state dict does not match the model:\n"
            "  missing keys (1): proj.bias\n"
            "  unexpected keys (1): proj.extra\n"
            "  shape mismatches (1): norm.weight: file [5] vs model [2]");
  EXPECT_TRUE(torch::equal(before, m.norm->weight));  // nothing copied on failure
  const auto report = zio::load_state_dict(m, sd, /*strict=*/false);
  EXPECT_EQ(report.missing, std::vector<std::string>{"proj.bias"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"proj.extra"});
  EXPECT_EQ(report.mismatched.size(), 1u);
}

TEST(DiffusersIO, MissingWeightsAndPickleOnlyFolders) {
  const std::string dir = fresh_dir("empty");
  try {
    zio::load_weights(dir);
    FAIL();
  } catch (const zerodiff::IoError& e) {
    EXPECT_EQ(std::string(e.what()), dir + ": no weights found (tried diffusion_pytorch_model.safetensors, "
                                           "diffusion_pytorch_model.safetensors.index.json)");
  }
  std::ofstream(dir + "/diffusion_pytorch_model.bin") << "pickle";
  try {
    zio::load_weights(dir);
    FAIL();
  } catch (const zerodiff::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("zerodiff never loads pickle files, which can execute arbitrary code. Convert it once in Python"), std::string::npos) << e.what();
  }
  try {
    zio::read_config_json(dir);
    FAIL();
  } catch (const zerodiff::IoError& e) {
    EXPECT_EQ(std::string(e.what()), dir + ": no config.json (is this a diffusers model folder?)");
  }
  std::ofstream(dir + "/config.json") << "{\"a\": ";
  EXPECT_THROW(zio::read_config_json(dir), zerodiff::IoError);
}
