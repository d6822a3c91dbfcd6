// zero3's shard optimizer (see ShardOptimizer.h): per chunk, this rank's master shard, gradient shard and EMA shard in
// memory on the compute device, beside the parameter shard. A chunk of the master's dtype (float32; bfloat16 under
// bf16-true) is its own master: the master is the parameter shard itself and AdamW writes the parameters directly;
// fp16/bf16 chunks pair with a master copy that step() casts back into the shard. AdamW is torch::optim::AdamW (or
// optim::HybridAdam with StrategyOptions::hybrid_adam) over views of the master shards, one per segment, so its
// moments live in the optimizer's per-parameter state (OptimizerBlock::exp_avg / exp_avg_sq stay undefined here).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/optim/adamw.h>

#include "ShardOptimizer.h"
#include "StrategyUtil.h"
#include "zerodiff/core/Error.h"

namespace zerodiff::parallel::detail {

namespace {

class InMemoryShardOptimizer final : public ShardOptimizer {
 public:
  using ShardOptimizer::ShardOptimizer;

  void set_lr(size_t group, double lr) override {
    ZD_CHECK(group < optimizer_->param_groups().size(), "no parameter group ", group);
    static_cast<torch::optim::AdamWOptions&>(optimizer_->param_groups()[group].options()).lr(lr);
  }

  void step(double ema_decay, const std::vector<size_t>& /*unit_order*/) override {
    optimizer_->step();
    torch::NoGradGuard no_grad;
    for (size_t c = 0; c < blocks_.size(); ++c) {
      OptimizerBlock& b = blocks_[c];
      if (!b.master.is_alias_of(local(c))) local(c).copy_(b.master);
      if (options_.ema) update_ema(b.ema, b.master, ema_decay);
    }
  }

  io::TensorMap state() override { return shard_state(*optimizer_, segment_tensors_, segment_keys(), shard_layout()); }

  void load_state(const io::TensorMap& saved, const std::string& where) override {
    load_shard_state(*optimizer_, segment_tensors_, segment_keys(), shard_layout(), "chunk size in MiB",
                     saved, where);
    for (size_t c = 0; c < blocks_.size(); ++c) {
      if (!blocks_[c].master.is_alias_of(local(c))) local(c).copy_(blocks_[c].master);
    }
  }

  void with_block(size_t c, const std::function<void(OptimizerBlock&)>& fn) override { fn(blocks_.at(c)); }

  void add_memory(MemoryReport& r) const override {
    for (size_t c = 0; c < blocks_.size(); ++c) {
      if (!blocks_[c].master.is_alias_of(local(c))) r.master_weights += nbytes(blocks_[c].master);  // fp16/bf16 chunks
      r.ema += nbytes(blocks_[c].ema);
    }
    r.optimizer_states = adam_state_bytes(*optimizer_);
  }

 protected:
  void build(const std::vector<ParamGroupSpec>& groups, const AdamWSettings& adamw) override {
    torch::NoGradGuard no_grad;
    const at::ScalarType master_dtype = options_.master_dtype;
    for (size_t c = 0; c < chunks_->num_chunks(); ++c) {
      const at::Tensor own = local(c);
      OptimizerBlock b;
      // The shard (or a kept chunk's full buffer) is the master when the chunk has the master's dtype.
      b.master = chunks_->chunk(c).dtype() == master_dtype ? own : own.to(master_dtype).clone();
      // The EMA starts as the master shard (train::EMA snapshots the parameters the same way), fp32 beside it.
      if (options_.ema) b.ema = b.master.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
      grad_shards_.push_back(at::zeros({own.numel()}, own.options().dtype(at::kFloat)));
      blocks_.push_back(std::move(b));
    }
    std::vector<std::vector<at::Tensor>> per_group(groups.size());
    for (const Segment& s : segments_) {
      segment_tensors_.push_back(blocks_[s.chunk].master.slice(0, s.shard_offset, s.shard_offset + s.numel));
      per_group[s.group].push_back(segment_tensors_.back());
    }
    std::vector<torch::optim::OptimizerParamGroup> opt_groups;
    for (size_t g = 0; g < groups.size(); ++g) {
      opt_groups.emplace_back(per_group[g],
                              std::make_unique<torch::optim::AdamWOptions>(adamw_options(groups[g].lr, adamw)));
    }
    optimizer_ = make_optimizer(std::move(opt_groups), adamw_options(groups[0].lr, adamw), options_.hybrid_adam);
  }

 private:
  std::vector<OptimizerBlock> blocks_;                  // per chunk: master (maybe the shard itself) and EMA
  std::unique_ptr<torch::optim::Optimizer> optimizer_;  // torch AdamW or HybridAdam (the same state types)
};

}  // namespace

std::unique_ptr<ShardOptimizer> make_in_memory_shard_optimizer(dist::ProcessGroup& group, StrategyOptions options) {
  return std::make_unique<InMemoryShardOptimizer>(group, std::move(options));
}

}  // namespace zerodiff::parallel::detail
