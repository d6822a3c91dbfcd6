// zerodiff/train/EmaKeeper.h — the EMA of the trained weights during Trainer::fit, behind one interface with two
// implementations (diffusers' EMAModel semantics, training_utils.py; the schedule is train::ema_decay_at):
//  * whole   — train::EMA: an fp32 shadow of every trainable parameter, updated after each applied step (single,
//              ddp, zero1, zero2: every rank holds the whole parameters);
//  * sharded — zero3 / gemini built with StrategyOptions::ema keep an fp32 EMA shard beside each master shard; the
//              keeper tells the strategy the decay before each step (the update runs inside step(), after AdamW).
// Both checkpoint the same "ema" file: whole fp32 tensors by parameter name (a run resumes under either).
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <string>

#include "zerodiff/io/Safetensors.h"
#include "zerodiff/parallel/ShardedEma.h"
#include "zerodiff/parallel/Strategy.h"
#include "zerodiff/train/EMA.h"

namespace zerodiff::train {

/// The EMA of a fit's trained weights (whole or sharded; see the file comment). Made by make_ema_keeper.
class EmaKeeper {
 public:
  virtual ~EmaKeeper() = default;
  /// Before the optimizer step that becomes step `step` (1-based count of updates after it) is applied. A skipped
  /// step (inf/NaN gradients) calls neither this nor after_step.
  virtual void before_step(int64_t step) = 0;
  /// After step `step` (1-based) was applied.
  virtual void after_step(int64_t step) = 0;
  /// The checkpoint's "ema" file: fp32 tensors by parameter name, whole. Collective for the sharded keeper (every
  /// rank calls it; only rank 0 gets the entries, the others an empty map); the whole keeper returns its shadow.
  virtual io::TensorMap state() = 0;
  /// Restores state() from `saved` (read from `where`, named in errors). Throws IoError naming `where` and the
  /// parameter when one is missing or has another shape. No communication.
  virtual void load(const io::TensorMap& saved, const std::string& where) = 0;
  /// With `on`, the model (whole) or the parameter shards (sharded) hold the EMA weights until use_ema_weights(false)
  /// puts the trained weights back exactly. For validation, sampling and export at the end of a run; no training
  /// step in between. No communication.
  virtual void use_ema_weights(bool on) = 0;
};

/// The keeper for `options` over `module`'s model and `strategy` (after strategy.setup()): sharded when the strategy
/// keeps a sharded EMA, whole otherwise. Throws zerodiff::Error for invalid options (check_ema_options), and
/// NotImplementedError when a sharded EMA cannot cover a trainable parameter (one in none of the parameter groups).
std::unique_ptr<EmaKeeper> make_ema_keeper(const EMAOptions& options, torch::nn::Module& model,
                                           parallel::Strategy& strategy, bool is_rank0);

/// The EMA weights in use for this scope's lifetime (keeper.use_ema_weights(true)); restore() puts the trained
/// weights back with errors propagating. If the scope ends without restore() (an exception unwinds it), the trained
/// weights are put back best effort, a failure logged, so that the first exception is the one that propagates.
class EmaWeightsScope {
 public:
  explicit EmaWeightsScope(EmaKeeper& keeper);
  ~EmaWeightsScope();
  EmaWeightsScope(const EmaWeightsScope&) = delete;
  EmaWeightsScope& operator=(const EmaWeightsScope&) = delete;
  void restore();

 private:
  EmaKeeper& keeper_;
  bool armed_ = true;
};

}  // namespace zerodiff::train
