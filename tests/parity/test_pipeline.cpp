// Txt2ImgPipeline parity: on the tiny Stable Diffusion folder tests/data/pipeline/tiny_sd, zerodiff's images equal
// diffusers' StableDiffusionPipeline output (tests/data/pipeline/cases.safetensors) within 1e-3, from the stored
// initial latents and from the seed alone; the folder zerodiff saves is what diffusers writes and loads (the
// round trip runs tools/fixtures/check_pipeline_load.py with the project's .venv, skipped without one).
// Fixtures: tools/fixtures/make_pipeline_fixtures.py.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ParityUtil.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/data/ImageDecoder.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/models/Txt2ImgPipeline.h"

namespace fs = std::filesystem;
namespace zm = zerodiff::models;
namespace zio = zerodiff::io;
using zerodiff::testing::parity_close;

using zerodiff::testing::read_json;
using zerodiff::testing::TempDir;

namespace {

constexpr double kImageTol = 1e-3;  // issue 4: pixels in [0, 1]

fs::path pipeline_data() { return fs::path(ZERODIFF_TEST_DATA_DIR) / "pipeline"; }
std::string model_dir() { return (pipeline_data() / "tiny_sd").string(); }

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const nlohmann::json& pipeline_manifest() {
  static const nlohmann::json m = read_json(pipeline_data() / "cases.json");
  return m;
}
const zio::TensorMap& cases() {
  static const zio::TensorMap t = zio::load_safetensors((pipeline_data() / "cases.safetensors").string());
  return t;
}
/// The tiny models gain nothing from threads, and OpenMP's spinning workers make them crawl on a loaded machine.
void single_thread() { at::set_num_threads(1); }

const zm::Txt2ImgPipeline& pipeline() {
  single_thread();
  static const zm::Txt2ImgPipeline p = zm::Txt2ImgPipeline::from_pretrained(model_dir());
  return p;
}

std::vector<std::string> strings(const nlohmann::json& j) { return j.get<std::vector<std::string>>(); }

/// GenerateOptions of one case of cases.json (without latents: the seed draws them).
zm::GenerateOptions options_for(const nlohmann::json& c) {
  zm::GenerateOptions o;
  o.prompts = strings(pipeline_manifest()["prompts"]);
  if (c["negative"].get<bool>()) o.negative_prompts = strings(pipeline_manifest()["negative_prompts"]);
  o.num_inference_steps = c["steps"].get<int64_t>();
  o.guidance_scale = c["guidance"].get<double>();
  o.scheduler = c["scheduler"].get<std::string>();
  o.seed = c["seed"].get<int64_t>();
  o.num_images_per_prompt = c["num_images_per_prompt"].get<int64_t>();
  if (!c["clip_skip"].is_null()) o.clip_skip = c["clip_skip"].get<int64_t>();
  return o;
}

/// Runs tools/fixtures/check_pipeline_load.py with the project's .venv; -1 when there is none with diffusers.
int check_with_diffusers(const std::string& args) {
  const fs::path root(ZERODIFF_SOURCE_DIR);
  const fs::path python = root / ".venv" / "bin" / "python";
  if (!fs::exists(python)) return -1;
  const std::string probe = python.string() + " -c 'import diffusers, transformers, PIL' >/dev/null 2>&1";
  if (std::system(probe.c_str()) != 0) return -1;
  const std::string cmd =
      "TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONWARNINGS=ignore " +
      python.string() + " " + (root / "tools" / "fixtures" / "check_pipeline_load.py").string() + " " + args;
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

std::string quote(const std::string& s) { return "'" + s + "'"; }

class PipelineParity : public ::testing::TestWithParam<std::string> {
 protected:
  const nlohmann::json& spec() const {
    for (const auto& c : pipeline_manifest()["cases"]) {
      if (c["name"] == GetParam()) return c;
    }
    throw std::runtime_error("no case " + GetParam());
  }
};

}  // namespace

TEST(PipelineParity, FixtureCoversTheBar) {
  // DDIM and Euler, guidance 7.5, a negative prompt, 2 prompts (issue 4's "Whole pipeline" bullet).
  int bar = 0;
  for (const auto& c : pipeline_manifest()["cases"]) {
    if ((c["scheduler"] == "DDIMScheduler" || c["scheduler"] == "EulerDiscreteScheduler") &&
        c["guidance"].get<double>() == 7.5 && c["negative"].get<bool>())
      ++bar;
  }
  EXPECT_EQ(bar, 2);
  EXPECT_EQ(pipeline_manifest()["prompts"].size(), 2u);
}

TEST(PipelineParity, PromptEmbeddingsMatchDiffusers) {
  const auto& p = pipeline();
  const auto prompts = strings(pipeline_manifest()["prompts"]);
  EXPECT_TRUE(parity_close("prompt_embeds", p.encode_prompt(prompts), cases().at("prompt_embeds")));
  EXPECT_TRUE(parity_close("negative_prompt_embeds", p.encode_prompt(strings(pipeline_manifest()["negative_prompts"])),
                           cases().at("negative_prompt_embeds")));
  EXPECT_TRUE(parity_close("prompt_embeds.clip_skip_1", p.encode_prompt(prompts, 1),
                           cases().at("prompt_embeds.clip_skip_1")));
}

TEST_P(PipelineParity, ImagesMatchDiffusersFromTheSeed) {
  const at::Tensor got = pipeline().generate(options_for(spec()));
  const at::Tensor& ref = cases().at(GetParam() + ".images");
  EXPECT_GE(got.min().item<double>(), 0.0);
  EXPECT_LE(got.max().item<double>(), 1.0);
  EXPECT_TRUE(parity_close(GetParam() + ".images (seed " + std::to_string(spec()["seed"].get<int64_t>()) + ")", got,
                           ref, kImageTol));
}

TEST_P(PipelineParity, ImagesMatchDiffusersFromTheStoredLatents) {
  if (spec()["scheduler"] == "DDPMScheduler") GTEST_SKIP() << "DDPM's step noise needs the seed path";
  zm::GenerateOptions o = options_for(spec());
  o.latents = cases().at(GetParam() + ".latents");
  o.seed = 12345;  // must not matter for deterministic samplers
  EXPECT_TRUE(parity_close(GetParam() + ".images (stored latents)", pipeline().generate(o),
                           cases().at(GetParam() + ".images"), kImageTol));
}

INSTANTIATE_TEST_SUITE_P(Cases, PipelineParity,
                         ::testing::Values("ddim", "euler", "ddpm_seeded", "ddim_clip_skip_1_x2", "euler_no_cfg"));

TEST(PipelineRoundTrip, SavedFolderMatchesDiffusersLayoutAndReloads) {
  torch::NoGradGuard no_grad;
  TempDir tmp("pipe_save");
  const fs::path out = tmp.path / "sd";
  pipeline().save_pretrained(out.string());
  for (const char* f : {"model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                        "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                        "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                        "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt"}) {
    EXPECT_TRUE(fs::is_regular_file(out / f)) << f;
  }
  // model_index.json byte for byte as diffusers' save_pretrained wrote the fixture's.
  EXPECT_EQ(read_text(out / "model_index.json"), read_text(fs::path(model_dir()) / "model_index.json"));
  const zm::SchedulerConfig a = zm::SchedulerConfig::from_json(read_json(out / "scheduler/scheduler_config.json"));
  EXPECT_EQ(a.to_json(), pipeline().scheduler_config().to_json());
  EXPECT_EQ(read_json(out / "scheduler/scheduler_config.json")["_diffusers_version"], "0.42.1");

  // zerodiff reloads its own folder and samples identically.
  const zm::Txt2ImgPipeline again = zm::Txt2ImgPipeline::from_pretrained(out.string());
  zio::TensorMap images;
  for (const std::string name : {"ddim", "euler"}) {
    nlohmann::json spec;
    for (const auto& c : pipeline_manifest()["cases"])
      if (c["name"] == name) spec = c;
    const at::Tensor x = again.generate(options_for(spec));
    EXPECT_TRUE(torch::equal(x, pipeline().generate(options_for(spec)))) << name;
    images[name + ".images"] = x;
  }
  // diffusers loads the saved folder strictly and reproduces zerodiff's images.
  const fs::path images_file = tmp.path / "zerodiff_images.safetensors";
  zio::save_safetensors(images_file.string(), images);
  const int rc = check_with_diffusers(quote(out.string()) + " --images " + quote(images_file.string()));
  if (rc == -1) GTEST_SKIP() << "no .venv with diffusers; the diffusers round trip did not run";
  EXPECT_EQ(rc, 0) << "diffusers did not reproduce zerodiff's images from the folder zerodiff saved";
}

TEST(PipelineRoundTrip, SharesTheModulesItIsGivenAndKeepsTheirMode) {
  single_thread();
  zm::Txt2ImgPipeline p = zm::Txt2ImgPipeline::from_pretrained(model_dir());
  zm::UNet2DConditionModel unet = p.unet();
  zm::AutoencoderKL vae = p.vae();
  zm::CLIPTextModel te = p.text_encoder();
  // What the Trainer does: a pipeline over the modules being trained (no copies).
  const zm::Txt2ImgPipeline view(unet, vae, te, p.tokenizer(), p.scheduler_config());
  zm::Txt2ImgPipeline& v = const_cast<zm::Txt2ImgPipeline&>(view);
  EXPECT_EQ(v.unet().get(), unet.get());
  EXPECT_EQ(v.vae().get(), vae.get());
  EXPECT_EQ(v.text_encoder().get(), te.get());
  unet->train();
  te->eval();
  zm::GenerateOptions o;
  o.prompts = {"a cat"};
  o.num_inference_steps = 2;
  const at::Tensor x = view.generate(o);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{1, 3, 16, 16}));
  EXPECT_TRUE(unet->is_training());
  EXPECT_FALSE(te->is_training());
  for (const auto& param : unet->parameters()) EXPECT_FALSE(param.grad().defined());
}

