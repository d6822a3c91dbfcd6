// zerodiff/parallel/Strategy.h — how the Trainer's parameters, gradients and AdamW states are spread over
// the processes of a run (DESIGN.md §3, layer 6). The Trainer talks only to this interface:
//
//   strategy->setup(groups, broadcast, adamw);        // once, after the model is built
//   per step:  strategy->zero_grad();
//              per micro-batch: loss = forward (zero3: the model calls unit_hooks());
//                               strategy->begin_backward(last); loss.backward(); strategy->end_backward(last);
//              grads = strategy->gradient_tensors();  // unscale / inf check (GradScaler) on these
//              norm = strategy->clip_grad_norm(max);   // global L2 norm across ranks and shards
//              strategy->step();                       // AdamW, then parameters are whole again on every rank
//
// The interface carries what every strategy does; a capability only some have is a query that returns null elsewhere
// (never a member that throws), and what is particular to one strategy is reached through its own type:
//  * EMA of the trained weights: single/ddp/zero1/zero2 hold whole parameters, so the Trainer keeps train::EMA
//    itself. zero3 and gemini built with StrategyOptions::ema keep the EMA sharded like their master weights:
//    sharded_ema() returns that capability (ShardedEma.h: decay per step, gather/load whole tensors for checkpoints,
//    EMA weights into the shards for export); null for every other strategy.
//  * zero3 and gemini are ChunkedStrategy (ChunkedStrategy.h): their chunk layout and gemini's placement manager are
//    reached by dynamic_cast to that type (tests, benchmarks), not through this interface.
//
// Strategies (ZeRO: Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
// Models"; DDP: Li et al. 2020, "PyTorch Distributed", and torch/csrc/distributed/c10d/reducer.cpp):
//  * single — one process; torch AdamW over the parameters.
//  * ddp    — parameters broadcast from rank 0; gradient buckets all-reduced (averaged) while backward is
//             still running, on the last micro-batch of a step only; every rank runs the same AdamW step.
//  * zero1  — as ddp for gradients; each rank owns a shard of the flattened fp32 master parameters and their
//             AdamW states (FlatLayout), updates it, and the parameters are all-gathered bucket by bucket.
//  * zero2  — zero1, plus gradients are reduce-scattered bucket by bucket during every backward into this
//             rank's gradient shard; a parameter's full gradient is released as soon as its buckets are sent.
//  * zero3  — parameters sharded in chunks and gathered unit by unit (ChunkedStrategy.h, src/parallel/
//             Zero3Strategy.cpp): the strategy gathers, releases and reduce-scatters; each chunk's master shard,
//             AdamW states and EMA shard stay in memory beside it (the in-memory shard optimizer).
//  * gemini — zero3 whose shard optimizer is tiered: memory::GeminiManager places parameter shards (device / host)
//             and optimizer blocks (device / host / disk) under a device budget (src/parallel/ShardOptimizer.h).
// Parameters no rank used in a step keep no gradient and are skipped by AdamW (as torch's AdamW and DDP's
// find_unused_parameters do); a parameter tensor appearing twice (tied weights) is trained once.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "zerodiff/core/Enum.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/memory/GeminiManager.h"
#include "zerodiff/parallel/ShardedEma.h"
#include "zerodiff/parallel/UnitHooks.h"

