#include "zerodiff/train/RunConfig.h"

#include "zerodiff/core/Config.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/data/SubsetDataset.h"

namespace zerodiff::train {

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  return config::load_file<RunConfig>(path, overrides);
}

std::unique_ptr<TrainingModule> make_module(const RunConfig& config) {
  if (config.task == "autoencoder") return std::make_unique<AutoencoderModule>(config.autoencoder);
  return std::make_unique<TextToImageModule>(config.text_to_image);
}

RunData make_run_data(const RunConfig& config, int rank, int world_size) {
  RunData out;
  const auto split = data::split_dataset(data::make_dataset(config.data), config.data.validation_split,
                                         static_cast<uint64_t>(config.data.seed));
  out.train = split.train;
  out.validation = split.validation;
  out.train_loader =
      std::make_unique<data::DataLoader>(out.train, data::make_loader_options(config.data, rank, world_size));
  if (out.validation) {
    out.validation_loader = std::make_unique<data::DataLoader>(
        out.validation, data::make_validation_loader_options(config.data, rank, world_size));
  }
  return out;
}

std::string RunData::summary() const {
  return zerodiff::str(train->size(), " training samples (", train_loader->batches_per_epoch(), " batches per epoch)",
                       validation ? zerodiff::str(", ", validation->size(), " validation samples") : std::string());
}

FitResult run(const RunConfig& config, const std::string& resume) {
  auto module = make_module(config);
  Trainer trainer(config.trainer);
  RunData data = make_run_data(config);
  ZD_LOG_INFO("task ", config.task, ": ", data.summary(), ", device ", trainer.device().str());
  return trainer.fit(*module, *data.train_loader, data.validation_loader.get(), resume);
}

}  // namespace zerodiff::train