TEST(PipelineErrors, MissingFolderIsNamed) {
  try {
    zm::Txt2ImgPipeline::from_pretrained("/nonexistent/zerodiff/sd");
    FAIL() << "no exception";
  } catch (const zerodiff::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/zerodiff/sd: no such model folder"), std::string::npos)
        << e.what();
  }
}

TEST(PipelineErrors, IncompleteFolderNamesWhatIsMissing) {
  TempDir tmp("pipe_incomplete");
  const fs::path src(model_dir());
  for (const char* name : {"unet", "text_encoder", "tokenizer"}) fs::create_directory_symlink(fs::canonical(src / name), tmp.path / name);
  fs::create_directories(tmp.path / "scheduler");
  try {
    zm::Txt2ImgPipeline::from_pretrained(tmp.path.string());
    FAIL() << "no exception";
  } catch (const zerodiff::IoError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("incomplete diffusers Stable Diffusion folder: missing [model_index.json, vae/, "
                       "scheduler/scheduler_config.json]"),
              std::string::npos)
        << msg;
  }
  // model_index.json present but a component null.
  fs::copy_file(src / "model_index.json", tmp.path / "model_index.json");
  fs::copy_file(src / "scheduler" / "scheduler_config.json", tmp.path / "scheduler" / "scheduler_config.json");
  fs::create_directory_symlink(fs::canonical(src / "vae"), tmp.path / "vae");
  nlohmann::json index = read_json(tmp.path / "model_index.json");
  index["vae"] = {nullptr, nullptr};
  std::ofstream(tmp.path / "model_index.json") << index.dump(2);
  try {
    zm::Txt2ImgPipeline::from_pretrained(tmp.path.string());
    FAIL() << "no exception";
  } catch (const zerodiff::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("component 'vae' is missing or null"), std::string::npos) << e.what();
  }
  // A component folder without its weights: the component loader names the file.
  fs::remove(tmp.path / "model_index.json");
  fs::copy_file(src / "model_index.json", tmp.path / "model_index.json");
  fs::remove(tmp.path / "vae");
  fs::create_directories(tmp.path / "vae");
  fs::copy_file(src / "vae" / "config.json", tmp.path / "vae" / "config.json");
  try {
    zm::Txt2ImgPipeline::from_pretrained(tmp.path.string());
    FAIL() << "no exception";
  } catch (const zerodiff::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("vae"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("diffusion_pytorch_model"), std::string::npos) << e.what();
  }
}

