#include "zerodiff/train/StrategySetup.h"

#include <algorithm>

namespace zerodiff::train {

namespace {
int64_t fp32_elements(double mib) { return static_cast<int64_t>(mib * 1024 * 1024 / 4); }
}  // namespace

StrategySetup strategy_setup(const TrainerConfig& config, const std::vector<ParameterGroup>& groups,
                             bool optimizer_auto) {
  StrategySetup setup;
  setup.kind = config.strategy;
  parallel::StrategyOptions& o = setup.options;
  o.bucket_numel = std::max<int64_t>(1, fp32_elements(config.bucket_size_mb));
  o.chunk_numel = fp32_elements(config.zero3_chunk_size_mb);
  o.keep_gathered_numel = fp32_elements(config.zero3_keep_gathered_below_mb);
  bool all_float32 = true;
  for (const auto& g : groups) {
    for (const auto& np : g.params) all_float32 = all_float32 && np.second.scalar_type() == at::kFloat;
  }
  o.hybrid_adam = config.optimizer.implementation == AdamImplementation::hybrid_adam &&
                  (all_float32 || !optimizer_auto || config.precision == Precision::bf16_true);
  o.master_dtype = master_dtype(config.precision);
  o.placement.policy = config.gemini.placement_policy;
  o.placement.device_budget_bytes = static_cast<int64_t>(config.gemini.device_budget_mb * 1024 * 1024);
  o.placement.offload_optim_frac = config.gemini.offload_optim_frac;
  o.placement.offload_param_frac = config.gemini.offload_param_frac;
  o.placement.disk = !config.gemini.offload_dir.empty();
  o.offload_dir = config.gemini.offload_dir;
  o.ema = config.ema.enabled;
  return setup;
}

}  // namespace zerodiff::train
