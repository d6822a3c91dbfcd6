// UNet2DConditionModel against diffusers 0.42.1 (tests/data/parity/README.md): the tiny SD1-like (int
// head count, conv projections) and SD2-like (per-block heads, linear projections, upcast attention,
// transformer_layers_per_block [1, 2]) models, forward and backward; config round trips and errors;
// sharding units; the attention front door.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <set>
#include <string>

#include <unistd.h>

#include "ParityUtil.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/models/unet/UNet2DConditionModel.h"
#include "zerodiff/nn/Attention.h"

namespace fs = std::filesystem;
using zerodiff::testing::parity_close;
using zerodiff::testing::parity_dir;
namespace zm = zerodiff::models;
namespace zio = zerodiff::io;

namespace {

class UNetParity : public ::testing::TestWithParam<std::string> {
 protected:
  std::string model_dir() const { return parity_dir() + "/" + GetParam(); }
  zio::TensorMap io() const { return zio::load_safetensors(parity_dir() + "/" + GetParam() + "_io.safetensors"); }
  /// The model's output on the fixture's inputs ([B, 4, H, W]) with every attention on `backend`.
  at::Tensor out_with(zerodiff::nn::AttentionBackend backend) const {
    torch::NoGradGuard no_grad;
    zm::UNet2DConditionOptions options = zm::UNet2DConditionOptions::from_json(zio::read_config_json(model_dir()));
    options.attention_backend(backend);
    zm::UNet2DConditionModel unet(options);
    zio::load_state_dict(*unet, zio::load_weights(model_dir()));
    unet->eval();
    const zio::TensorMap ref = io();
    return unet->forward(ref.at("sample"), ref.at("timestep"), ref.at("encoder_hidden_states"));
  }
};

TEST_P(UNetParity, ForwardMatchesDiffusers) {
  torch::NoGradGuard no_grad;
  zm::UNet2DConditionModel unet = zm::unet_from_pretrained(model_dir());
  unet->eval();
  const zio::TensorMap ref = io();
  const at::Tensor out = unet->forward(ref.at("sample"), ref.at("timestep"), ref.at("encoder_hidden_states"));
  EXPECT_TRUE(parity_close(GetParam() + " out", out, ref.at("out")));
  const at::Tensor out_f =
      unet->forward(ref.at("sample"), ref.at("timestep_float"), ref.at("encoder_hidden_states"));
  EXPECT_TRUE(parity_close(GetParam() + " out_timestep_float", out_f, ref.at("out_timestep_float")));
  // Intermediate activations that have a direct C++ counterpart.
  const at::Tensor t_emb = unet->time_proj->forward(ref.at("timestep"));
  EXPECT_TRUE(parity_close(GetParam() + " act.time_proj", t_emb, ref.at("act.time_proj")));
  EXPECT_TRUE(parity_close(GetParam() + " act.time_embedding", unet->time_embedding->forward(t_emb),
                           ref.at("act.time_embedding")));
  EXPECT_TRUE(parity_close(GetParam() + " act.conv_in", unet->conv_in->forward(ref.at("sample")), ref.at("act.conv_in")));
}

TEST_P(UNetParity, BackwardMatchesDiffusers) {
  zm::UNet2DConditionModel unet = zm::unet_from_pretrained(model_dir());
  unet->eval();
  const zio::TensorMap ref = io();
  at::Tensor sample = ref.at("sample").clone().requires_grad_(true);
  at::Tensor context = ref.at("encoder_hidden_states").clone().requires_grad_(true);
  const at::Tensor out = unet->forward(sample, ref.at("timestep"), context);
  const at::Tensor loss = (out * ref.at("grad_weight")).sum();
  EXPECT_TRUE(parity_close(GetParam() + " loss", loss, ref.at("loss")));
  loss.backward();
  EXPECT_TRUE(parity_close(GetParam() + " grad.sample", sample.grad(), ref.at("grad.sample")));
  EXPECT_TRUE(parity_close(GetParam() + " grad.encoder_hidden_states", context.grad(),
                           ref.at("grad.encoder_hidden_states")));
  const auto params = unet->named_parameters();
  int checked = 0;
  for (const auto& [name, tensor] : ref) {
    const std::string prefix = "grad.param.";
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string pname = name.substr(prefix.size());
    const at::Tensor* p = params.find(pname);
    ASSERT_NE(p, nullptr) << "no parameter " << pname;
    EXPECT_TRUE(parity_close(GetParam() + " " + name, p->grad(), tensor));
    ++checked;
  }
  EXPECT_EQ(checked, 8);
}

TEST_P(UNetParity, ConfigRoundTripsExactly) {
  const nlohmann::json config = zio::read_config_json(model_dir());
  const zm::UNet2DConditionOptions options = zm::UNet2DConditionOptions::from_json(config);
  EXPECT_EQ(options.to_json(), config) << options.to_json().dump(2);
}

TEST_P(UNetParity, SaveAndReloadGivesTheSameModel) {
  torch::NoGradGuard no_grad;
  zm::UNet2DConditionModel unet = zm::unet_from_pretrained(model_dir());
  unet->eval();
  const fs::path tmp = fs::temp_directory_path() / ("zerodiff_unet_save_" + GetParam() + "_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  zm::save_pretrained(unet, tmp.string());
  zm::UNet2DConditionModel again = zm::unet_from_pretrained(tmp.string());
  again->eval();
  const zio::TensorMap ref = io();
  const at::Tensor a = unet->forward(ref.at("sample"), ref.at("timestep"), ref.at("encoder_hidden_states"));
  const at::Tensor b = again->forward(ref.at("sample"), ref.at("timestep"), ref.at("encoder_hidden_states"));
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_EQ(zio::read_config_json(tmp.string()), zio::read_config_json(model_dir()));
  // diffusers itself loads what zerodiff saved (strictly) and reproduces the reference output.
  const int rc = zerodiff::testing::check_with_diffusers("unet", tmp.string(),
                                                         parity_dir() + "/" + GetParam() + "_io.safetensors");
  fs::remove_all(tmp);
  if (rc == -1) GTEST_SKIP() << "no .venv with diffusers; the diffusers load check did not run";
  EXPECT_EQ(rc, 0) << "diffusers could not load the folder zerodiff saved";
}

TEST_P(UNetParity, UnitsCoverEveryParameterOnce) {
  zm::UNet2DConditionModel unet = zm::unet_from_pretrained(model_dir());
  std::set<std::string> seen;
  std::vector<std::string> names;
  for (const auto& unit : unet->units()) {
    names.push_back(unit.name);
    for (const auto& p : unit.module->named_parameters()) {
      const std::string full = unit.prefix.empty() ? p.key() : unit.prefix + "." + p.key();
      EXPECT_TRUE(seen.insert(full).second) << full << " in two units";
      // The unit's tensor is the model's tensor, not a copy.
      EXPECT_TRUE(p.value().is_same(unet->named_parameters()[full])) << full;
    }
  }
  EXPECT_EQ(seen.size(), unet->named_parameters().size());
  const std::vector<std::string> expected{"stem",        "down_blocks.0", "down_blocks.1", "mid_block",
                                          "up_blocks.0", "up_blocks.1",   "head"};
  EXPECT_EQ(names, expected);
}

TEST_P(UNetParity, CloneIsDeepAndEqual) {
  torch::NoGradGuard no_grad;
  zm::UNet2DConditionModel unet = zm::unet_from_pretrained(model_dir());
  unet->eval();
  auto copy = std::dynamic_pointer_cast<zm::UNet2DConditionModelImpl>(unet->clone());
  ASSERT_TRUE(copy);
  const zio::TensorMap ref = io();
  const at::Tensor a = unet->forward(ref.at("sample"), ref.at("timestep"), ref.at("encoder_hidden_states"));
  const at::Tensor b = copy->forward(ref.at("sample"), ref.at("timestep"), ref.at("encoder_hidden_states"));
  EXPECT_TRUE(torch::equal(a, b));
  copy->conv_out->bias.add_(1.0);
  EXPECT_FALSE(torch::equal(copy->conv_out->bias, unet->conv_out->bias));
}

TEST_P(UNetParity, OddSizesUseExplicitUpsampleSizes) {
  torch::NoGradGuard no_grad;
  zm::UNet2DConditionModel unet = zm::unet_from_pretrained(model_dir());
  unet->eval();
  const zio::TensorMap ref = io();
  const at::Tensor sample = torch::randn({1, 4, 9, 7});
  const at::Tensor out = unet->forward(sample, torch::tensor(500), ref.at("encoder_hidden_states").slice(0, 0, 1));
  EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{1, 4, 9, 7}));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
}

