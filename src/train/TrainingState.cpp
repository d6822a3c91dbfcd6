#include "zerodiff/train/TrainingState.h"

#include <ATen/CPUGeneratorImpl.h>

#include <exception>
#include <map>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/io/Diffusers.h"

namespace zerodiff::train {

void agreed(dist::ProcessGroup& group, const char* what, const std::function<void()>& fn) {
  std::exception_ptr failure;
  try {
    fn();
  } catch (...) {
    failure = std::current_exception();
  }
  if (!group.all_true(failure == nullptr, "agree")) {
    if (failure) std::rethrow_exception(failure);
    throw Error(zerodiff::str("another rank failed while ", what, " (see its error); stopping"));
  }
}

void with_full_parameters(parallel::Strategy& strategy, bool write_back, const std::function<void()>& fn) {
  if (strategy.replicated_parameters()) return fn();
  strategy.gather_full_parameters();
  fn();
  strategy.release_full_parameters(write_back);
}

std::string TrainingState::save(io::CheckpointManager& checkpoints, int64_t step) {
  const int rank = p_.group.rank(), world = p_.group.size();
  const bool is_rank0 = rank == 0;
  // Shared files come from rank 0 (every rank holds the same whole model); with several processes each rank adds
  // its own files (generators; optimizer shards of the sharded strategies). Other ranks do not copy shared states.
  std::map<std::string, io::TensorMap> files, rank_files;
  auto& per_rank = world > 1 ? rank_files : files;
  with_full_parameters(p_.strategy, /*write_back=*/false, [&] {
    if (!is_rank0) return;
    io::TensorMap model;
    // zero3: copied to host memory while gathered (a device copy would double the model on rank 0's device).
    const bool sharded = !p_.strategy.replicated_parameters();
    for (auto& [k, v] : io::state_dict(p_.module.model())) {
      model[k] = sharded ? v.detach().to(at::TensorOptions().device(at::kCPU), false, /*copy=*/true) : v;
    }
    files["model"] = std::move(model);
  });
  if (p_.strategy.sharded()) {
    per_rank["optimizer"] = p_.strategy.optimizer_state();
  } else if (is_rank0) {
    files["optimizer"] = p_.strategy.optimizer_state();
  }
  if (p_.ema) {
    io::TensorMap ema = p_.ema->state();  // collective for the sharded EMA
    if (is_rank0) files["ema"] = std::move(ema);
  }
  per_rank["rng"] = {{"generator", p_.generator.get_state()},
                     {"torch_default", at::detail::getDefaultCPUGenerator().get_state()}};
  if (is_rank0) {
    if (auto extra = p_.module.extra_state(); !extra.empty()) files["module"] = io::TensorMap(extra.begin(), extra.end());
  }
  if (p_.scaler && is_rank0) {
    const auto st = p_.scaler->state();
    files["scaler"] = io::TensorMap(st.begin(), st.end());
  }
  const nlohmann::json state = {{"loader", p_.loader.state().to_json()}, {"seed", p_.seed}};
  io::RankSync sync{rank, world, [&](bool ok) { return p_.group.all_true(ok, "checkpoint"); }};
  return checkpoints.save(step, files, state, rank_files, sync);
}

int64_t TrainingState::restore(const io::Checkpoint& ckpt) {
  const int rank = p_.group.rank(), world = p_.group.size();
  const std::string& where = ckpt.path;
  auto need = [&](const char* name) -> const io::TensorMap& {
    auto it = ckpt.tensors.find(name);
    if (it == ckpt.tensors.end()) throw IoError(zerodiff::str(where, ": no ", name, ".safetensors"));
    return it->second;
  };
  with_full_parameters(p_.strategy, /*write_back=*/true, [&] {
    agreed(p_.group, "loading the checkpoint's model", [&] {
      io::load_state_dict(p_.module.model(), need("model"), /*strict=*/true, where + "/model.safetensors");
    });
  });
  // Each rank restores its own files (optimizer shard, generators): agreed, so one bad file stops every rank.
  agreed(p_.group, "restoring the checkpoint", [&] {
    const std::string optimizer_file =
        p_.strategy.sharded() && world > 1 ? zerodiff::str(".rank-", rank, "-of-", world) : std::string();
    const io::TensorMap& optimizer = need("optimizer");
    try {
      p_.strategy.load_optimizer_state(optimizer, where + "/optimizer" + optimizer_file + ".safetensors");
    } catch (const IoError& e) {
      // The parallel layer names its own options; these are the run config's keys behind them.
      throw IoError(zerodiff::str(e.what(), " (run config: trainer.strategy, trainer.bucket_size_mb for ddp / zero1 / "
                                            "zero2, trainer.zero3_chunk_size_mb for zero3 / gemini)"));
    }
    if (p_.ema) p_.ema->load(need("ema"), where + "/ema.safetensors");
    const auto& rng = need("rng");
    if (!rng.count("generator") || !rng.count("torch_default")) {
      throw IoError(zerodiff::str(where, "/rng.safetensors: missing generator states"));
    }
    p_.generator.set_state(rng.at("generator"));
    at::Generator default_gen = at::detail::getDefaultCPUGenerator();
    default_gen.set_state(rng.at("torch_default"));
    if (ckpt.tensors.count("module")) p_.module.load_extra_state(ckpt.tensors.at("module"));
    if (p_.scaler) {
      if (ckpt.tensors.count("scaler")) {
        const auto& saved = ckpt.tensors.at("scaler");
        p_.scaler->load_state(std::map<std::string, at::Tensor>(saved.begin(), saved.end()));
      } else {
        ZD_LOG_WARN(where, ": no loss-scaler state (saved with another precision); starting at scale ",
                    p_.scaler->get_scale());
      }
    }
    if (!ckpt.state.contains("loader")) throw IoError(zerodiff::str(where, ": trainer_state.json has no 'loader'"));
    p_.loader.load_state(data::LoaderState::from_json(ckpt.state["loader"]));
  });
  return ckpt.step;
}

}  // namespace zerodiff::train
