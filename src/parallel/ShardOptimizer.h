// Internal (parallel layer): what happens to a chunk's shard in the optimizer step, behind the one interface the zero3
// strategy (Zero3Strategy.cpp) talks to. The strategy gathers, releases and reduce-scatters chunks; a ShardOptimizer
// owns, per chunk, this rank's state for the step and decides where it lives:
//  * the master shard (fp32; bf16-true: bf16), AdamW's two moments and, with StrategyOptions::ema, the fp32 EMA shard
//    (an OptimizerBlock per chunk);
//  * the fp32 gradient shard the strategy adds each reduce-scatter result into (grad_shard());
//  * one tensor per segment (this rank's run of one parameter in a chunk) carrying the segment's gradient, which the
//    strategy sets after backward and clips (segment_tensors()).
// Two implementations, chosen by make_strategy from the StrategyKind:
//  * in memory (zero3, InMemoryShardOptimizer.cpp) — everything on the compute device beside the parameter shard
//    (a float32 shard is its own master); torch's AdamW or optim::HybridAdam over views of the master shards.
//  * tiered (gemini, TieredShardOptimizer.cpp) — memory::GeminiManager places each chunk's optimizer block on the
//    device, in host memory or on disk (memory::DiskStateStore: read-ahead, write-behind) and the parameter shards on
//    the device or the host; AdamW chunk by chunk (the HybridAdam kernel on the CPU, ATen's fused AdamW on CUDA).
//    The tiered optimizer also answers the placement hooks (before_gather ... may_prefetch) the strategy calls around
//    its gathers; the in-memory one keeps every shard on the device, so they are no-ops there.
// Both save and restore the same checkpoint format (StrategyUtil.h: shard_state), so a zero3 checkpoint resumes under
// gemini and back; both update the EMA after AdamW with train::EMA::update's expression.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/memory/ChunkManager.h"
#include "zerodiff/memory/GeminiManager.h"
#include "zerodiff/parallel/Strategy.h"

namespace zerodiff::parallel::detail {

/// "No position / no unit" in the recorded unit order (the same value as memory::GeminiManager::npos).
inline constexpr size_t kNoPosition = static_cast<size_t>(-1);

/// This rank's run of one parameter inside one chunk's shard: what AdamW updates as one tensor.
struct Segment {
  size_t chunk = 0;          ///< chunk index
  size_t param = 0;          ///< index in ChunkManager::params()
  int64_t param_offset = 0;  ///< first element in the flattened parameter
  int64_t shard_offset = 0;  ///< first element in the chunk's shard (a kept chunk: in its full buffer)
  int64_t numel = 0;         ///< elements
  size_t group = 0;          ///< the AdamW parameter group of the parameter
};

/// One chunk's optimizer state on this rank: 1-D tensors of the shard's length (a chunk kept gathered: chunk_numel),
/// all on one tier (the in-memory optimizer: the compute device).
struct OptimizerBlock {
  at::Tensor master;      ///< the weights AdamW updates, in StrategyOptions::master_dtype (fp32; bf16-true: bf16)
  at::Tensor exp_avg;     ///< AdamW's first moment, master_dtype (undefined in the in-memory optimizer, whose
                          ///< torch::optim keeps the moments per segment)
  at::Tensor exp_avg_sq;  ///< AdamW's second moment, master_dtype (the same)
  at::Tensor ema;         ///< fp32 EMA of the master; undefined without StrategyOptions::ema

  /// The defined tensors, in the order above (master, exp_avg, exp_avg_sq[, ema]), moved out: what DiskStateStore
  /// stores for the block.
  std::vector<at::Tensor> take_tensors() &&;
  /// The inverse of take_tensors(): 3 tensors, or 4 with an EMA. Throws zerodiff::Error for another count.
  static OptimizerBlock from_tensors(std::vector<at::Tensor> tensors);
};

/// This rank's resident copy of `chunk` that the master mirrors: its shard, or a kept chunk's full buffer.
inline at::Tensor local_shard(const memory::Chunk& chunk) {
  return chunk.keep_gathered() ? chunk.full() : chunk.shard();
}

/// What happens to this rank's shards in the optimizer step (the file comment): in memory (zero3) or tiered (gemini).
class ShardOptimizer {
 public:
  /// `options` are the strategy's (master_dtype, hybrid_adam, ema, placement, offload_dir are read); `group` is the
  /// strategy's and must outlive this object.
  ShardOptimizer(dist::ProcessGroup& group, StrategyOptions options) : group_(group), options_(std::move(options)) {}
  virtual ~ShardOptimizer() = default;
  ShardOptimizer(const ShardOptimizer&) = delete;
  ShardOptimizer& operator=(const ShardOptimizer&) = delete;

