// gemini's shard optimizer (see ShardOptimizer.h): memory::GeminiManager decides, under a device budget, where each
// chunk's optimizer block (master, exp_avg, exp_avg_sq [, EMA]; OptimizerBlock) lives — the compute device, host memory
// or disk (memory::DiskStateStore) — and where its parameter shard lives (device or host); this file owns the blocks and
// moves them there, and answers the strategy's placement hooks around its gathers.
//
// Per step: AdamW runs chunk by chunk, each segment exactly as optim::HybridAdam steps it (the HybridAdam kernel on the
// CPU; ATen's fused AdamW on CUDA and for bf16-true blocks), reading disk blocks ahead and writing them behind; the
// updated master is copied into the parameter shard wherever that lives, and the EMA (part of the block, on its tier,
// counted in its bytes) is updated while the block is in memory (no extra disk traffic). The gradient shard lives
// beside the block (host memory for a block on disk).
//
// The first step is the warm-up: GeminiManager traces the non-model memory of every moment; at its end the auto
// policy moves the optimizer blocks that fit onto the device, and every rank agrees on where prefetching the next
// unit fits the budget (a prefetch is a collective: all ranks must make the same choice). Before that, nothing is
// prefetched.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <set>

#include "ShardOptimizer.h"
#include "StrategyUtil.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/kernels/Adam.h"
#include "zerodiff/memory/DiskStateStore.h"
#include "zerodiff/memory/GeminiManager.h"

namespace zerodiff::parallel::detail {

namespace {

using memory::Tier;

class TieredShardOptimizer final : public ShardOptimizer {
 public:
  using ShardOptimizer::ShardOptimizer;

  // ---------------------------------------------------------------- the optimizer step

  void set_lr(size_t group, double lr) override {
    ZD_CHECK(group < group_lr_.size(), "no parameter group ", group);
    group_lr_[group] = lr;
  }

  // AdamW chunk by chunk: each segment exactly as optim::HybridAdam (CPU) or its fused ATen path (CUDA) steps it.
  void step(double ema_decay, const std::vector<size_t>& unit_order) override {
    torch::NoGradGuard no_grad;
    const size_t n = chunks_->num_chunks();
    auto next_on_disk = [&](size_t from) {
      for (size_t c = from; c < n; ++c) {
        if (placement_->optim_tier(c) == Tier::disk) return c;
      }
      return kNoPosition;
    };
    if (disk_ && next_on_disk(0) != kNoPosition) disk_->prefetch(next_on_disk(0));
    for (size_t c = 0; c < n; ++c) {
      const bool on_disk = placement_->optim_tier(c) == Tier::disk;
      OptimizerBlock block = fetch_block(c);
      if (on_disk) {
        if (const size_t next = next_on_disk(c + 1); next != kNoPosition) disk_->prefetch(next);  // read-ahead
      }
      bool changed = false;
      for (size_t k = chunk_segments_[c].first; k < chunk_segments_[c].second; ++k) {
        const at::Tensor& grad = segment_tensors_[k].grad();
        if (!grad.defined()) continue;  // unused by every rank: no update (torch's AdamW skips it too)
        const Segment& seg = segments_[k];
        at::Tensor p = block.master.slice(0, seg.shard_offset, seg.shard_offset + seg.numel);
        at::Tensor m = block.exp_avg.slice(0, seg.shard_offset, seg.shard_offset + seg.numel);
        at::Tensor v = block.exp_avg_sq.slice(0, seg.shard_offset, seg.shard_offset + seg.numel);
        const int64_t step = ++segment_step_[k];
        const double lr = group_lr_[seg.group];
        if (p.is_cuda() || p.scalar_type() != at::kFloat) {  // (CUDA, or bf16-true blocks: ATen's fused AdamW)
          at::_fused_adamw_({p}, {grad}, {m}, {v}, {}, {at::full({}, static_cast<double>(step), p.options())}, lr,
                            adamw_.beta1, adamw_.beta2, adamw_.weight_decay, adamw_.eps, false, false);
        } else {
          kernels::AdamStepArgs args;
          args.lr = lr;
          args.beta1 = adamw_.beta1;
          args.beta2 = adamw_.beta2;
          args.eps = adamw_.eps;
          args.weight_decay = adamw_.weight_decay;
          args.step = step;
          kernels::adam_step_cpu(p, grad.contiguous(), m, v, args);
        }
        changed = true;
      }
      if (changed) {
        placement_->wait_shard(c);
        local(c).copy_(block.master, /*non_blocking=*/true);  // the compute copy, on its own tier
      }
      if (options_.ema) update_ema(block.ema, block.master, ema_decay);  // (every chunk, as train::EMA updates all)
      store_block(c, std::move(block));                                 // write-behind
    }
    flush();
    if (placement_->warming_up()) end_warmup(unit_order);
  }