TEST_P(UNetParity, MathAttentionBackendMatchesSdpa) {
  EXPECT_TRUE(parity_close(GetParam() + " out (math attention)", out_with(zerodiff::nn::AttentionBackend::math),
                           io().at("out")));
}

// Our CPU flash-attention kernel inside the model, requested explicitly: `auto` picks it only on AVX-512 CPUs, so
// on AVX2-only machines this is the test that still runs it through the UNet.
TEST_P(UNetParity, OurAttentionKernelMatchesDiffusers) {
  EXPECT_TRUE(parity_close(GetParam() + " out (our attention kernel)",
                           out_with(zerodiff::nn::AttentionBackend::zerodiff), io().at("out")));
}

INSTANTIATE_TEST_SUITE_P(Tiny, UNetParity, ::testing::Values("unet_sd1_tiny", "unet_sd2_tiny"));

// ------------------------------------------------------------------ config errors

nlohmann::json tiny_config() { return zio::read_config_json(parity_dir() + "/unet_sd1_tiny"); }

template <class E>
std::string error_of(const nlohmann::json& config) {
  try {
    zm::UNet2DConditionOptions::from_json(config);
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

TEST(UNetConfig, WrongTypesAreConfigErrorsNamingTheKey) {
  auto c = tiny_config();
  c["attention_head_dim"] = "eight";
  EXPECT_EQ(error_of<zerodiff::ConfigError>(c),
            "UNet2DConditionModel config: key 'attention_head_dim' expects an integer or a list of integers, got "
            "\"eight\"");
  c = tiny_config();
  c["use_linear_projection"] = 1;
  EXPECT_EQ(error_of<zerodiff::ConfigError>(c),
            "UNet2DConditionModel config: key 'use_linear_projection' expects true or false, got 1");
  c = tiny_config();
  c["block_out_channels"] = {32, 64, 128};
  EXPECT_EQ(error_of<zerodiff::ConfigError>(c),
            "UNet2DConditionModel config: key 'block_out_channels' has 3 entries but down_block_types has 2");
  c = tiny_config();
  c["_class_name"] = "AutoencoderKL";
  EXPECT_EQ(error_of<zerodiff::ConfigError>(c),
            "UNet2DConditionModel config: key '_class_name' must be \"UNet2DConditionModel\", got \"AutoencoderKL\"");
  c = tiny_config();
  c["attention_head_dim"] = 7;
  EXPECT_NE(error_of<zerodiff::ConfigError>(c).find("'attention_head_dim' (the number of heads) 7 does not divide"),
            std::string::npos);
}

TEST(UNetConfig, UnsupportedValuesAreNotImplementedErrorsNamingKeyAndValue) {
  auto c = tiny_config();
  c["class_embed_type"] = "timestep";
  EXPECT_EQ(error_of<zerodiff::NotImplementedError>(c),
            "UNet2DConditionModel config: key 'class_embed_type' = \"timestep\" is not supported by zerodiff "
            "(supported: null)");
  c = tiny_config();
  c["addition_embed_type"] = "text_time";
  EXPECT_NE(error_of<zerodiff::NotImplementedError>(c).find("'addition_embed_type' = \"text_time\""),
            std::string::npos);
  c = tiny_config();
  c["down_block_types"] = {"AttnDownBlock2D", "DownBlock2D"};
  EXPECT_EQ(error_of<zerodiff::NotImplementedError>(c),
            "UNet2DConditionModel config: key 'down_block_types' entry \"AttnDownBlock2D\" is not supported by "
            "zerodiff (supported: \"CrossAttnDownBlock2D\", \"DownBlock2D\")");
  c = tiny_config();
  c["mid_block_type"] = "UNetMidBlock2DSimpleCrossAttn";
  EXPECT_NE(error_of<zerodiff::NotImplementedError>(c).find("'mid_block_type' = \"UNetMidBlock2DSimpleCrossAttn\""),
            std::string::npos);
  c = tiny_config();
  c["resnet_time_scale_shift"] = "scale_shift";
  EXPECT_NE(error_of<zerodiff::NotImplementedError>(c).find("'resnet_time_scale_shift' = \"scale_shift\""),
            std::string::npos);
  c = tiny_config();
  c["only_cross_attention"] = true;
  EXPECT_NE(error_of<zerodiff::NotImplementedError>(c).find("'only_cross_attention' = true"), std::string::npos);
  c = tiny_config();
  c["num_attention_heads"] = 8;
  EXPECT_NE(error_of<zerodiff::NotImplementedError>(c).find("'num_attention_heads' = 8"), std::string::npos);
  c = tiny_config();
  c["time_embedding_type"] = "fourier";
  EXPECT_NE(error_of<zerodiff::NotImplementedError>(c).find("'time_embedding_type' = \"fourier\""), std::string::npos);
  c = tiny_config();
  c["some_future_option"] = 3;
  EXPECT_EQ(error_of<zerodiff::NotImplementedError>(c),
            "UNet2DConditionModel config: unknown key 'some_future_option' (= 3) is not supported by zerodiff");
}

TEST(UNetConfig, DefaultsMatchDiffusersAndMinimalConfigsWork) {
  // An empty config is diffusers' default UNet2DConditionModel(); only check the options here.
  const auto o = zm::UNet2DConditionOptions::from_json(nlohmann::json::object());
  EXPECT_EQ(o.block_out_channels(), (std::vector<int64_t>{320, 640, 1280, 1280}));
  EXPECT_EQ(o.heads_at(3), 8);
  EXPECT_EQ(o.cross_attention_dim_at(0), 1280);
  EXPECT_TRUE(o.sample_size().empty());
  // Lists and ints are equivalent.
  auto c = tiny_config();
  c["attention_head_dim"] = {8, 8};
  c["cross_attention_dim"] = {32, 32};
  const auto l = zm::UNet2DConditionOptions::from_json(c);
  EXPECT_EQ(l.heads_at(1), 8);
  EXPECT_EQ(l.to_json()["attention_head_dim"], nlohmann::json({8, 8}));
}

TEST(UNetConfig, FromPretrainedPrefixesTheConfigPath) {
  const fs::path tmp = fs::temp_directory_path() / ("zerodiff_unet_badcfg_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  auto c = tiny_config();
  c["class_embed_type"] = "identity";
  zio::write_config_json(tmp.string(), c);
  try {
    zm::unet_from_pretrained(tmp.string());
    FAIL() << "expected NotImplementedError";
  } catch (const zerodiff::NotImplementedError& e) {
    EXPECT_EQ(std::string(e.what()), tmp.string() +
                                         "/config.json: UNet2DConditionModel config: key 'class_embed_type' = "
                                         "\"identity\" is not supported by zerodiff (supported: null)");
  }
  fs::remove_all(tmp);
}

// ------------------------------------------------------------------ building blocks

TEST(Timesteps, MatchesTheDiffusersFormula) {
  // diffusers get_timestep_embedding(t, 6, flip_sin_to_cos=False, downscale_freq_shift=1): freqs
  // exp(-ln(1e4) * i / (3 - 1)) = [1, 1e-2, 1e-4].
  const at::Tensor t = torch::tensor({0.0, 1.0, 250.5}, torch::kFloat64);
  const at::Tensor e = zm::get_timestep_embedding(t, 6, false, 1.0);
  ASSERT_EQ(e.sizes().vec(), (std::vector<int64_t>{3, 6}));
  EXPECT_EQ(e.scalar_type(), torch::kFloat32);
  const at::Tensor f = torch::tensor({1.0, 1e-2, 1e-4}, torch::kFloat32);
  const at::Tensor arg = t.to(torch::kFloat32).unsqueeze(1) * f.unsqueeze(0);
  EXPECT_TRUE(torch::allclose(e, torch::cat({arg.sin(), arg.cos()}, 1), 1e-6, 1e-6));
  // flip puts cos first; odd dims get a zero column.
  const at::Tensor flipped = zm::get_timestep_embedding(t, 7, true, 1.0);
  EXPECT_TRUE(torch::allclose(flipped.slice(1, 0, 3), arg.cos(), 1e-6, 1e-6));
  EXPECT_TRUE(torch::equal(flipped.select(1, 6), torch::zeros({3})));
  EXPECT_THROW(zm::get_timestep_embedding(torch::zeros({2, 2}), 4), zerodiff::Error);
}

TEST(AttentionFunction, SdpaAndMathAgreeAndUpcastHalfInputs) {
  torch::manual_seed(0);
  const at::Tensor q = torch::randn({2, 3, 17, 8}), k = torch::randn({2, 3, 5, 8}), v = torch::randn({2, 3, 5, 4});
  const at::Tensor a = zerodiff::nn::attention(q, k, v);
  const at::Tensor m = zerodiff::nn::attention_math(q, k, v);
  EXPECT_EQ(a.sizes().vec(), (std::vector<int64_t>{2, 3, 17, 4}));
  EXPECT_TRUE(torch::allclose(a, m, 1e-5, 1e-6));
  zerodiff::nn::AttentionOptions up;
  up.upcast = true;
  const at::Tensor h = zerodiff::nn::attention(q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16), up);
  EXPECT_EQ(h.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::allclose(h.to(torch::kFloat), a, 3e-2, 3e-2));
  up.backend = zerodiff::nn::AttentionBackend::math;
  const at::Tensor hm = zerodiff::nn::attention(q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16), up);
  EXPECT_TRUE(torch::allclose(hm.to(torch::kFloat), a, 3e-2, 3e-2));
  try {
    zerodiff::nn::attention(q, torch::randn({2, 3, 5, 7}), v);
    FAIL();
  } catch (const zerodiff::Error& e) {
    EXPECT_STREQ(e.what(), "attention: q and k head dims differ: q [2, 3, 17, 8], k [2, 3, 5, 7]");
  }
  EXPECT_EQ(zerodiff::nn::parse_attention_backend("math"), zerodiff::nn::AttentionBackend::math);
  EXPECT_THROW(zerodiff::nn::parse_attention_backend("flash"), zerodiff::ConfigError);
}

}  // namespace
