// diffusers / transformers model folders: config.json + (sharded) safetensors weights, strict loading.
// Follows diffusers' ModelMixin.from_pretrained / save_pretrained file naming (diffusers/utils/constants.py:
// SAFETENSORS_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, `_add_variant`).
#include "zerodiff/io/Diffusers.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/AtomicFile.h"

namespace fs = std::filesystem;

namespace zerodiff::io {

namespace {

// "<base>.<variant>.safetensors" as diffusers' _add_variant does (the variant goes before the extension).
std::string weights_file(const std::string& base, const std::string& variant, const std::string& ext) {
  return variant.empty() ? base + ext : base + "." + variant + ext;
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(zerodiff::str(path, ": cannot open"));
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw IoError(zerodiff::str(path, ": invalid JSON: ", e.what()));
  }
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

}  // namespace

nlohmann::json read_config_json(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(path)) throw IoError(zerodiff::str(dir, ": no config.json (is this a diffusers model folder?)"));
  nlohmann::json config = read_json_file(path);
  if (!config.is_object()) throw IoError(zerodiff::str(path, ": expected a JSON object"));
  return config;
}

void write_config_json(const std::string& dir, const nlohmann::json& config) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(zerodiff::str(dir, ": cannot create folder: ", ec.message()));
  write_file_atomic((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
}

TensorMap load_weights(const std::string& dir, const std::string& base, const std::string& variant) {
  if (!fs::is_directory(dir)) throw IoError(zerodiff::str(dir, ": model folder does not exist"));
  const fs::path single = fs::path(dir) / weights_file(base, variant, ".safetensors");
  if (fs::exists(single)) return load_safetensors(single.string());

  const fs::path index = fs::path(dir) / weights_file(base, variant, ".safetensors.index.json");
  if (fs::exists(index)) {
    const nlohmann::json json = read_json_file(index.string());
    if (!json.contains("weight_map") || !json["weight_map"].is_object()) {
      throw IoError(zerodiff::str(index.string(), ": no \"weight_map\" object"));
    }
    std::map<std::string, std::vector<std::string>> by_shard;
    for (auto it = json["weight_map"].begin(); it != json["weight_map"].end(); ++it) {
      if (!it.value().is_string()) throw IoError(zerodiff::str(index.string(), ": weight_map entry '", it.key(), "' is not a file name"));
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos) {
        throw IoError(zerodiff::str(index.string(), ": shard name '", shard, "' must be a plain file name in the folder"));
      }
      by_shard[shard].push_back(it.key());
    }
    TensorMap out;
    for (const auto& [shard, names] : by_shard) {
      const SafetensorsFile file = SafetensorsFile::open((fs::path(dir) / shard).string());
      for (const auto& name : names) {
        if (!file.contains(name)) {
          throw IoError(zerodiff::str(index.string(), ": tensor '", name, "' is mapped to ", shard, " which does not contain it"));
        }
        out.emplace(name, file.get(name));
      }
    }
    return out;
  }

  std::string tried = zerodiff::str(single.filename().string(), ", ", index.filename().string());
  for (const char* ext : {".bin", ".ckpt", ".pt", ".pth"}) {
    const fs::path pickle = fs::path(dir) / weights_file(base, variant, ext);
    if (fs::exists(pickle)) {
      throw IoError(zerodiff::str(dir, ": only ", pickle.filename().string(), " (a pickle file) is present (tried ",
                                  tried, "); ", pickle_refusal_advice()));
    }
  }
  throw IoError(zerodiff::str(dir, ": no weights found (tried ", tried, ")"));
}

std::string LoadReport::describe() const {
  std::ostringstream os;
  if (!missing.empty()) os << "\n  missing keys (" << missing.size() << "): " << join_names(missing);
  if (!unexpected.empty()) os << "\n  unexpected keys (" << unexpected.size() << "): " << join_names(unexpected);
  if (!mismatched.empty()) os << "\n  shape mismatches (" << mismatched.size() << "): " << join_names(mismatched);
  return os.str();
}

TensorMap state_dict(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) out.emplace(item.key(), item.value().detach());
  for (const auto& item : module.named_buffers(/*recurse=*/true)) out.emplace(item.key(), item.value().detach());
  return out;
}

LoadReport load_state_dict(torch::nn::Module& module, const TensorMap& weights, bool strict,
                           const std::string& source) {
  std::map<std::string, at::Tensor> targets;
  for (const auto& item : module.named_parameters(true)) targets.emplace(item.key(), item.value());
  for (const auto& item : module.named_buffers(true)) targets.emplace(item.key(), item.value());

  LoadReport report;
  for (const auto& [name, target] : targets) {
    auto it = weights.find(name);
    if (it == weights.end()) {
      report.missing.push_back(name);
    } else if (it->second.sizes() != target.sizes()) {
      report.mismatched.push_back(zerodiff::str(name, ": file ", it->second.sizes().vec(), " vs model ", target.sizes().vec()));
    }
  }
  for (const auto& [name, _] : weights) {
    if (!targets.count(name)) report.unexpected.push_back(name);
  }
  if (strict && !report.ok()) {
    throw IoError(zerodiff::str(source, ": state dict does not match the model:", report.describe()));
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    auto it = weights.find(name);
    if (it == weights.end() || it->second.sizes() != target.sizes()) continue;
    target.copy_(it->second);
  }
  return report;
}

void save_pretrained(const torch::nn::Module& module, const std::string& dir, const nlohmann::json& config,
                     const std::string& base) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(zerodiff::str(dir, ": cannot create folder: ", ec.message()));
  // Weights first, config last: a folder with a config.json is complete.
  save_safetensors((fs::path(dir) / (base + ".safetensors")).string(), state_dict(module), {{"format", "pt"}});
  write_config_json(dir, config);
}

}  // namespace zerodiff::io
