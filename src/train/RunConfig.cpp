#include "zerodiff/train/RunConfig.h"

#include "zerodiff/memory/ChunkManager.h"
#include "zerodiff/nn/Attention.h"
#include "zerodiff/parallel/Strategy.h"
#include "zerodiff/train/StrategySetup.h"

#include <torch/cuda.h>

#include <iomanip>
#include <sstream>
#include <unordered_set>

#include "zerodiff/core/BuildInfo.h"
#include "zerodiff/core/Config.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/data/SubsetDataset.h"

namespace zerodiff::train {

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  return config::load_file<RunConfig>(path, overrides);
}

std::unique_ptr<TrainingModule> make_module(const RunConfig& config) {
  if (config.task == Task::autoencoder) return std::make_unique<AutoencoderModule>(config.autoencoder);
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

MemoryEstimate estimate_memory(TrainingModule& module, const TrainerConfig& trainer, int world_size) {
  MemoryEstimate e;
  e.world_size = world_size;
  std::unordered_set<const void*> trainable;
  for (const auto& g : module.parameter_groups()) {
    for (const auto& [_, p] : g.params) trainable.insert(p.unsafeGetTensorImpl());
  }
  auto count = [&](torch::nn::Module& m, const std::string& name) {
    ComponentSize c{name, 0, 0};
    for (const auto& p : m.parameters(true)) {
      c.parameters += p.numel();
      if (trainable.count(p.unsafeGetTensorImpl())) c.trainable += p.numel();
    }
    for (const auto& b : m.buffers(true)) e.weights += static_cast<double>(b.numel()) * 4;
    return c;
  };
  auto children = module.model().named_children();
  if (children.is_empty()) {
    e.components.push_back(count(module.model(), module.model().name()));
  } else {
    for (const auto& child : children) e.components.push_back(count(*child.value(), child.key()));
  }
  for (const auto& c : e.components) {
    e.parameters += c.parameters;
    e.trainable += c.trainable;
  }
  // (gemini holds what zero3 holds, placed between the device, host memory and disk)
  // What the run would build (the same function fit uses, so the estimate follows the run).
  const StrategySetup setup = strategy_setup(trainer, module.parameter_groups(), /*optimizer_auto=*/false);
  const parallel::StrategyOptions& options = setup.options;
  using parallel::StrategyKind;
  const bool chunked = setup.kind == StrategyKind::zero3 || setup.kind == StrategyKind::gemini;
  const StrategyKind formula = setup.kind == StrategyKind::zero1 || setup.kind == StrategyKind::zero2 ? setup.kind
                               : chunked                                                              ? StrategyKind::zero3
                                                                                                      : StrategyKind::ddp;
  const auto f = parallel::zero_memory_formula(formula, e.trainable, world_size);
  e.gradients = static_cast<double>(f.gradients);
  e.optimizer = static_cast<double>(f.optimizer_states);
  e.master = static_cast<double>(f.master_weights);
  // Frozen parameters stay whole; trainable ones are whole (4Ψ) or, under zero3, this rank's chunk shards.
  e.weights += static_cast<double>(e.parameters - e.trainable) * 4 + static_cast<double>(f.parameters);
  double trained_weights = static_cast<double>(f.parameters);  // the part of e.weights that is trained
  // EMA: a whole fp32 copy of the trained weights (train::EMA), or under zero3 / gemini an fp32 shard beside each
  // master shard: 4 bytes per trained element (padding included) / world size.
  e.ema = options.ema ? static_cast<double>(chunked ? (e.trainable + world_size - 1) / world_size : e.trainable) * 4
                              : 0;
  if (chunked) {
    // The chunk layout zero3 would build: trainable parameters unit by unit, packed greedily.
    std::vector<int64_t> numels;
    std::unordered_set<const void*> seen;
    auto units = module.sharding_units();
    if (units.empty()) {
      parallel::UnitSpec all{"model", {}};
      for (auto& p : module.model().named_parameters(true)) all.params.emplace_back(p.key(), p.value());
      units.push_back(std::move(all));
    }
    for (const auto& u : units) {
      for (const auto& [_, p] : u.params) {
        if (trainable.count(p.unsafeGetTensorImpl()) && seen.insert(p.unsafeGetTensorImpl()).second) numels.push_back(p.numel());
      }
    }
    if (!numels.empty()) {
      const int64_t requested = options.chunk_numel;
      const int64_t n = world_size;
      const int64_t chunk = requested > 0 ? (requested + n - 1) / n * n
                                          : memory::search_chunk_numel(numels, world_size, int64_t{32} << 20, int64_t{1} << 20);
      const int64_t padding = memory::packing_padding(numels, chunk);
      const int64_t chunks = (e.trainable + padding) / chunk;
      // Shards hold the padding too: per rank (Ψ + padding) / N elements of parameters, gradients, AdamW states.
      const auto padded = parallel::zero_memory_formula(StrategyKind::zero3, e.trainable + padding, world_size);
      e.weights += static_cast<double>(padded.parameters - f.parameters);
      trained_weights = static_cast<double>(padded.parameters);
      e.gradients = static_cast<double>(padded.gradients);
      e.optimizer = static_cast<double>(padded.optimizer_states);
      if (options.ema) e.ema = static_cast<double>(padded.parameters);  // an fp32 shard per rank
      std::ostringstream os;
      os << std::fixed << std::setprecision(1) << chunks << " chunks of " << chunk << " elements ("
         << static_cast<double>(chunk) * 4 / (1024.0 * 1024) << " MiB fp32) over " << units.size() << " units, padding "
         << padding << " elements (" << std::setprecision(2) << 100.0 * static_cast<double>(padding) /
                                                                  static_cast<double>(e.trainable + padding)
         << " %); each rank keeps 1/" << world_size << " of every chunk; during a step it also holds the gathered "
            "chunks of about three units";
      if (setup.kind == StrategyKind::gemini) {
        const int64_t budget_mib = options.placement.device_budget_bytes / (1024 * 1024);
        os << "; gemini places the shards and optimizer states between the device (budget "
           << (options.placement.device_budget_bytes > 0 ? std::to_string(budget_mib) + " MiB"
                                                         : std::string("its free memory"))
           << "), host memory" << (options.placement.disk ? " and disk" : "");
      }
      e.chunk_layout = os.str();
    }
  }
  if (options.master_dtype == at::kBFloat16) {  // bf16-true: trained weights, gradients, master and AdamW states in 2 bytes
    e.weights -= trained_weights / 2;
    e.gradients /= 2;
    e.optimizer /= 2;
    e.master /= 2;
    // (the EMA stays float32: train::EMA's shadow and the sharded EMA shard are fp32 under every precision)
  }
  return e;
}

std::string MemoryEstimate::report(const TrainerConfig& trainer) const {
  auto gib = [](double bytes) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(bytes < 1024.0 * 1024 * 1024 ? 3 : 2) << bytes / (1024.0 * 1024 * 1024)
       << " GiB";
    return os.str();
  };
  std::ostringstream os;
  os << std::left << std::setw(16) << "component" << std::right << std::setw(16) << "parameters" << std::setw(16)
     << "trainable" << "\n";
  for (const auto& c : components) {
    os << std::left << std::setw(16) << c.name << std::right << std::setw(16) << c.parameters << std::setw(16)
       << c.trainable << "\n";
  }
  os << std::left << std::setw(16) << "total" << std::right << std::setw(16) << parameters << std::setw(16) << trainable
     << "\n";
  os << "memory per rank (strategy " << name_of(trainer.strategy) << " on " << world_size << " process"
     << (world_size > 1 ? "es" : "") << ", precision " << name_of(trainer.precision) << ", AdamW"
     << (trainer.ema.enabled ? ", EMA" : "") << "): weights " << gib(weights) << " + gradients " << gib(gradients)
     << " + optimizer states " << gib(optimizer);
  if (master > 0) os << (trainer.precision == Precision::bf16_true ? " + bf16 master shard " : " + fp32 master shard ") << gib(master);
  if (trainer.ema.enabled) os << " + EMA " << gib(ema);
  os << " = " << gib(total()) << ", plus activations (not estimated)\n";
  if (!chunk_layout.empty()) {
    os << "chunk layout: " << chunk_layout << "\n";
  } else {
    os << "chunk layout: none (" << name_of(trainer.strategy)
       << " keeps every parameter whole on each rank; parameters are sharded in chunks by zero3)\n";
  }
  return os.str();
}

