// AutoencoderKL against diffusers 0.42.1 (tests/data/parity/README.md): encoder moments, the diagonal
// Gaussian posterior (mean, clamped logvar, std, var, sample with given noise, mode, KL), scaling,
// decode, and the backward pass through decoder and encoder; config round trip and errors; units.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include "ParityUtil.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/models/vae/AutoencoderKL.h"

namespace fs = std::filesystem;
using zerodiff::testing::parity_close;
using zerodiff::testing::parity_dir;
namespace zm = zerodiff::models;
namespace zio = zerodiff::io;

namespace {

std::string vae_dir() { return parity_dir() + "/vae_tiny"; }
zio::TensorMap vae_io() { return zio::load_safetensors(parity_dir() + "/vae_tiny_io.safetensors"); }

TEST(VaeParity, EncodePosteriorAndDecodeMatchDiffusers) {
  torch::NoGradGuard no_grad;
  zm::AutoencoderKL vae = zm::vae_from_pretrained(vae_dir());
  vae->eval();
  const zio::TensorMap ref = vae_io();
  const zm::DiagonalGaussianDistribution posterior = vae->encode(ref.at("sample"));
  EXPECT_TRUE(parity_close("vae act.encoder", vae->encoder->forward(ref.at("sample")), ref.at("act.encoder")));
  EXPECT_TRUE(parity_close("vae posterior.parameters", posterior.parameters(), ref.at("posterior.parameters")));
  EXPECT_TRUE(parity_close("vae posterior.mean", posterior.mean(), ref.at("posterior.mean")));
  EXPECT_TRUE(parity_close("vae posterior.logvar", posterior.logvar(), ref.at("posterior.logvar")));
  EXPECT_TRUE(parity_close("vae posterior.std", posterior.std(), ref.at("posterior.std")));
  EXPECT_TRUE(parity_close("vae posterior.var", posterior.var(), ref.at("posterior.var")));
  EXPECT_TRUE(parity_close("vae posterior.sample_with_noise", posterior.sample(ref.at("posterior.noise")),
                           ref.at("posterior.sample_with_noise")));
  EXPECT_TRUE(parity_close("vae latent_mode", posterior.mode(), ref.at("latent_mode")));
  EXPECT_TRUE(parity_close("vae latent_scaled", vae->scale_latents(posterior.mode()), ref.at("latent_scaled")));
  EXPECT_TRUE(parity_close("vae latent_scaled (to_latents, mode)", vae->to_latents(ref.at("sample"), std::nullopt, false),
                           ref.at("latent_scaled")));
  EXPECT_TRUE(parity_close("vae kl", posterior.kl(), ref.at("kl")));
  EXPECT_TRUE(parity_close("vae decoded", vae->decode(ref.at("latent_mode")), ref.at("decoded")));
  EXPECT_TRUE(parity_close("vae decoded (from_latents)", vae->from_latents(ref.at("latent_scaled")), ref.at("decoded")));
  EXPECT_TRUE(parity_close("vae decoded (forward, mode)", vae->forward(ref.at("sample")), ref.at("decoded")));
}

TEST(VaeParity, BackwardMatchesDiffusers) {
  zm::AutoencoderKL vae = zm::vae_from_pretrained(vae_dir());
  vae->eval();
  const zio::TensorMap ref = vae_io();
  at::Tensor sample = ref.at("sample").clone().requires_grad_(true);
  const zm::DiagonalGaussianDistribution posterior = vae->encode(sample);
  const at::Tensor decoded = vae->decode(posterior.mode());
  const at::Tensor loss =
      (decoded * ref.at("grad_weight")).sum() + (posterior.mean() * ref.at("grad_weight_latent")).sum();
  EXPECT_TRUE(parity_close("vae loss", loss, ref.at("loss")));
  loss.backward();
  EXPECT_TRUE(parity_close("vae grad.sample", sample.grad(), ref.at("grad.sample")));
  const auto params = vae->named_parameters();
  int checked = 0;
  for (const auto& [name, tensor] : ref) {
    const std::string prefix = "grad.param.";
    if (name.rfind(prefix, 0) != 0) continue;
    const at::Tensor* p = params.find(name.substr(prefix.size()));
    ASSERT_NE(p, nullptr) << name;
    EXPECT_TRUE(parity_close("vae " + name, p->grad(), tensor));
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

TEST(VaeParity, SamplingWithAGeneratorIsSeededAndMatchesRandn) {
  torch::NoGradGuard no_grad;
  zm::AutoencoderKL vae = zm::vae_from_pretrained(vae_dir());
  const zio::TensorMap ref = vae_io();
  const zm::DiagonalGaussianDistribution posterior = vae->encode(ref.at("sample"));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  const at::Tensor a = posterior.sample(gen);
  auto gen2 = at::make_generator<at::CPUGeneratorImpl>(1234);
  const at::Tensor b = posterior.sample(gen2);
  EXPECT_TRUE(torch::equal(a, b));
  // diffusers: randn_tensor(mean.shape, generator) then mean + std * noise.
  auto gen3 = at::make_generator<at::CPUGeneratorImpl>(1234);
  const at::Tensor noise = at::randn(posterior.mean().sizes(), gen3, posterior.mean().options());
  EXPECT_TRUE(torch::equal(a, posterior.sample(noise)));
  EXPECT_FALSE(torch::equal(a, posterior.mode()));
  // deterministic posterior: std = var = 0, sample = mean, kl = [0].
  const zm::DiagonalGaussianDistribution det(posterior.parameters(), /*deterministic=*/true);
  EXPECT_TRUE(torch::equal(det.sample(gen), det.mean()));
  EXPECT_TRUE(torch::equal(det.kl(), torch::zeros({1})));
  // KL against itself is zero.
  EXPECT_LT(posterior.kl(posterior).abs().max().item<double>(), 1e-3);
  EXPECT_THROW(posterior.sample(torch::zeros({1, 4, 8, 8})), zerodiff::Error);
}

TEST(VaeParity, ShiftFactorAndScalingAreInverse) {
  torch::NoGradGuard no_grad;
  auto options = zm::AutoencoderKLOptions::from_json(zio::read_config_json(vae_dir()));
  options.shift_factor(0.1159).scaling_factor(0.3611);
  zm::AutoencoderKL vae(options);
  const at::Tensor z = torch::randn({2, 4, 8, 8});
  EXPECT_TRUE(torch::allclose(vae->scale_latents(z), (z - 0.1159) * 0.3611));
  EXPECT_TRUE(torch::allclose(vae->unscale_latents(vae->scale_latents(z)), z, 1e-5, 1e-6));
}

TEST(VaeParity, SavedFolderLoadsInDiffusers) {
  zm::AutoencoderKL vae = zm::vae_from_pretrained(vae_dir());
  const fs::path tmp = fs::temp_directory_path() / ("zerodiff_vae_save_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  zm::save_pretrained(vae, tmp.string());
  {
    torch::NoGradGuard no_grad;
    zm::AutoencoderKL again = zm::vae_from_pretrained(tmp.string());
    const zio::TensorMap ref = vae_io();
    EXPECT_TRUE(torch::equal(again->forward(ref.at("sample")), vae->forward(ref.at("sample"))));
  }
  const int rc = zerodiff::testing::check_with_diffusers("vae", tmp.string(), parity_dir() + "/vae_tiny_io.safetensors");
  fs::remove_all(tmp);
  if (rc == -1) GTEST_SKIP() << "no .venv with diffusers; the diffusers load check did not run";
  EXPECT_EQ(rc, 0) << "diffusers could not load the folder zerodiff saved";
}

TEST(VaeParity, ConfigRoundTripsExactly) {
  const nlohmann::json config = zio::read_config_json(vae_dir());
  EXPECT_EQ(zm::AutoencoderKLOptions::from_json(config).to_json(), config);
  for (const char* dir : {"/configs/models/sd15/vae", "/configs/models/sd21/vae"}) {
    const nlohmann::json full = zio::read_config_json(std::string(ZERODIFF_SOURCE_DIR) + dir);
    EXPECT_EQ(zm::AutoencoderKLOptions::from_json(full).to_json(), full) << dir;
  }
}

TEST(VaeParity, ConfigErrorsNameTheKey) {
  auto c = zio::read_config_json(vae_dir());
  c["latent_channels"] = 4.5;
  try {
    zm::AutoencoderKLOptions::from_json(c);
    FAIL();
  } catch (const zerodiff::ConfigError& e) {
    EXPECT_STREQ(e.what(), "AutoencoderKL config: key 'latent_channels' expects an integer, got 4.5");
  }
  c = zio::read_config_json(vae_dir());
  c["down_block_types"] = {"DownEncoderBlock2D", "AttnDownEncoderBlock2D"};
  try {
    zm::AutoencoderKLOptions::from_json(c);
    FAIL();
  } catch (const zerodiff::NotImplementedError& e) {
    EXPECT_STREQ(e.what(),
                 "AutoencoderKL config: key 'down_block_types' entry \"AttnDownEncoderBlock2D\" is not supported by "
                 "zerodiff (supported: \"DownEncoderBlock2D\")");
  }
  c = zio::read_config_json(vae_dir());
  c["norm_type"] = "spatial";
  EXPECT_THROW(zm::AutoencoderKLOptions::from_json(c), zerodiff::NotImplementedError);
}

TEST(VaeParity, UnitsCoverEveryParameterOnce) {
  zm::AutoencoderKL vae = zm::vae_from_pretrained(vae_dir());
  std::set<std::string> seen;
  for (const auto& unit : vae->units()) {
    for (const auto& p : unit.module->named_parameters()) {
      const std::string full = unit.prefix.empty() ? p.key() : unit.prefix + "." + p.key();
      EXPECT_TRUE(seen.insert(full).second) << full << " in two units";
      EXPECT_TRUE(p.value().is_same(vae->named_parameters()[full])) << full;
    }
  }
  EXPECT_EQ(seen.size(), vae->named_parameters().size());
}

}  // namespace