namespace zerodiff::parallel {

/// The parallel strategies (the file comment describes each; gemini is zero3 with memory::GeminiManager placing
/// its chunks and optimizer states). Names as in trainer.strategy.
enum class StrategyKind { single, ddp, zero1, zero2, zero3, gemini };
inline constexpr EnumName<StrategyKind> kStrategyNames[] = {
    {StrategyKind::single, "single"}, {StrategyKind::ddp, "ddp"},     {StrategyKind::zero1, "zero1"},
    {StrategyKind::zero2, "zero2"},   {StrategyKind::zero3, "zero3"}, {StrategyKind::gemini, "gemini"}};
/// StrategyKind's name table (core/Enum.h).
constexpr std::span<const EnumName<StrategyKind>> enum_names(StrategyKind) { return kStrategyNames; }

/// AdamW hyper-parameters shared by every group (each group has its own lr).
struct AdamWSettings {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

/// One AdamW parameter group: parameters by name (names key the optimizer state in checkpoints).
struct ParamGroupSpec {
  std::string name;
  std::vector<std::pair<std::string, at::Tensor>> params;
  double lr = 1e-4;
};

/// Bytes this rank holds for model states (activations excluded), measured on the live tensors.
struct MemoryReport {
  int64_t parameters = 0;        ///< the compute parameters (whole on every rank in ddp / zero1 / zero2)
  int64_t gradients = 0;         ///< gradients held now (full ones, or this rank's shard in zero2)
  int64_t master_weights = 0;    ///< fp32 master shard (zero1 / zero2); 0 where the parameters are the master
  int64_t optimizer_states = 0;  ///< AdamW exp_avg + exp_avg_sq held by this rank
  int64_t numel = 0;             ///< Ψ: trainable elements
  int64_t padded_numel = 0;      ///< Ψ plus padding (to a multiple of the world size, or of zero3's chunks)
  int64_t peak_parameters = 0;   ///< zero3: most parameter bytes resident since the last zero_grad (shards +
                                 ///< gathered chunks); others: = parameters
  int64_t ema = 0;               ///< zero3 / gemini with a sharded EMA: its fp32 shards held in memory (device or
                                 ///< host; gemini blocks on disk are not counted); 0 otherwise
};

struct StrategyOptions {
  int64_t bucket_numel = 25 * 1024 * 1024 / 4;  ///< gradient bucket size in elements (DDP's 25 MB of fp32)
  int64_t chunk_numel = 0;                      ///< zero3 chunk size in elements (0 = search for least padding)
  int64_t keep_gathered_numel = 0;              ///< zero3: units smaller than this stay whole, gradients all-reduced
  bool hybrid_adam = false;                     ///< AdamW by optim::HybridAdam (SIMD CPU kernel) instead of torch's
  /// dtype of the weights AdamW updates (zero1/2/3, gemini): float32 master weights, or the parameters' own dtype
  /// for "bf16-true" (no fp32 copy: master, gradients seen by AdamW and its states in bfloat16).
  at::ScalarType master_dtype = at::kFloat;
  memory::PlacementOptions placement;           ///< gemini: placement policy, device budget, offload fractions
  std::string offload_dir;                      ///< gemini: folder for optimizer states on disk (with placement.disk)
  /// zero3 / gemini: keep an fp32 EMA of the trained weights sharded like the master weights (Strategy::sharded_ema);
  /// ignored by the other strategies (they hold whole parameters; the Trainer keeps train::EMA for them).
  bool ema = false;
};

/// A sharding unit for zero3: its parameters (the trainable ones are chunked), in execution order.
struct UnitSpec {
  std::string name;
  std::vector<std::pair<std::string, at::Tensor>> params;
};

/// How parameters, gradients and AdamW states are spread over the ranks of `group` (the file comment describes the
/// call sequence and each strategy). Made by make_strategy; not copyable. Every collective member must be called by
/// every rank at the same point.
class Strategy {
 public:
  explicit Strategy(std::shared_ptr<dist::ProcessGroup> group) : group_(std::move(group)) {}
  virtual ~Strategy() = default;
  Strategy(const Strategy&) = delete;
  Strategy& operator=(const Strategy&) = delete;

  /// Which strategy this is.
  virtual StrategyKind kind() const = 0;
  /// Its name for logs: "single", "ddp", "zero1", "zero2", "zero3" or "gemini" (name_of(kind())).
  std::string name() const { return std::string(name_of(kind())); }
  /// Whether the optimizer state is sharded (each rank saves its own file in checkpoints).
  virtual bool sharded() const { return false; }
  /// Whether every rank holds the whole parameters between steps (false for zero3: only shards; use
  /// gather_full_parameters() to read or write them).
  virtual bool replicated_parameters() const { return true; }

  /// zero3: the model's sharding units in execution order, before setup(); every trainable parameter must be
  /// in one. Other strategies ignore them.
  virtual void set_units(std::vector<UnitSpec> units) { (void)units; }
  /// The hooks the model must call around each unit's forward (null when the strategy needs none).
  virtual UnitHooks* unit_hooks() { return nullptr; }
  /// Collective (every rank calls it): makes every parameter whole until release_full_parameters(). With
  /// `write_back`, values written into the parameters meanwhile become the new shards (and master weights).
  virtual void gather_full_parameters() {}
  virtual void release_full_parameters(bool write_back) { (void)write_back; }

