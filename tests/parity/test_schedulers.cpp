// Scheduler parity with diffusers 0.42: betas, alphas_cumprod, timesteps, sigmas and step outputs for
// every case of tests/data/parity/schedulers/manifest.json (written by tools/fixtures/make_parity_fixtures.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/models/schedulers/Schedulers.h"

namespace zm = zerodiff::models;
namespace zio = zerodiff::io;

namespace {

const std::string kDir = std::string(ZERODIFF_TEST_DATA_DIR) + "/parity/schedulers/";

nlohmann::json scheduler_manifest() {
  std::ifstream in(kDir + "manifest.json");
  return nlohmann::json::parse(in);
}

// max |a - b| <= tol * max(1, max |b|)
void expect_close(const torch::Tensor& got, const torch::Tensor& ref, double tol, const std::string& what) {
  ASSERT_EQ(got.sizes(), ref.sizes()) << what;
  const double scale = std::max(1.0, ref.abs().max().item<double>());
  const double err = (got.to(torch::kDouble) - ref.to(torch::kDouble)).abs().max().item<double>();
  EXPECT_LE(err, tol * scale) << what << ": max abs error " << err << " (scale " << scale << ")";
}

class SchedulerParity : public testing::TestWithParam<int> {};

}  // namespace

TEST_P(SchedulerParity, MatchesDiffusers) {
  const nlohmann::json c = scheduler_manifest()[GetParam()];
  SCOPED_TRACE(c["name"].get<std::string>());
  nlohmann::json cfg = c["config"];
  cfg["_class_name"] = c["class"];
  const auto config = zm::SchedulerConfig::from_json(cfg);
  auto sched = zm::NoiseScheduler::create(config);
  const auto ref = zio::load_safetensors(kDir + c["file"].get<std::string>());
  const bool euler = c["class"] == "EulerDiscreteScheduler";
  const bool steps_set = !c["num_inference_steps"].is_null();
  if (steps_set) sched->set_timesteps(c["num_inference_steps"].get<int64_t>());

  expect_close(sched->betas(), ref.at("betas"), 1e-6, "betas");
  expect_close(sched->alphas_cumprod(), ref.at("alphas_cumprod"), 1e-6, "alphas_cumprod");
  if (euler) {
    EXPECT_EQ(sched->timesteps().scalar_type(), torch::kFloat);
    expect_close(sched->timesteps(), ref.at("timesteps"), 1e-6, "timesteps");
    auto* e = dynamic_cast<zm::EulerDiscreteScheduler*>(sched.get());
    expect_close(e->sigmas(), ref.at("sigmas"), 1e-6, "sigmas");
    EXPECT_NEAR(sched->init_noise_sigma(), ref.at("init_noise_sigma").item<double>(),
                1e-6 * ref.at("init_noise_sigma").item<double>());
  } else {
    EXPECT_TRUE(torch::equal(sched->timesteps(), ref.at("timesteps"))) << sched->timesteps().slice(0, 0, 8);
  }

  const auto sample = ref.at("sample"), model_output = ref.at("model_output");
  if (ref.count("add_noise.out")) {
    expect_close(sched->add_noise(sample, ref.at("add_noise.noise"), ref.at("add_noise.timesteps")),
                 ref.at("add_noise.out"), 1e-6, "add_noise");
    expect_close(sched->get_velocity(sample, ref.at("add_noise.noise"), ref.at("add_noise.timesteps")),
                 ref.at("velocity.out"), 1e-6, "get_velocity");
  }
  ASSERT_FALSE(c["step_indices"].empty());
  for (const auto& idx : c["step_indices"]) {
    const std::string p = "step." + std::to_string(idx.get<int64_t>()) + ".";
    const double t = ref.at(p + "timestep").item<double>();
    zm::SchedulerStepOptions opt;
    if (c["step_kwargs"].contains("eta")) opt.eta = c["step_kwargs"]["eta"].get<double>();
    if (ref.count(p + "variance_noise")) opt.variance_noise = ref.at(p + "variance_noise");
    if (euler) {
      auto* e = dynamic_cast<zm::EulerDiscreteScheduler*>(sched.get());
      e->set_timesteps(c["num_inference_steps"].get<int64_t>());
      e->set_begin_index(idx.get<int64_t>());
      expect_close(e->scale_model_input(sample, t), ref.at(p + "scaled_model_input"), 1e-6, p + "scaled_model_input");
    }
    const auto out = sched->step(model_output, t, sample, opt);
    expect_close(out.prev_sample, ref.at(p + "prev_sample"), 1e-6, p + "prev_sample");
    expect_close(out.pred_original_sample, ref.at(p + "pred_original_sample"), 1e-6, p + "pred_original_sample");
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, SchedulerParity, testing::Range(0, static_cast<int>(scheduler_manifest().size())),
                         [](const testing::TestParamInfo<int>& info) {
                           return scheduler_manifest()[info.param]["name"].get<std::string>();
                         });

TEST(Schedulers, BadConfigsFailClearly) {
  auto expect_msg = [](nlohmann::json j, const std::string& msg) {
    try {
      zm::NoiseScheduler::create(zm::SchedulerConfig::from_json(j));
      ADD_FAILURE() << "no error for " << j.dump();
    } catch (const zerodiff::Error& e) {
      EXPECT_EQ(std::string(e.what()), msg);
    }
  };
  expect_msg({{"_class_name", "DDIMScheduler"}, {"beta_schedule", "cosine"}},
             "scheduler config: beta_schedule 'cosine' is not one of linear, scaled_linear, squaredcos_cap_v2");
  expect_msg({{"_class_name", "PNDMScheduler"}},
             "scheduler 'PNDMScheduler' is not supported (DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler)");
  expect_msg({{"_class_name", "DDPMScheduler"}, {"thresholding", true}},
             "scheduler config: thresholding=true (dynamic thresholding) is not supported");
  expect_msg({{"_class_name", "EulerDiscreteScheduler"}, {"use_karras_sigmas", true}},
             "EulerDiscreteScheduler: use_karras_sigmas=true is not supported");
  expect_msg({{"_class_name", "DDIMScheduler"}, {"num_train_timesteps", "many"}},
             "scheduler config: key 'num_train_timesteps' has the wrong type (\"many\")");
  expect_msg({{"_class_name", "DDIMScheduler"}, {"prediction_type", "noise"}},
             "scheduler config: prediction_type 'noise' is not one of epsilon, v_prediction, sample");
  auto ddim = zm::NoiseScheduler::create(zm::SchedulerConfig::defaults_for("DDIMScheduler"));
  EXPECT_THROW(ddim->set_timesteps(0), zerodiff::Error);
  EXPECT_THROW(ddim->set_timesteps(1001), zerodiff::Error);
  EXPECT_THROW(ddim->step(torch::zeros({1}), 10, torch::zeros({1})), zerodiff::Error);
}