  // ---------------------------------------------------------------- setup and the strategy's view

  /// Builds the per-chunk state of `chunks` (closed: each shard holds rank 0's values) for `segments` (in chunk
  /// order, each with its parameter group) and the AdamW optimizer over `groups`' learning rates and `adamw`. Every
  /// master, EMA shard and gradient shard starts from the parameter shard (gradients: zero). Once, from the strategy's
  /// setup(); the tiered optimizer's is a collective (GeminiManager agrees on one budget). `chunks` must outlive this
  /// object. Tiered: throws NotImplementedError for bf16-true blocks on disk, zerodiff::Error for disk without an
  /// offload directory, what memory::GeminiManager's constructor throws (ConfigError for bad PlacementOptions,
  /// memory::BudgetError), IoError when the offload directory cannot be written.
  void setup(memory::ChunkManager& chunks, std::vector<Segment> segments, const std::vector<ParamGroupSpec>& groups,
             const AdamWSettings& adamw);
  const std::vector<Segment>& segments() const { return segments_; }
  /// One tensor per segment, carrying the segment's gradient (.grad(): master_dtype [numel], or undefined when no
  /// rank used the parameter): what AdamW updates, what loss-scale unscaling and clipping run on. Views of the master
  /// shards (in memory) or storage-less handles (tiered: the master may be on disk).
  std::vector<at::Tensor>& segment_tensors() { return segment_tensors_; }
  /// Chunk c's gradient shard, fp32 [shard_numel] (a kept chunk: [chunk_numel]), that the strategy adds the averaged
  /// reduce-scatter results into and zeroes in zero_grad: on the compute device (in memory) or beside the chunk's
  /// optimizer block (tiered; host memory for a block on disk).
  at::Tensor& grad_shard(size_t c) { return grad_shards_.at(c); }
  const at::Tensor& grad_shard(size_t c) const { return grad_shards_.at(c); }

  // ---------------------------------------------------------------- the optimizer step

  /// Sets parameter group `group`'s learning rate. Throws zerodiff::Error for an unknown group.
  virtual void set_lr(size_t group, double lr) = 0;
  /// AdamW on every segment whose gradient is defined, then each updated master into its parameter shard (cast to
  /// the chunk's dtype) and, with an EMA, ema -= (1 - ema_decay) * (ema - float(master)) for every chunk.
  /// `unit_order` = the units' forward order recorded by the first forward (the tiered optimizer ends its warm-up step
  /// with it: optimizer blocks move to the device, the prefetch plan is agreed — a collective).
  virtual void step(double ema_decay, const std::vector<size_t>& unit_order) = 0;
  /// This rank's optimizer state in the shard checkpoint format (StrategyUtil.h: "layout", then per segment
  /// "<parameter>@<offset>.master" and, once updated, ".exp_avg", ".exp_avg_sq", ".step"), CPU tensors.
  virtual io::TensorMap state() = 0;
  /// Restores state() (masters into the parameter shards too). Throws IoError naming `where` and the entry when the
  /// layout differs (another world size or chunk size) or an entry is missing or has the wrong size.
  virtual void load_state(const io::TensorMap& saved, const std::string& where) = 0;

  // ---------------------------------------------------------------- the blocks, for the strategy's EMA and writes

