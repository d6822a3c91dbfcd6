// zerodiff/nn/Unit.h — a sharding unit: the group of parameters a ZeRO-3 / Gemini strategy gathers
// before a piece of the forward pass and releases after it (DESIGN.md §4; like FSDP2's fully_shard
// groups). LibTorch modules have no forward hooks, so models list their units explicitly, in
// execution order, through a `std::vector<Unit> units()` member.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <string>

namespace zerodiff::nn {

/// One sharding unit of a model.
///
/// `module` is either a real submodule of the model (e.g. `down_blocks.1`) or, when several small
/// top-level submodules belong together (e.g. `conv_in` + `time_embedding`), a plain grouping
/// torch::nn::Module whose children are those submodules registered under their own names (the
/// parameters are shared, not copied). In both cases the model's state-dict key of a parameter `p`
/// of `module->named_parameters()` is `prefix.empty() ? p : prefix + "." + p`. Every parameter of
/// the model belongs to exactly one unit.
struct Unit {
  std::string name;                             ///< label for logs, e.g. "down_blocks.1" or "stem"
  std::shared_ptr<torch::nn::Module> module;    ///< the submodule (or grouping module)
  std::string prefix;                           ///< dotted path of `module` in the model ("" for groups)
};

}  // namespace zerodiff::nn
