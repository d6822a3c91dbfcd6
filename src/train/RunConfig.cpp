#include "zerodiff/train/RunConfig.h"

#include "zerodiff/core/Config.h"

namespace zerodiff::train {

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  return config::load_file<RunConfig>(path, overrides);
}

std::unique_ptr<TrainingModule> make_module(const RunConfig& config) {
  if (config.task == "autoencoder") return std::make_unique<AutoencoderModule>(config.autoencoder);
  return std::make_unique<TextToImageModule>(config.text_to_image);
}

}  // namespace zerodiff::train
