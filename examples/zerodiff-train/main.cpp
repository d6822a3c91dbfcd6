// zerodiff-train: train or fine-tune a latent diffusion model (or its VAE) from a YAML config.
//
//   zerodiff-train CONFIG.yaml [key.path=value ...] [--resume latest|PATH] [--dry-run]
//   zerodiff-train --version
//
// The config is read and validated completely before any work: an unknown key, a wrong type or a missing
// file stops the run with a message naming it, and nothing is written.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <iostream>

#include "zerodiff/core/BuildInfo.h"
#include "zerodiff/core/Config.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/FaultInjection.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/data/DataConfig.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/train/RunConfig.h"

int main(int argc, char** argv) {
  CLI::App app{"zerodiff-train: train or fine-tune a latent diffusion model from a YAML config"};
  std::string config_path, resume;
  std::vector<std::string> overrides;
  bool show_version = false, dry_run = false, reference = false;
  app.add_flag("--version", show_version, "Print the build info line and exit");
  app.add_option("--resume", resume, "Resume from 'latest' (newest checkpoint in trainer.output_dir) or a checkpoint folder");
  app.add_flag("--dry-run", dry_run, "Validate the config, build the model and the data loader, print sizes, and exit");
  int world_size = 0;
  app.add_option("--world-size", world_size, "With --dry-run: estimate memory per rank for this many processes")
      ->check(CLI::PositiveNumber);
  app.add_flag("--print-config-reference", reference, "Print every config key (Markdown table) and exit");
  app.add_option("config", config_path, "Training config (YAML)");
  app.add_option("overrides", overrides, "Config overrides key.path=value (value parsed as YAML)");
  CLI11_PARSE(app, argc, argv);
  if (show_version) {
    std::cout << zerodiff::build_info() << std::endl;
    return 0;
  }
  if (reference) {
    std::cout << zerodiff::config::markdown_table(zerodiff::config::document<zerodiff::train::RunConfig>());
    return 0;
  }
  if (config_path.empty()) {
    std::cerr << app.help() << std::endl;
    return 2;
  }
  if (world_size > 0 && !dry_run) {
    std::cerr << "zerodiff-train: error: --world-size only applies to --dry-run (a run's processes come from "
                 "torchrun or SLURM)" << std::endl;
    return 2;
  }
  // Under torchrun every rank may fail: its error line names it, written in one piece.
  std::string rank_tag;
  auto fail = [&](const std::string& message) {
    const std::string line = "zerodiff-train: error" + rank_tag + ": " + message + "\n";
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
    return 1;
  };
  try {
    zerodiff::check_fault_injection();  // a malformed ZERODIFF_FAULT fails now, not at the first checkpoint
    const auto config = zerodiff::train::load_run_config(config_path, overrides);
    // torchrun / SLURM: every process logs as its rank (only rank 0 below warn).
    const auto launch = zerodiff::dist::LaunchEnv::from_environment();
    if (launch.world_size > 1) rank_tag = " (rank " + std::to_string(launch.rank) + ")";
    zerodiff::log::init({.level = zerodiff::log::parse_level(config.log_level), .rank = launch.rank});
    ZD_LOG_INFO(zerodiff::build_info());
    auto module = zerodiff::train::make_module(config);
    auto trainer_config = config.trainer;
    if (dry_run && trainer_config.accelerator == "cuda" && !torch::cuda::is_available()) {
      std::cout << "dry run: trainer.accelerator is cuda but this machine has no CUDA device; estimating anyway"
                << std::endl;
      trainer_config.accelerator = "cpu";
    }
    zerodiff::train::Trainer trainer(trainer_config);
    auto data = zerodiff::train::make_run_data(config, trainer.rank(), trainer.world_size());
    ZD_LOG_INFO("task ", config.task, ": ", data.summary(), ", device ", trainer.device().str());
    if (dry_run) {
      // Architectures from their configs with random weights on the CPU: no weights file is read.
      module->configure_model_for_dry_run(torch::kCPU);
      if (world_size > 1 && config.trainer.strategy == "single") {
        throw zerodiff::ConfigError(zerodiff::str("--world-size ", world_size,
                                                  " with trainer.strategy single: single runs in one process; choose "
                                                  "ddp, zero1, zero2 or zero3 to estimate a multi-process run"));
      }
      const auto estimate = zerodiff::train::estimate_memory(*module, config.trainer, world_size > 0 ? world_size : trainer.world_size());
      std::cout << "dry run: config OK (" << config_path << ")\n"
                << estimate.report(config.trainer) << "data: " << data.summary() << std::endl;
      return 0;
    }
    const auto result = trainer.fit(*module, *data.train_loader, data.validation_loader.get(), resume);
    if (trainer.rank() != 0) return 0;  // rank 0 reports
    std::cout << "trained " << result.steps << " steps; last loss " << result.last_loss << "\n"
              << "checkpoint: " << result.last_checkpoint << "\n"
              << "exported:   " << result.export_dir << std::endl;
    for (const auto& [name, value] : result.validation) std::cout << "val_" << name << ": " << value << std::endl;
    return 0;
  } catch (const zerodiff::Error& e) {
    return fail(e.what());
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace());
  }
}