  io::TensorMap state() override {
    torch::NoGradGuard no_grad;
    io::TensorMap out;
    out["layout"] = at::tensor(shard_layout());
    const auto keys = segment_keys();
    for (size_t c = 0; c < chunks_->num_chunks(); ++c) {
      OptimizerBlock block = fetch_block(c);
      for (size_t k = chunk_segments_[c].first; k < chunk_segments_[c].second; ++k) {
        const Segment& seg = segments_[k];
        auto part = [&](const at::Tensor& t) {
          return t.slice(0, seg.shard_offset, seg.shard_offset + seg.numel).cpu().clone();
        };
        out[keys[k] + ".master"] = part(block.master);
        if (segment_step_[k] == 0) continue;  // no update yet
        out[keys[k] + ".exp_avg"] = part(block.exp_avg);
        out[keys[k] + ".exp_avg_sq"] = part(block.exp_avg_sq);
        out[keys[k] + ".step"] = at::tensor(segment_step_[k], at::kLong);
      }
      store_block(c, std::move(block));
    }
    flush();
    return out;
  }

  void load_state(const io::TensorMap& saved, const std::string& where) override {
    check_shard_layout(shard_layout(), "chunk size in MiB", saved, where);
    torch::NoGradGuard no_grad;
    const auto keys = segment_keys();
    for (size_t c = 0; c < chunks_->num_chunks(); ++c) {
      OptimizerBlock block = fetch_block(c);
      for (size_t k = chunk_segments_[c].first; k < chunk_segments_[c].second; ++k) {
        const Segment& seg = segments_[k];
        auto part = [&](at::Tensor& t) { return t.slice(0, seg.shard_offset, seg.shard_offset + seg.numel); };
        auto find = [&](const char* what) {
          auto it = saved.find(keys[k] + what);
          return it == saved.end() ? at::Tensor() : it->second;
        };
        const at::Tensor master = find(".master"), m = find(".exp_avg"), v = find(".exp_avg_sq"), st = find(".step");
        if (!master.defined() || master.numel() != seg.numel) {
          throw IoError(zerodiff::str(where, ": master weights of '", keys[k], "' are missing or have the wrong size"));
        }
        part(block.master).copy_(master.reshape(-1));
        if (!m.defined()) {  // no update yet when saved
          part(block.exp_avg).zero_();
          part(block.exp_avg_sq).zero_();
          segment_step_[k] = 0;
          continue;
        }
        if (!v.defined() || !st.defined() || m.numel() != seg.numel || v.numel() != seg.numel) {
          throw IoError(zerodiff::str(where, ": optimizer state of '", keys[k], "' is incomplete or has the wrong shape"));
        }
        part(block.exp_avg).copy_(m.reshape(-1));
        part(block.exp_avg_sq).copy_(v.reshape(-1));
        segment_step_[k] = st.item<int64_t>();
      }
      placement_->wait_shard(c);
      local(c).copy_(block.master);
      store_block(c, std::move(block));
    }
    flush();
  }

  // ---------------------------------------------------------------- the blocks

