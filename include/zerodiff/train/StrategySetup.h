// zerodiff/train/StrategySetup.h — the one place where the trainer config becomes the parallel strategy's typed
// options. Trainer::fit builds its strategy from it and estimate_memory (zerodiff-train --dry-run) estimates from
// the same result, so the estimate cannot drift from the run.
#pragma once

#include <vector>

#include "zerodiff/parallel/Strategy.h"
#include "zerodiff/train/Trainer.h"
#include "zerodiff/train/TrainingModule.h"

namespace zerodiff::train {

/// Which strategy a run builds, and with which options.
struct StrategySetup {
  parallel::StrategyKind kind = parallel::StrategyKind::single;
  parallel::StrategyOptions options;
};

/// The strategy of `config` for a module training `groups`:
///  * bucket_numel = bucket_size_mb of fp32 (at least 1 element); chunk_numel = zero3_chunk_size_mb of fp32 (0 =
///    search); keep_gathered_numel = zero3_keep_gathered_below_mb of fp32;
///  * hybrid_adam when optimizer.implementation is hybrid_adam — except when it was resolved from auto
///    (`optimizer_auto`) and some trained tensor is not float32 (HybridAdam updates float32 only; torch's AdamW then);
///  * master_dtype: bfloat16 under bf16-true, float32 otherwise (train::master_dtype);
///  * gemini's placement (policy, device budget in bytes, offload fractions, disk when offload_dir is set);
///  * ema = ema.enabled (zero3 / gemini keep it sharded; the others ignore it).
/// The Trainer passes its resolved config (optimizer.implementation auto became torch or hybrid_adam in its
/// constructor); an unresolved auto counts as torch here (the dry-run estimate does not depend on it). Throws nothing.
StrategySetup strategy_setup(const TrainerConfig& config, const std::vector<ParameterGroup>& groups,
                             bool optimizer_auto);

}  // namespace zerodiff::train