  /// Makes every tensor of `broadcast` (the model's parameters and buffers) equal to rank 0's and builds the
  /// optimizer over `groups` (non-empty groups of trainable float tensors, each tensor once, names unique).
  /// Throws zerodiff::Error on an empty or duplicated parameter, dist::CommError when a peer fails.
  virtual void setup(std::vector<ParamGroupSpec> groups, const std::vector<at::Tensor>& broadcast,
                     const AdamWSettings& adamw) = 0;
  /// Sets group `group`'s current learning rate.
  virtual void set_lr(size_t group, double lr) = 0;
  /// Drops the gradients of the last step.
  virtual void zero_grad() = 0;
  /// Around each micro-batch's backward; `last` = the micro-batch that completes the optimizer step.
  /// end_backward waits for the gradient communication of that backward (and throws dist::CommError when a
  /// peer fails).
  virtual void begin_backward(bool last) { (void)last; }
  virtual void end_backward(bool last) { (void)last; }
  /// The tensors whose .grad() the optimizer will use (parameters, or this rank's master-shard segments),
  /// valid after the last end_backward of a step: what loss-scale unscaling and inf checks run on.
  virtual std::vector<at::Tensor> gradient_tensors() = 0;
  /// Clips the gradients to `max_norm` (infinity = measure only) by their global L2 norm over all ranks and
  /// shards (torch.nn.utils.clip_grad_norm_'s rule: coefficient max_norm / (norm + 1e-6), capped at 1).
  /// Returns the norm before clipping.
  virtual double clip_grad_norm(double max_norm) = 0;
  /// Applies AdamW; afterwards every rank holds the whole updated parameters.
  virtual void step() = 0;

  /// Optimizer state to checkpoint: all of it (single, ddp) or this rank's shard (zero1, zero2).
  virtual io::TensorMap optimizer_state() const = 0;
  /// Restores optimizer_state(). Throws IoError naming `where` and the entry when something is missing, has
  /// the wrong shape, or was saved with another world size / bucket layout.
  virtual void load_optimizer_state(const io::TensorMap& state, const std::string& where) = 0;

  /// The EMA of the trained weights this strategy keeps itself, sharded like its master weights (ShardedEma.h): zero3
  /// and gemini built with StrategyOptions::ema; null for every other strategy (the caller then keeps train::EMA over
  /// whole parameters). Owned by the strategy. A query: never throws.
  virtual ShardedEma* sharded_ema() { return nullptr; }

  /// Model-state bytes held by this rank now.
  virtual MemoryReport memory() const = 0;

  /// The process group the strategy communicates over.
  dist::ProcessGroup& group() const { return *group_; }
  const std::shared_ptr<dist::ProcessGroup>& group_ptr() const { return group_; }

 protected:
  std::shared_ptr<dist::ProcessGroup> group_;
};

/// The strategy `kind` over `group` (the file comment describes each). single needs a group of size 1. zero3 and gemini
/// return a ChunkedStrategy; gemini is zero3 whose chunks and optimizer states are placed between the compute device,
/// host memory and disk by memory::GeminiManager under options.placement (its own AdamW loop: the HybridAdam kernel on
/// the CPU, ATen's fused AdamW on CUDA). Throws zerodiff::Error for a null group, options.bucket_numel < 1, single on
/// several ranks, or a kind outside StrategyKind (a bad cast).
std::unique_ptr<Strategy> make_strategy(StrategyKind kind, std::shared_ptr<dist::ProcessGroup> group,
                                        StrategyOptions options = {});
/// The same by name ("single", "ddp", "zero1", "zero2", "zero3", "gemini"): parse_enum<StrategyKind>(name,
/// "strategy"), so an unknown name throws ConfigError (a zerodiff::Error) listing the names.
std::unique_ptr<Strategy> make_strategy(std::string_view name, std::shared_ptr<dist::ProcessGroup> group,
                                        StrategyOptions options = {});

/// ZeRO's per-rank model-state bytes for Ψ fp32 trainable elements on N ranks with AdamW (Rajbhandari et al.
/// 2020, §5, with K = 8 bytes of Adam state per element): the expected MemoryReport (numel, padded_numel left
/// 0) of `strategy` (single and ddp alike, zero1, zero2, zero3). zero1/zero2 keep whole fp32 parameters plus a 4Ψ/N
/// master shard; zero3's fp32 parameter shard is its own master (4Ψ/N in `parameters`, 0 in master_weights).
/// Throws zerodiff::Error for gemini (its bytes depend on the placement) and for world_size < 1.
MemoryReport zero_memory_formula(StrategyKind strategy, int64_t numel, int world_size);
/// The same by name: parse_enum<StrategyKind>(strategy, "strategy") (ConfigError for an unknown name).
MemoryReport zero_memory_formula(std::string_view strategy, int64_t numel, int world_size);

}  // namespace zerodiff::parallel
