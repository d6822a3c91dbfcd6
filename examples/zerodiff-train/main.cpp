// zerodiff-train: train or fine-tune a latent diffusion model from a YAML config.
//
//   zerodiff-train CONFIG.yaml [key.path=value ...]
//   zerodiff-train --version
#include <CLI/CLI.hpp>

#include <iostream>

#include "zerodiff/core/BuildInfo.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"

int main(int argc, char** argv) {
  CLI::App app{"zerodiff-train: train or fine-tune a latent diffusion model from a YAML config"};
  std::string config;
  std::vector<std::string> overrides;
  bool show_version = false;
  app.add_flag("--version", show_version, "Print the build info line and exit");
  app.add_option("config", config, "Training config (YAML)");
  app.add_option("overrides", overrides, "Config overrides key.path=value");
  CLI11_PARSE(app, argc, argv);
  if (show_version) {
    std::cout << zerodiff::build_info() << std::endl;
    return 0;
  }
  try {
    zerodiff::log::init({});
    if (config.empty()) {
      std::cerr << app.help() << std::endl;
      return 2;
    }
    ZD_LOG_INFO(zerodiff::build_info());
    throw zerodiff::NotImplementedError(
        "zerodiff-train: the training loop (Trainer API, issue 6) is not part of this build yet; "
        "this version can only report --version");
  } catch (const zerodiff::Error& e) {
    std::cerr << "zerodiff-train: error: " << e.what() << std::endl;
    return 1;
  }
}
