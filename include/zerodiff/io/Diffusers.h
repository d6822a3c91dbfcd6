// zerodiff/io/Diffusers.h — the diffusers model-folder layout:
//   <dir>/config.json
//   <dir>/diffusion_pytorch_model[.<variant>].safetensors            (single file), or
//   <dir>/diffusion_pytorch_model[.<variant>].safetensors.index.json (sharded: {"weight_map": {name: file}})
// (transformers folders use the base name "model" instead of "diffusion_pytorch_model").
// Strict loading into a torch::nn::Module reports every missing key, unexpected key and shape mismatch
// at once, by name. Saving writes config.json and the weights atomically, file by file.
#pragma once

#include <torch/nn/module.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "zerodiff/io/Safetensors.h"

namespace zerodiff::io {

/// Weight file names of the diffusers models ("diffusion_pytorch_model") and transformers ("model").
inline constexpr const char* kDiffusersWeightsName = "diffusion_pytorch_model";
inline constexpr const char* kTransformersWeightsName = "model";

/// Parses `<dir>/config.json`. Throws IoError naming the file when it is missing or not valid JSON.
nlohmann::json read_config_json(const std::string& dir);

/// Writes `config` to `<dir>/config.json` atomically (creates `dir`). Throws IoError on failure.
void write_config_json(const std::string& dir, const nlohmann::json& config);

/// Resolves and reads the weights of a model folder: `<base>[.<variant>].safetensors`, else the sharded
/// index `<base>[.<variant>].safetensors.index.json` (every shard read; a name mapped to a shard that
/// lacks it is an error). Throws IoError naming the folder and the file names tried when none exists,
/// and for a pickle-only folder (`*.bin`), which zerodiff never loads.
TensorMap load_weights(const std::string& dir, const std::string& base = kDiffusersWeightsName,
                       const std::string& variant = "");

/// Result of comparing a state dict with a module's parameters and buffers.
struct LoadReport {
  std::vector<std::string> missing;     // in the module, not in the file
  std::vector<std::string> unexpected;  // in the file, not in the module
  std::vector<std::string> mismatched;  // "name: file [a, b] vs model [c, d]"
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /// Multi-line description listing every problem.
  std::string describe() const;
};

/// Copies `weights` into `module`'s parameters and buffers (converting dtype, keeping the module's
/// device), without recording autograd history. With `strict`, throws IoError "<source>: state dict does
/// not match the model:\n  missing keys (N): ...\n  unexpected keys (M): ...\n  shape mismatches (K): ..."
/// before copying anything; without, copies what matches and returns the report.
LoadReport load_state_dict(torch::nn::Module& module, const TensorMap& weights, bool strict = true,
                           const std::string& source = "state dict");

/// The module's parameters and buffers as name -> tensor (detached, same device and dtype).
TensorMap state_dict(const torch::nn::Module& module);

/// Writes `<dir>/config.json` and `<dir>/<base>.safetensors` (fp32 or the module's dtype) atomically,
/// creating `dir`. `config` should carry "_class_name" so that diffusers can load the folder.
void save_pretrained(const torch::nn::Module& module, const std::string& dir, const nlohmann::json& config,
                     const std::string& base = kDiffusersWeightsName);

}  // namespace zerodiff::io