  void with_block(size_t c, const std::function<void(OptimizerBlock&)>& fn) override {
    OptimizerBlock block = fetch_block(c);
    fn(block);
    store_block(c, std::move(block));
  }
  void flush() override {
    if (disk_) disk_->flush();
  }
  at::Tensor stash(const at::Tensor& shard) const override {
    return shard.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);  // (outside the device budget)
  }
  void add_memory(MemoryReport& r) const override {
    for (const OptimizerBlock& b : blocks_) {  // in memory (device or host); disk blocks are not
      if (!b.master.defined()) continue;
      r.master_weights += nbytes(b.master);
      r.optimizer_states += nbytes(b.exp_avg) + nbytes(b.exp_avg_sq);
      r.ema += nbytes(b.ema);
    }
  }

  // ---------------------------------------------------------------- placement of the parameter shards

  const memory::GeminiManager* placement() const override { return placement_.get(); }
  void begin_step() override { placement_->begin_warmup(); }  // (the first step is the warm-up; no-op afterwards)
  void before_gather(size_t unit, memory::Phase phase, size_t position, const std::vector<size_t>& chunks) override {
    placement_->on_event(unit, phase, position);
    placement_->prepare_gather(chunks, chunks_->unit_name(unit));
  }
  void after_gather(size_t c) override { placement_->after_gather(c); }
  void note() override { placement_->note(); }
  void add_transient(int64_t bytes) override { placement_->add_transient(bytes); }
  void wait_shard(size_t c) override { placement_->wait_shard(c); }

  // Never in the warm-up step; afterwards by the plan every rank agreed on, making room for the chunks first.
  bool may_prefetch(bool forward, size_t pos, size_t unit, size_t next, const std::vector<size_t>& order) override {
    if (!plan_ready_ || pos == kNoPosition || pos >= order.size() || !(forward ? prefetch_fwd_ : prefetch_bwd_)[pos]) {
      return false;
    }
    int64_t bytes = 0;
    for (size_t c : chunks_->unit_chunks(next)) {
      if (!chunks_->chunk(c).gathered()) bytes += chunks_->chunk(c).chunk_bytes();
    }
    std::vector<size_t> keep = chunks_->unit_chunks(unit);
    keep.insert(keep.end(), chunks_->unit_chunks(next).begin(), chunks_->unit_chunks(next).end());
    placement_->reserve(bytes, keep, zerodiff::str("the prefetched chunks of unit '", chunks_->unit_name(next), "'"));
    for (size_t c : chunks_->unit_chunks(next)) placement_->wait_shard(c);
    return true;
  }