  /// Calls `fn` with chunk c's optimizer block in memory (tiered: a block on disk is read first and written back
  /// after `fn` returns; call flush() after the last one). Writes through the block's tensors are kept. Throws IoError
  /// when a disk block cannot be read.
  virtual void with_block(size_t c, const std::function<void(OptimizerBlock&)>& fn) = 0;
  /// Waits for the blocks written back (tiered; IoError for a failed write). No-op in memory.
  virtual void flush() {}
  /// A copy of a parameter shard kept aside meanwhile (use_ema_weights): on its device (in memory), or in host memory,
  /// outside the device budget (tiered).
  virtual at::Tensor stash(const at::Tensor& shard) const { return shard.clone(); }
  /// Adds this optimizer's bytes in memory to `r`: master_weights (masters that are not the parameter shard itself),
  /// optimizer_states (AdamW moments), ema (EMA shards); blocks on disk are not counted.
  virtual void add_memory(MemoryReport& r) const = 0;

  // ---------------------------------------------------------------- placement of the parameter shards
  // The tiered optimizer moves parameter shards between the device and the host under its device budget; the
  // strategy calls these around its gathers. In memory every shard stays on the compute device: no-ops.

  /// The placement manager; null in memory.
  virtual const memory::GeminiManager* placement() const { return nullptr; }
  /// zero_grad: a new step begins (tiered: the first one is the warm-up that traces memory).
  virtual void begin_step() {}
  /// Before `chunks` of `unit` (its `phase`, at `position` of the recorded order, kNoPosition when unknown) are
  /// gathered: makes room for them. Throws memory::BudgetError when the budget cannot hold them.
  virtual void before_gather(size_t /*unit*/, memory::Phase /*phase*/, size_t /*position*/,
                             const std::vector<size_t>& /*chunks*/) {}
  /// After chunk c was gathered.
  virtual void after_gather(size_t /*c*/) {}
  /// Records the device bytes now into the placement's peaks.
  virtual void note() {}
  /// `bytes` of transient buffers allocated (+, after making room: BudgetError when impossible) or freed (−).
  virtual void add_transient(int64_t /*bytes*/) {}
  /// Before using chunk c's parameter shard: waits for its last copy between tiers.
  virtual void wait_shard(size_t /*c*/) {}
  /// Whether the strategy prefetches `next`'s chunks while `unit` runs at `position` of `unit_order` (forward, or
  /// backward): in memory always; tiered by the plan every rank agreed on after the warm-up (a prefetch is a
  /// collective), making room for the chunks first.
  virtual bool may_prefetch(bool /*forward*/, size_t /*position*/, size_t /*unit*/, size_t /*next*/,
                            const std::vector<size_t>& /*unit_order*/) {
    return true;
  }

 protected:
  /// The implementation's part of setup(): chunks_ and segments_ are set; fills segment_tensors_ and grad_shards_.
  virtual void build(const std::vector<ParamGroupSpec>& groups, const AdamWSettings& adamw) = 0;
  /// Chunk c's local shard (local_shard).
  at::Tensor local(size_t c) const { return local_shard(chunks_->chunk(c)); }
  /// The checkpoint keys of the segments, "<parameter>@<param_offset>", in segment order.
  std::vector<std::string> segment_keys() const;
  /// The checkpoint "layout" entry: [world size, Ψ, chunk elements, 3].
  std::vector<int64_t> shard_layout() const;
  /// ema -= (1 - decay) * (ema - float(master)), exactly train::EMA::update's expression (the same fp32 results).
  static void update_ema(at::Tensor& ema, const at::Tensor& master, double decay);

  dist::ProcessGroup& group_;
  const StrategyOptions options_;
  memory::ChunkManager* chunks_ = nullptr;  // set by setup()
  std::vector<Segment> segments_;
  std::vector<at::Tensor> segment_tensors_;  // per segment (see segment_tensors())
  std::vector<at::Tensor> grad_shards_;      // per chunk (see grad_shard())
};

/// zero3's shard optimizer: master, AdamW states and EMA shards in memory on the compute device.
std::unique_ptr<ShardOptimizer> make_in_memory_shard_optimizer(dist::ProcessGroup& group, StrategyOptions options);
/// gemini's shard optimizer: memory::GeminiManager places the optimizer blocks (device / host / disk) and the
/// parameter shards (device / host) under options.placement; disk blocks in options.offload_dir.
std::unique_ptr<ShardOptimizer> make_tiered_shard_optimizer(dist::ProcessGroup& group, StrategyOptions options);

}  // namespace zerodiff::parallel::detail
