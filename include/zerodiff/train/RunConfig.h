// zerodiff/train/RunConfig.h — a whole training run as zerodiff-train reads it from YAML:
//
//   task: text_to_image        # text_to_image | autoencoder
//   log_level: info
//   trainer: {...}             # TrainerConfig (train/Trainer.h)
//   data: {...}                # DataConfig (data/DataConfig.h)
//   text_to_image: {...}       # TextToImageConfig (train/Modules.h), for task text_to_image
//   autoencoder: {...}         # AutoencoderConfig, for task autoencoder
//
// Every key is documented by the `visit` functions (docs/configuration.md lists them).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "zerodiff/data/DataConfig.h"
#include "zerodiff/train/Modules.h"
#include "zerodiff/train/Trainer.h"

namespace zerodiff::train {

struct RunConfig {
  std::string task = "text_to_image";
  std::string log_level = "info";
  TrainerConfig trainer;
  data::DataConfig data;
  TextToImageConfig text_to_image;
  AutoencoderConfig autoencoder;

  template <class V>
  void visit(V& v) {
    v.choice("task", task, {"text_to_image", "autoencoder"}, "What to train");
    v.choice("log_level", log_level, {"trace", "debug", "info", "warn", "error", "off"},
             "Log level (ZERODIFF_LOG_LEVEL overrides)");
    v.required("trainer", trainer, "Training loop settings");
    v.required("data", data, "Dataset and loader");
    v("text_to_image", text_to_image, "Latent diffusion model (task text_to_image)");
    v("autoencoder", autoencoder, "VAE (task autoencoder)");
  }
};

/// Loads and validates a run config (ConfigError naming file, line, key on any problem) with overrides.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});

/// The TrainingModule for config.task. Throws ConfigError naming a missing key of the task's section.
std::unique_ptr<TrainingModule> make_module(const RunConfig& config);

}  // namespace zerodiff::train
