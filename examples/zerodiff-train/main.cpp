// zerodiff-train: train or fine-tune a latent diffusion model (or its VAE) from a YAML config.
//
//   zerodiff-train CONFIG.yaml [key.path=value ...] [--resume latest|PATH] [--dry-run]
//   zerodiff-train --version
//
// The config is read and validated completely before any work: an unknown key, a wrong type or a missing
// file stops the run with a message naming it, and nothing is written. The run itself is the library's
// (zerodiff::train::run, the same path for every program); this file only parses the command line.
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include <cstdio>
#include <iostream>

#include "zerodiff/core/BuildInfo.h"
#include "zerodiff/core/Config.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/FaultInjection.h"
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
    const auto launch = zerodiff::dist::LaunchEnv::from_environment();
    if (launch.world_size > 1) rank_tag = " (rank " + std::to_string(launch.rank) + ")";
    zerodiff::train::RunOptions options;
    options.resume = resume;
    options.dry_run = dry_run;
    options.dry_run_world_size = world_size;
    options.config_name = config_path;
    // The library owns the whole run (train::run): the binary only reports its outcome.
    const auto outcome = zerodiff::train::run(zerodiff::train::load_run_config(config_path, overrides), options);
    if (dry_run) {
      std::cout << outcome.dry_run_report << std::flush;
      return 0;
    }
    if (outcome.rank != 0) return 0;  // rank 0 reports
    const auto& result = outcome.fit;
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