 protected:
  // Masters and gradient shards are built in host memory and placed on their tiers afterwards: nothing outside the
  // budget on the device.
  void build(const std::vector<ParamGroupSpec>& groups, const AdamWSettings& adamw) override {
    torch::NoGradGuard no_grad;
    const at::ScalarType master_dtype = options_.master_dtype;
    std::vector<at::Tensor> masters;
    for (size_t c = 0; c < chunks_->num_chunks(); ++c) {
      const at::Tensor own = local(c);
      masters.push_back(own.to(at::TensorOptions().device(at::kCPU).dtype(master_dtype), false, /*copy=*/true));
      grad_shards_.push_back(at::zeros({own.numel()}, own.options().dtype(at::kFloat).device(at::kCPU)));
    }
    // A handle without storage per segment carries its gradient (the master may be on disk).
    for (const Segment& s : segments_) {
      segment_tensors_.push_back(at::empty({0}, local(s.chunk).options().dtype(master_dtype)));
    }
    adamw_ = adamw;
    for (const auto& g : groups) group_lr_.push_back(g.lr);
    segment_step_.assign(segments_.size(), 0);
    chunk_segments_.assign(chunks_->num_chunks(), {segments_.size(), 0});
    for (size_t k = 0; k < segments_.size(); ++k) {
      auto& [lo, hi] = chunk_segments_[segments_[k].chunk];
      lo = std::min(lo, k);
      hi = std::max(hi, k + 1);
    }
    const c10::Device device = chunks_->chunk(0).device();
    const int64_t block_bytes = 3 * static_cast<int64_t>(c10::elementSize(master_dtype)) + 4 +  // + fp32 gradient
                                (options_.ema ? 4 : 0);                                        // + fp32 EMA
    placement_ = std::make_unique<memory::GeminiManager>(*chunks_, device, options_.placement, block_bytes, &group_);
    if (options_.placement.disk) {
      if (master_dtype != at::kFloat) {
        throw NotImplementedError("gemini: optimizer states on disk are float32 only; with bf16-true keep them in "
                                  "host memory (PlacementOptions::disk false)");
      }
      ZD_CHECK(!options_.offload_dir.empty(), "gemini: optimizer states on disk need an offload directory "
                                              "(StrategyOptions::offload_dir)");
      disk_ = std::make_unique<memory::DiskStateStore>(options_.offload_dir, group_.rank());
      disk_->set_pinned(device.is_cuda());
    }
    blocks_.resize(chunks_->num_chunks());
    for (size_t c = 0; c < chunks_->num_chunks(); ++c) {
      OptimizerBlock block{masters[c], at::zeros_like(masters[c]), at::zeros_like(masters[c]), at::Tensor()};
      if (options_.ema) block.ema = masters[c].to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
      masters[c] = at::Tensor();  // (the block holds the master)
      place_block(c, std::move(block), placement_->optim_tier(c));
    }
    placement_->reset_peaks();
    ZD_LOG_INFO(placement_->summary());
  }

 private:
  at::TensorOptions tier_options(Tier tier) const {
    const c10::Device device = chunks_->chunk(0).device();
    const auto base = at::TensorOptions();
    return tier == Tier::device ? base.device(device) : base.device(at::kCPU).pinned_memory(device.is_cuda());
  }

  // Puts `block` (and the chunk's gradient shard) on `tier`: copies into fresh tensors there, or into the disk store.
  void place_block(size_t c, OptimizerBlock block, Tier tier) {
    torch::NoGradGuard no_grad;
    const auto opts = tier_options(tier);
    auto moved = [&](const at::Tensor& t) {
      at::Tensor out = at::empty(t.sizes(), opts.dtype(t.scalar_type()));
      out.copy_(t);
      return out;
    };
    grad_shards_[c] = moved(grad_shards_[c]);
    std::vector<at::Tensor> tensors = std::move(block).take_tensors();
    if (tier == Tier::disk) {
      for (auto& t : tensors) t = t.to(at::kCPU).contiguous();  // (the store reads and writes host memory)
      disk_->add(c, tensors);
      blocks_[c] = OptimizerBlock{};
    } else {
      for (auto& t : tensors) t = moved(t);
      blocks_[c] = OptimizerBlock::from_tensors(std::move(tensors));
    }
  }

  // The block of chunk c in memory (read from disk if it lives there: then hand it back with store_block).
  OptimizerBlock fetch_block(size_t c) {
    return placement_->optim_tier(c) == Tier::disk ? OptimizerBlock::from_tensors(disk_->fetch(c)) : blocks_[c];
  }
  void store_block(size_t c, OptimizerBlock block) {
    if (placement_->optim_tier(c) == Tier::disk) disk_->write_back(c, std::move(block).take_tensors());
  }

