// TrainingModule's default methods (train/TrainingModule.h documents each).
#include "zerodiff/train/TrainingModule.h"

#include <filesystem>
#include <set>

#include "zerodiff/io/Diffusers.h"
#include "zerodiff/io/Safetensors.h"

namespace fs = std::filesystem;

namespace zerodiff::train {

std::vector<std::pair<std::string, at::Tensor>> TrainingModule::trainable_parameters() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::set<const void*> seen;  // a tied (shared) tensor is listed once, under its first name
  for (auto& p : model().named_parameters(true)) {
    if (p.value().requires_grad() && seen.insert(p.value().unsafeGetTensorImpl()).second) out.emplace_back(p.key(), p.value());
  }
  return out;
}

void TrainingModule::export_to(const std::string& dir) {
  fs::create_directories(dir);
  io::save_safetensors((fs::path(dir) / "model.safetensors").string(), io::state_dict(model()));
}

}  // namespace zerodiff::train
