// Modes are enums with one name table each (core/Enum.h): the config reader, its errors, the generated reference and
// the binaries' flags all take their names from it, and lower layers get the enum.
#include <gtest/gtest.h>

#include "zerodiff/core/Config.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/models/Txt2ImgPipeline.h"
#include "zerodiff/train/RunConfig.h"

namespace {

namespace zt = zerodiff::train;
namespace zp = zerodiff::parallel;

const char* kRun = "trainer: {output_dir: out, max_steps: 1}\ndata: {dataset: synthetic}\n";

std::string error_of(const std::vector<std::string>& overrides) {
  try {
    zerodiff::config::load_string<zt::RunConfig>(kRun, "run.yaml", overrides);
  } catch (const zerodiff::ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(Modes, ConfigReadsEnumsByTheirNameTable) {
  const auto c = zerodiff::config::load_string<zt::RunConfig>(
      kRun, "run.yaml",
      {"trainer.strategy=gemini", "trainer.precision=bf16-mixed", "trainer.gemini.placement_policy=static",
       "trainer.optimizer.implementation=torch", "trainer.accelerator=cpu", "attention=math", "log_level=debug",
       "task=autoencoder", "text_to_image.prediction_type=v_prediction", "trainer.lr_schedule.type=cosine"});
  EXPECT_EQ(c.trainer.strategy, zp::StrategyKind::gemini);
  EXPECT_EQ(c.trainer.precision, zt::Precision::bf16_mixed);
  EXPECT_EQ(c.trainer.gemini.placement_policy, zerodiff::memory::PlacementPolicyKind::fixed_fractions);
  EXPECT_EQ(c.trainer.optimizer.implementation, zt::AdamImplementation::torch);
  EXPECT_EQ(c.trainer.accelerator, zt::Accelerator::cpu);
  EXPECT_EQ(c.attention, zerodiff::nn::AttentionBackend::math);
  EXPECT_EQ(c.log_level, zerodiff::log::Level::debug);
  EXPECT_EQ(c.task, zt::Task::autoencoder);
  EXPECT_EQ(c.text_to_image.prediction_type, zerodiff::models::PredictionType::v_prediction);
  EXPECT_EQ(c.trainer.lr_schedule.type, zerodiff::optim::LRScheduleType::cosine);
  EXPECT_EQ(c.data.dataset, zerodiff::data::DatasetKind::synthetic);
  // Defaults, and an empty prediction type meaning the scheduler's.
  const auto d = zerodiff::config::load_string<zt::RunConfig>(kRun, "run.yaml", {"text_to_image.prediction_type=''"});
  EXPECT_EQ(d.trainer.strategy, zp::StrategyKind::single);
  EXPECT_EQ(d.trainer.precision, zt::Precision::fp32);
  EXPECT_FALSE(d.text_to_image.prediction_type.has_value());
}

TEST(Modes, AnUnknownNameListsTheTableAndSuggests) {
  EXPECT_EQ(error_of({"trainer.strategy=zero4"}).rfind(
                "override 'trainer.strategy=zero4': key 'trainer.strategy' must be one of single, ddp, zero1, zero2, "
                "zero3, gemini; got 'zero4' (did you mean",
                0),
            0u)
      << error_of({"trainer.strategy=zero4"});
  // attention takes the run policies only: zerodiff is a backend name, not a run's policy.
  EXPECT_NE(error_of({"attention=zerodiff"}).find("key 'attention' must be one of auto, sdpa, math; got 'zerodiff'"),
            std::string::npos);
  EXPECT_NE(error_of({"text_to_image.prediction_type=noise"})
                .find("key 'text_to_image.prediction_type' must be one of epsilon, v_prediction; got 'noise'"),
            std::string::npos);
  // sample is a scheduler's prediction type, not one a run trains.
  EXPECT_NE(error_of({"text_to_image.prediction_type=sample"}).find("must be one of epsilon, v_prediction; got 'sample'"),
            std::string::npos);
}

TEST(Modes, TheReferenceListsTheSameNames) {
  std::map<std::string, zerodiff::config::KeyDoc> keys;
  for (const auto& k : zerodiff::config::document<zt::RunConfig>()) keys[k.path] = k;
  EXPECT_EQ(keys.at("trainer.strategy").type, "one of single | ddp | zero1 | zero2 | zero3 | gemini");
  EXPECT_EQ(keys.at("trainer.strategy").default_value, "single");
  EXPECT_EQ(keys.at("trainer.precision").type, "one of 32-true | 16-mixed | bf16-mixed | bf16-true");
  EXPECT_EQ(keys.at("trainer.gemini.placement_policy").type, "one of auto | static");
  EXPECT_EQ(keys.at("attention").type, "one of auto | sdpa | math");
  EXPECT_EQ(keys.at("log_level").type, "one of trace | debug | info | warn | error | off");  // no alias
  EXPECT_EQ(keys.at("text_to_image.prediction_type").type, "one of epsilon | v_prediction or null");
  EXPECT_EQ(keys.at("text_to_image.sample_scheduler").type,
            "one of DDIMScheduler | EulerDiscreteScheduler | DDPMScheduler");
  EXPECT_EQ(keys.at("text_to_image.prediction_type").default_value, "null");
}

TEST(Modes, NamesParseAndPrintThroughTheTable) {
  EXPECT_EQ(zerodiff::name_of(zt::Precision::bf16_true), "bf16-true");
  EXPECT_EQ(zerodiff::str("strategy ", zp::StrategyKind::zero3), "strategy zero3");  // str prints names
  EXPECT_EQ(zerodiff::parse_enum<zt::Accelerator>("cuda", "--device"), zt::Accelerator::cuda);
  try {
    zerodiff::parse_enum<zt::Accelerator>("tpu", "--device");
    FAIL() << "no ConfigError";
  } catch (const zerodiff::ConfigError& e) {
    EXPECT_STREQ(e.what(), "--device must be one of auto, cpu, cuda; got 'tpu'");
  }
  // An alias parses but is never listed.
  EXPECT_EQ(zerodiff::log::parse_level("WARNING"), zerodiff::log::Level::warn);
  EXPECT_EQ(zerodiff::enum_list<zerodiff::log::Level>(), "trace, debug, info, warn, error, off");
  EXPECT_EQ(zerodiff::name_of(static_cast<zt::Precision>(17)), "<invalid>");
}

}  // namespace

namespace {

TEST(Modes, SchedulerConfigsCheckTheModesTheirClassUses) {
  namespace zm = zerodiff::models;
  // Another class's field with a value only that class knows is no error (diffusers' configs carry them).
  const auto ddim = zm::SchedulerConfig::from_json({{"_class_name", "DDIMScheduler"}, {"variance_type", "learned_range"},
                                                    {"final_sigmas_type", "other"}});
  EXPECT_EQ(ddim.class_name, zm::SchedulerKind::ddim);
  EXPECT_EQ(ddim.variance_type, zm::VarianceType::fixed_small);
  EXPECT_THROW(zm::SchedulerConfig::from_json({{"_class_name", "DDPMScheduler"}, {"variance_type", "learned_range"}}),
               zerodiff::NotImplementedError);
  EXPECT_THROW(zm::SchedulerConfig::from_json({{"_class_name", "EulerDiscreteScheduler"}, {"final_sigmas_type", "other"}}),
               zerodiff::ConfigError);
  // trained_betas make beta_schedule unused.
  const auto trained = zm::SchedulerConfig::from_json(
      {{"num_train_timesteps", 2}, {"trained_betas", {0.1, 0.2}}, {"beta_schedule", "custom"}});
  EXPECT_EQ(trained.trained_betas.size(), 2u);
  // _class_name takes diffusers' class names; ddim / euler / ddpm are zerodiff-sample's flag spellings only.
  EXPECT_THROW(zm::SchedulerConfig::from_json({{"_class_name", "ddim"}}), zerodiff::NotImplementedError);
  EXPECT_EQ(zm::scheduler_kind("Euler"), zm::SchedulerKind::euler_discrete);
  // to_json writes the names.
  EXPECT_EQ(ddim.to_json()["_class_name"], "DDIMScheduler");
  EXPECT_EQ(ddim.to_json()["timestep_spacing"], "leading");
}

}  // namespace