TEST(PipelineErrors, BadOptionsThrow) {
  zm::GenerateOptions o;
  o.prompts = {"a", "b"};
  o.num_inference_steps = 2;
  o.negative_prompts = {"x"};
  EXPECT_THROW(pipeline().generate(o), zerodiff::Error);
  o.negative_prompts.clear();
  o.height = 12;
  EXPECT_THROW(pipeline().generate(o), zerodiff::Error);
  o.height = 0;
  o.scheduler = "pndm";
  EXPECT_THROW(pipeline().generate(o), zerodiff::Error);
  o.scheduler = "euler";
  o.latents = torch::zeros({1, 4, 8, 8});
  EXPECT_THROW(pipeline().generate(o), zerodiff::Error);
  o.prompts.clear();
  EXPECT_THROW(pipeline().generate(o), zerodiff::Error);
}

TEST(PipelineImages, GridAndPng) {
  const at::Tensor images = torch::rand({3, 3, 4, 5});
  const at::Tensor grid = zm::make_image_grid(images);  // 2 columns, 2 rows
  ASSERT_EQ(grid.sizes(), (std::vector<int64_t>{3, 8, 10}));
  EXPECT_TRUE(torch::equal(grid.slice(1, 4, 8).slice(2, 0, 5), images[2]));
  EXPECT_EQ(grid.slice(1, 4, 8).slice(2, 5, 10).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(zm::make_image_grid(images, 3).sizes(), (std::vector<int64_t>{3, 4, 15}));

  TempDir tmp("pipe_png");
  const std::string path = (tmp.path / "sub" / "x.png").string();
  zm::write_png(images[1], path);
  const at::Tensor back = zerodiff::data::ImageDecoder().decode_file(path);  // uint8 [3, H, W]
  const at::Tensor expect = (images[1] * 255).round().to(torch::kByte);
  EXPECT_TRUE(torch::equal(back, expect));
  for (const auto& entry : fs::directory_iterator(tmp.path / "sub")) {
    EXPECT_EQ(entry.path().filename(), "x.png") << "temporary file left behind";
  }
  EXPECT_THROW(zm::write_png(torch::rand({2, 4, 4}), path), zerodiff::Error);
  EXPECT_THROW(zm::write_png(images[0], "/proc/zerodiff/x.png"), zerodiff::IoError);
}