  // After the warm-up step: the auto policy moves the optimizer blocks that fit onto the device; every rank agrees on
  // the prefetch plan.
  void end_warmup(const std::vector<size_t>& order) {
    std::vector<Tier> before;
    for (size_t c = 0; c < chunks_->num_chunks(); ++c) before.push_back(placement_->optim_tier(c));
    for (size_t c : placement_->end_warmup(order)) {
      // (the manager counts the block on the device already: room is made by evicting parameter shards)
      placement_->reserve(0, {}, zerodiff::str("the optimizer states of chunk ", c));
      std::vector<at::Tensor> from_disk;
      if (before[c] == Tier::disk) from_disk = disk_->fetch(c);
      place_block(c, before[c] == Tier::disk ? OptimizerBlock::from_tensors(from_disk) : blocks_[c], Tier::device);
      if (before[c] == Tier::disk) disk_->write_back(c, std::move(from_disk));  // hands the buffers back
    }
    plan_prefetch(order);
    ZD_LOG_INFO("after the warm-up step: ", placement_->summary(), "; prefetching at ",
                std::count(prefetch_fwd_.begin(), prefetch_fwd_.end(), 1), " of ", order.size(), " forward and ",
                std::count(prefetch_bwd_.begin(), prefetch_bwd_.end(), 1), " backward unit starts");
  }

  // Prefetch at an event only where its measured non-model peak, the chunks of the unit and of the one prefetched
  // (backward: plus the reduce buffers in flight), the kept-gathered chunks and the optimizer blocks on the device fit
  // the budget on every rank.
  void plan_prefetch(const std::vector<size_t>& order) {
    int64_t fixed = 0;
    for (size_t c = 0; c < chunks_->num_chunks(); ++c) {
      if (chunks_->chunk(c).keep_gathered()) fixed += chunks_->chunk(c).chunk_bytes();
      if (placement_->optim_tier(c) == Tier::device) fixed += placement_->optim_block_bytes(c);
    }
    const size_t n = order.size();
    std::vector<int32_t> ok(2 * n, 0);
    for (size_t p = 0; p < n; ++p) {
      for (const bool forward : {true, false}) {
        if (forward ? p + 1 >= n : p == 0) continue;
        const size_t unit = order[p], next = order[forward ? p + 1 : p - 1];
        std::set<size_t> cs(chunks_->unit_chunks(unit).begin(), chunks_->unit_chunks(unit).end());
        cs.insert(chunks_->unit_chunks(next).begin(), chunks_->unit_chunks(next).end());
        int64_t working = forward ? 0 : placement_->backward_margin();
        for (size_t c : cs) {
          if (!chunks_->chunk(c).keep_gathered()) working += chunks_->chunk(c).chunk_bytes();
        }
        const int64_t nm =
            placement_->non_model_peak(zerodiff::str(forward ? "forward " : "backward ", chunks_->unit_name(unit)));
        ok[forward ? p : n + p] = nm + working + fixed <= placement_->budget();
      }
    }
    at::Tensor agreed = at::tensor(ok, at::kInt).to(chunks_->chunk(0).device());
    if (group_.size() > 1) group_.all_reduce(agreed, "gemini_prefetch_plan", dist::ReduceOp::min);
    agreed = agreed.cpu();
    const int32_t* a = agreed.data_ptr<int32_t>();
    prefetch_fwd_.assign(a, a + n);
    prefetch_bwd_.assign(a + n, a + 2 * n);
    plan_ready_ = true;
  }

  std::unique_ptr<memory::GeminiManager> placement_;
  std::unique_ptr<memory::DiskStateStore> disk_;           // with optimizer states on disk
  std::vector<OptimizerBlock> blocks_;                     // per chunk, in memory (empty for a block on disk)
  std::vector<std::pair<size_t, size_t>> chunk_segments_;  // segment range [first, second) per chunk
  std::vector<int64_t> segment_step_;                      // AdamW step count per segment
  std::vector<double> group_lr_;
  AdamWSettings adamw_;
  std::vector<uint8_t> prefetch_fwd_, prefetch_bwd_;  // per order position, agreed by every rank
  bool plan_ready_ = false;
};

}  // namespace

std::unique_ptr<ShardOptimizer> make_tiered_shard_optimizer(dist::ProcessGroup& group, StrategyOptions options) {
  return std::make_unique<TieredShardOptimizer>(group, std::move(options));
}

}  // namespace zerodiff::parallel::detail