std::string RunData::summary() const {
  return zerodiff::str(train->size(), " training samples (", train_loader->batches_per_epoch(), " batches per epoch)",
                       validation ? zerodiff::str(", ", validation->size(), " validation samples") : std::string());
}

namespace {

/// The dry run: architectures on the CPU with random weights (no weights file is read), the memory estimate per
/// rank for `world_size` processes, the data summary.
std::string dry_run_report(TrainingModule& module, const RunConfig& config, const RunData& data, int world_size,
                           const std::string& config_name, const std::string& note) {
  module.configure_model_for_dry_run(torch::kCPU);
  const MemoryEstimate estimate = estimate_memory(module, config.trainer, world_size);
  return zerodiff::str(note, "dry run: config OK (", config_name, ")\n", estimate.report(config.trainer),
                       "data: ", data.summary(), "\n");
}

}  // namespace

RunOutcome run(const RunConfig& config, const RunOptions& options) {
  if (options.dry_run_world_size > 1 && config.trainer.strategy == parallel::StrategyKind::single) {
    throw ConfigError(zerodiff::str("a dry run for ", options.dry_run_world_size,
                                    " processes (--world-size) with trainer.strategy single: single runs in one "
                                    "process; choose ddp, zero1, zero2, zero3 or gemini to estimate a multi-process "
                                    "run"));
  }
  ZD_CHECK(options.dry_run || options.dry_run_world_size == 0,
           "run: dry_run_world_size applies to a dry run only (a run's processes come from torchrun or SLURM)");
  if (options.configure_logging) {
    // torchrun / SLURM: every process logs as its rank (only rank 0 below warn).
    const auto launch = dist::LaunchEnv::from_environment();
    log::init({.level = config.log_level, .rank = launch.rank});
  }
  ZD_LOG_INFO(build_info());
  // The run's attention policy, for its duration (models built with `automatic` defer to it).
  const nn::AttentionPolicyScope attention(config.attention);
  auto module = make_module(config);
  TrainerConfig trainer_config = config.trainer;
  std::string note;
  if (options.dry_run && trainer_config.accelerator == Accelerator::cuda && !torch::cuda::is_available()) {
    note = "dry run: trainer.accelerator is cuda but this machine has no CUDA device; estimating anyway\n";
    trainer_config.accelerator = Accelerator::cpu;
  }
  Trainer trainer(trainer_config);
  RunData data = make_run_data(config, trainer.rank(), trainer.world_size());
  ZD_LOG_INFO("task ", config.task, ": ", data.summary(), ", device ", trainer.device().str());
  if (trainer.device().is_cpu() && nn::attention_policy() == nn::AttentionBackend::automatic &&
      !nn::cpu_kernel_preferred()) {
    ZD_LOG_INFO("attention: auto runs SDPA on this CPU (our CPU kernel measured slower than SDPA without AVX-512)");
  }
  RunOutcome out;
  out.rank = trainer.rank();
  if (options.dry_run) {
    const int world_size = options.dry_run_world_size > 0 ? options.dry_run_world_size : trainer.world_size();
    out.dry_run_report = dry_run_report(*module, config, data, world_size, options.config_name, note);
    return out;
  }
  out.fit = trainer.fit(*module, *data.train_loader, data.validation_loader.get(), options.resume);
  return out;
}

FitResult run(const RunConfig& config, const std::string& resume) {
  RunOptions options;
  options.resume = resume;
  return run(config, options).fit;
}

}  // namespace zerodiff::train
