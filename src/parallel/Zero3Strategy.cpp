// zero3 and gemini: parameters sharded in chunks (memory::ChunkManager), gathered per unit while it runs
// (the public type: include/zerodiff/parallel/ChunkedStrategy.h). References: ZeRO stage 3 (Rajbhandari et al. 2020,
// §5.3) and ColossalAI's GeminiDDP / ZeroDDP hooks (colossalai/zero/gemini): gather a unit's chunks before its forward,
// release them after; gather again when the gradient of the unit's output arrives; reduce-scatter a chunk as soon as
// all its gradients are in and keep only the shard.
//
// This file owns the movement of parameters and gradients: the units and their hooks, gathers and prefetches,
// releases, the reduce-scatters into the gradient shards, the used-parameter flags, clipping and the whole-model
// gathers; with StrategyOptions::ema it owns the ShardedEma capability (ChunkedEma.h). What happens to a shard in the
// optimizer step — its master, AdamW states, EMA shard and gradient shard, and where they live — belongs to the
// ShardOptimizer chosen at construction (ShardOptimizer.h): in memory for zero3, tiered (device / host / disk) for
// gemini. The strategy calls the shard optimizer's placement hooks around every gather (no-ops in memory); nothing
// here asks which one it has.
//
// Per step and rank, communication is: all-gather of every used chunk in forward and again in backward, and one
// reduce-scatter of every chunk per micro-batch (3Ψ in total with one micro-batch).
#include "Zero3Strategy.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <mutex>

#include "ChunkedEma.h"
#include "ShardOptimizer.h"
#include "StrategyUtil.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/memory/ChunkManager.h"

namespace zerodiff::parallel::detail {

namespace {

using memory::TensorState;

class Zero3Strategy final : public ChunkedStrategy, public UnitHooks {
 public:
  /// `shards` is the shard optimizer `kind` uses (in memory for zero3, tiered for gemini).
  Zero3Strategy(std::shared_ptr<dist::ProcessGroup> group, StrategyOptions options, StrategyKind kind,
                std::unique_ptr<ShardOptimizer> shards)
      : ChunkedStrategy(std::move(group)), options_(std::move(options)), kind_(kind), shards_(std::move(shards)) {
    if (options_.ema) {
      ema_ = std::make_unique<ChunkedEma>(std::string(name_of(kind_)), *group_, *shards_, mutex_, held_full_);
    }
  }
  ~Zero3Strategy() override {
    for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
  }

  StrategyKind kind() const override { return kind_; }
  bool sharded() const override { return true; }
  bool replicated_parameters() const override { return false; }
  void set_units(std::vector<UnitSpec> units) override { units_ = std::move(units); }
  UnitHooks* unit_hooks() override { return this; }
  const memory::ChunkManager& chunks() const override {
    ZD_CHECK(manager_ != nullptr, "strategy ", name(), ": chunks() before setup()");
    return *manager_;
  }
  const memory::GeminiManager* placement() const override { return shards_->placement(); }
  ShardedEma* sharded_ema() override { return ema_.get(); }

  void setup(std::vector<ParamGroupSpec> groups, const std::vector<at::Tensor>& broadcast,
             const AdamWSettings& adamw) override {
    check_groups(groups);
    ZD_CHECK(!units_.empty(), "strategy zero3 needs the model's sharding units (set_units before setup)");
    broadcast_from_rank0(*group_, broadcast);
    std::map<const void*, size_t> group_of;
    std::map<const void*, std::string> name_of;
    for (size_t g = 0; g < groups.size(); ++g) {
      for (const auto& [name, p] : groups[g].params) {
        group_of[p.unsafeGetTensorImpl()] = g;
        name_of[p.unsafeGetTensorImpl()] = name;
      }
    }
    // Units keep only trainable parameters (frozen ones stay whole, outside chunks).
    std::vector<memory::UnitParams> unit_params;
    std::map<const void*, bool> covered;
    for (const auto& u : units_) {
      memory::UnitParams up{u.name, {}};
      for (const auto& [name, p] : u.params) {
        if (!group_of.count(p.unsafeGetTensorImpl())) continue;
        up.params.emplace_back(name_of[p.unsafeGetTensorImpl()], p);
        covered[p.unsafeGetTensorImpl()] = true;
      }
      unit_params.push_back(std::move(up));
    }
    for (const auto& g : groups) {
      for (const auto& [name, p] : g.params) {
        ZD_CHECK(covered.count(p.unsafeGetTensorImpl()), "parameter '", name,
                 "' is in no sharding unit of the model; zero3 gathers parameters unit by unit, so every trainable "
                 "parameter must belong to one of the units the module lists");
      }
    }
    manager_ = std::make_unique<memory::ChunkManager>(*group_, unit_params, options_.chunk_numel,
                                                      options_.keep_gathered_numel);
    const size_t n_params = manager_->params().size();
    // Unit -> parameter indices (for "used in this forward").
    std::map<const void*, size_t> index_of;
    for (size_t i = 0; i < n_params; ++i) index_of[manager_->params()[i].second.unsafeGetTensorImpl()] = i;
    unit_param_index_.resize(unit_params.size());
    for (size_t u = 0; u < unit_params.size(); ++u) {
      for (const auto& [_, p] : unit_params[u].params) unit_param_index_[u].push_back(index_of.at(p.unsafeGetTensorImpl()));
    }
    // This rank's segments (its run of each parameter in each chunk), for AdamW; the shard optimizer builds the
    // masters, gradient shards and optimizer state over them.
    const int rank = group_->rank();
    std::vector<Segment> segments;
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      const memory::Chunk& chunk = manager_->chunk(c);
      const int64_t lo_part = chunk.keep_gathered() ? 0 : rank * chunk.shard_numel();
      const int64_t hi_part = lo_part + local_shard(chunk).numel();
      for (const auto& ct : chunk.tensors()) {
        const int64_t lo = std::max(ct.offset, lo_part), hi = std::min(ct.offset + ct.numel, hi_part);
        if (lo >= hi) continue;
        segments.push_back(Segment{c, index_of.at(ct.param.unsafeGetTensorImpl()), lo - ct.offset, lo - lo_part,
                                   hi - lo, group_of.at(ct.param.unsafeGetTensorImpl())});
      }
    }
    shards_->setup(*manager_, std::move(segments), groups, adamw);
    if (ema_) ema_->attach(*manager_);
    // Gradient-ready hooks.
    expected_.assign(n_params, 0);
    ready_.assign(n_params, 0);
    locally_used_.assign(n_params, 0);
    globally_used_.assign(n_params, 0);
    chunk_pending_.assign(manager_->num_chunks(), 0);
    chunk_done_.assign(manager_->num_chunks(), 0);
    active_.assign(manager_->num_chunks(), 0);
    buffers_.resize(manager_->num_chunks());
    for (size_t i = 0; i < n_params; ++i) {
      const at::Tensor& p = manager_->params()[i].second;
      auto acc = torch::autograd::impl::grad_accumulator(p);
      ZD_CHECK(acc != nullptr, "parameter '", manager_->params()[i].first, "' has no gradient accumulator");
      hook_keys_.push_back(acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
            on_grad(i);
            return outputs;
          })));
      accumulators_.push_back(std::move(acc));
    }
  }

  // ---------------------------------------------------------------- unit hooks (forward)

  void pre_forward(size_t unit) override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    ZD_CHECK(manager_ && unit < manager_->num_units(), "zero3: unit ", unit, " of ",
             manager_ ? manager_->num_units() : 0, " (pre_forward before setup or a wrong unit index)");
    if (recording_) order_.push_back(unit);
    position_ = position_of(unit, position_);
    for (size_t i : unit_param_index_[unit]) expected_[i] = 1;
    // While the whole model is held gathered (sampling, export) nothing is placed or prefetched: that gather is outside
    // the budget, and only some ranks run units then.
    const bool place = !held_full_;
    if (place) shards_->before_gather(unit, memory::Phase::forward, position_, manager_->unit_chunks(unit));
    const memory::ModelDataScope model_data;  // (gemini's memory tracer: these allocations are model data)
    for (size_t c : manager_->unit_chunks(unit)) {
      memory::Chunk& chunk = manager_->chunk(c);
      chunk.gather(*group_, /*async=*/false);
      chunk.wait();
      if (place) shards_->after_gather(c);
      for (size_t t = 0; t < chunk.tensors().size(); ++t) {
        if (chunk.tensors()[t].state == TensorState::HOLD) chunk.set_state(t, TensorState::COMPUTE);
      }
      ++active_[c];
    }
    // Prefetch the next unit (of the recorded execution order; while recording, the next index).
    if (const size_t next = next_unit(unit);
        place && next != kNoPosition && shards_->may_prefetch(true, position_, unit, next, order_)) {
      for (size_t c : manager_->unit_chunks(next)) manager_->chunk(c).gather(*group_, /*async=*/true);
    }
    manager_->note_resident();
    if (place) shards_->note();
  }

  void post_forward(size_t unit, const std::vector<at::Tensor>& outputs) override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    // Chunks the next unit needs stay gathered.
    std::vector<size_t> next;
    if (const size_t n = next_unit(unit); n != kNoPosition) next = manager_->unit_chunks(n);
    for (size_t c : manager_->unit_chunks(unit)) {
      memory::Chunk& chunk = manager_->chunk(c);
      if (--active_[c] > 0) continue;
      for (size_t t = 0; t < chunk.tensors().size(); ++t) {
        if (chunk.tensors()[t].state == TensorState::COMPUTE) chunk.set_state(t, TensorState::HOLD);
      }
      if (!in_backward_ && !held_full_ && std::find(next.begin(), next.end(), c) == next.end()) chunk.release();
    }
    if (in_backward_ || !at::GradMode::is_enabled()) return;
    for (const auto& out : outputs) {
      if (!out.defined() || !out.requires_grad()) continue;
      at::Tensor o = out;
      o.register_hook([this, unit](const at::Tensor&) { pre_backward(unit); });
    }
  }

  // ---------------------------------------------------------------- backward

  void begin_backward(bool last) override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    (void)last;
    armed_ = true;
    in_backward_ = false;
    std::fill(ready_.begin(), ready_.end(), 0);
    std::fill(chunk_done_.begin(), chunk_done_.end(), 0);
    counted_ = false;  // the pending counts come from this micro-batch's forward: counted at backward's first event
    next_launch_ = static_cast<int64_t>(manager_->num_chunks()) - 1;
    if (recording_ && !order_.empty()) recording_ = false;  // the first forward recorded the execution order
  }

  // Gradients each chunk waits for in this backward: those of the parameters whose units ran in the forward.
  // (Counted at the first backward event, so begin_backward may come before or after the forward.)
  void count_pending() {
    if (counted_) return;
    counted_ = true;
    std::fill(chunk_pending_.begin(), chunk_pending_.end(), 0);
    for (size_t i = 0; i < expected_.size(); ++i) {
      if (expected_[i]) ++chunk_pending_[manager_->location(i).first];
    }
  }

  void pre_backward(size_t unit) {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (!armed_) return;
    count_pending();
    in_backward_ = true;
    const size_t pos = last_position_of(unit);
    std::vector<size_t> needed;
    for (size_t c : manager_->unit_chunks(unit)) {
      if (!chunk_done_[c]) needed.push_back(c);  // (the others have all their gradients in already)
    }
    shards_->before_gather(unit, memory::Phase::backward, pos, needed);
    const memory::ModelDataScope model_data;
    for (size_t c : needed) {
      memory::Chunk& chunk = manager_->chunk(c);
      chunk.gather(*group_, /*async=*/false);
      chunk.wait();
      shards_->after_gather(c);
    }
    // Prefetch the unit that ran before this one.
    if (pos != kNoPosition && pos > 0) {
      std::vector<size_t> prev;
      for (size_t c : manager_->unit_chunks(order_[pos - 1])) {
        if (!chunk_done_[c]) prev.push_back(c);
      }
      // (nothing is prefetched while the whole model is held: see pre_forward)
      if (!held_full_ && shards_->may_prefetch(false, pos, unit, order_[pos - 1], order_)) {
        for (size_t c : prev) manager_->chunk(c).gather(*group_, /*async=*/true);
      }
    }
    manager_->note_resident();
    shards_->note();
  }

  void on_grad(size_t param) {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (!armed_) return;
    count_pending();
    const auto [c, t] = manager_->location(param);
    if (ready_[param]) {
      throw Error(zerodiff::str("parameter '", manager_->params()[param].first,
                                "' received its gradient twice in one backward (shared by two activation-checkpointed "
                                "blocks?); zero3 needs one gradient per parameter per backward"));
    }
    if (chunk_done_[c]) {
      throw Error(zerodiff::str("parameter '", manager_->params()[param].first,
                                "' got a gradient after its chunk was reduced: it was used outside the sharding unit "
                                "it belongs to (zero3 gathers a parameter only while its unit runs)"));
    }
    ready_[param] = 1;
    memory::Chunk& chunk = manager_->chunk(c);
    if (chunk.gathered()) chunk.set_state(t, TensorState::HOLD_AFTER_BWD);
    if (expected_[param] && --chunk_pending_[c] == 0) complete_chunk(c);
  }

  // The chunk's gradients go into a reduce buffer; its gathered parameters are released at once.
  void complete_chunk(size_t c) {
    memory::Chunk& chunk = manager_->chunk(c);
    shards_->add_transient(chunk.chunk_bytes());  // (the gathered chunk is released just below)
    const memory::ModelDataScope model_data;
    at::Tensor buffer = at::zeros({chunk.chunk_numel()}, local_shard(chunk).options());
    for (size_t t = 0; t < chunk.tensors().size(); ++t) {
      auto& ct = chunk.tensors()[t];
      at::Tensor p = ct.param;
      if (p.grad().defined()) {
        buffer.slice(0, ct.offset, ct.offset + ct.numel).copy_(p.grad().reshape(-1));
        p.mutable_grad().reset();
      }
      if (chunk.gathered()) {
        if (ct.state != TensorState::HOLD_AFTER_BWD) chunk.set_state(t, TensorState::HOLD_AFTER_BWD);
        chunk.set_state(t, TensorState::READY_FOR_REDUCE);
        chunk.set_state(t, TensorState::HOLD);
      }
    }
    chunk.release();
    buffers_[c] = buffer;
    chunk_done_[c] = 1;
    // Reduce-scatters go out strictly from the last chunk down, the same order on every rank.
    while (next_launch_ >= 0 && chunk_done_[static_cast<size_t>(next_launch_)]) launch(static_cast<size_t>(next_launch_--));
  }

  void launch(size_t c) {
    InFlight f;
    f.chunk = c;
    f.buffer = std::move(buffers_[c]);
    f.transient = nbytes(f.buffer);
    if (manager_->chunk(c).keep_gathered()) {
      // A small unit's chunk stays whole on every rank: its gradients are all-reduced.
      f.output = f.buffer;
      f.work = group_->all_reduce(f.buffer, "grad_all_reduce", dist::ReduceOp::sum, /*async=*/true);
    } else {
      const int64_t out_bytes = manager_->chunk(c).shard_numel() * static_cast<int64_t>(f.buffer.element_size());
      shards_->add_transient(out_bytes);
      const memory::ModelDataScope model_data;
      f.output = at::empty({manager_->chunk(c).shard_numel()}, f.buffer.options());
      f.transient += out_bytes;
      f.work = group_->reduce_scatter(f.output, f.buffer, "grad_reduce_scatter", /*async=*/true);
    }
    in_flight_.push_back(std::move(f));
    while (in_flight_.size() > 2) complete_oldest();
  }

  void complete_oldest() {
    InFlight f = std::move(in_flight_.front());
    in_flight_.pop_front();
    f.work.wait();
    at::Tensor& g = shards_->grad_shard(f.chunk);  // (wherever the shard optimizer keeps it)
    g.add_(f.output.to(g.device(), at::kFloat).div_(static_cast<double>(group_->size())));
    shards_->add_transient(-f.transient);
  }

  void end_backward(bool last) override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (!armed_) return;
    count_pending();
    for (size_t i = 0; i < ready_.size(); ++i) {
      if (ready_[i]) locally_used_[i] = 1;
    }
    // Chunks still waiting (a parameter of theirs got no gradient) are completed now, then everything is sent.
    for (int64_t c = static_cast<int64_t>(manager_->num_chunks()) - 1; c >= 0; --c) {
      if (!chunk_done_[static_cast<size_t>(c)]) complete_chunk(static_cast<size_t>(c));
    }
    ZD_INTERNAL_ASSERT(next_launch_ < 0, "zero3: chunks left unsent");
    if (last) {
      at::Tensor used = at::tensor(std::vector<int32_t>(locally_used_.begin(), locally_used_.end()), at::kInt)
                            .to(manager_->chunk(0).device());  // (the backend's device; gemini's shards may be on the host)
      group_->all_reduce(used, "grad_used_flags", dist::ReduceOp::max);
      used = used.cpu();
      globally_used_.assign(used.data_ptr<int32_t>(), used.data_ptr<int32_t>() + used.numel());
    }
    while (!in_flight_.empty()) complete_oldest();
    armed_ = false;
    in_backward_ = false;
    std::fill(expected_.begin(), expected_.end(), 0);
    position_ = kNoPosition;
    manager_->release_all();  // prefetched chunks that no unit used
    if (!last) return;
    const auto& segments = shards_->segments();
    std::vector<at::Tensor>& segment_tensors = shards_->segment_tensors();
    for (size_t k = 0; k < segments.size(); ++k) {
      const Segment& s = segments[k];
      at::Tensor grad;
      if (globally_used_[s.param]) {
        grad = shards_->grad_shard(s.chunk).slice(0, s.shard_offset, s.shard_offset + s.numel);
        // AdamW sees gradients in the master's dtype (bf16-true: bf16; the reduction itself ran in fp32).
        if (grad.scalar_type() != options_.master_dtype) grad = grad.to(options_.master_dtype);
      }
      segment_tensors[k].mutable_grad() = grad;
    }
  }

  // ---------------------------------------------------------------- optimizer

  void set_lr(size_t group, double lr) override { shards_->set_lr(group, lr); }

  // After an exception inside a unit, its tensors may still be COMPUTE with an active count: back to HOLD.
  void recover() {
    std::fill(active_.begin(), active_.end(), 0);
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      memory::Chunk& chunk = manager_->chunk(c);
      for (size_t t = 0; t < chunk.tensors().size(); ++t) {
        const auto st = chunk.tensors()[t].state;
        if (st == TensorState::COMPUTE) chunk.set_state(t, TensorState::HOLD);
        if (st == TensorState::HOLD_AFTER_BWD) chunk.set_state(t, TensorState::READY_FOR_REDUCE);
        if (chunk.tensors()[t].state == TensorState::READY_FOR_REDUCE) chunk.set_state(t, TensorState::HOLD);
      }
    }
    armed_ = in_backward_ = false;
  }

  void zero_grad() override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    recover();
    for (const auto& [_, p] : manager_->params()) {
      at::Tensor q = p;
      q.mutable_grad().reset();
    }
    for (auto& s : shards_->segment_tensors()) s.mutable_grad().reset();
    for (size_t c = 0; c < manager_->num_chunks(); ++c) shards_->grad_shard(c).zero_();
    std::fill(locally_used_.begin(), locally_used_.end(), 0);
    std::fill(expected_.begin(), expected_.end(), 0);
    held_full_ = false;
    manager_->release_all();
    manager_->reset_peak();
    shards_->begin_step();
  }
  std::vector<at::Tensor> gradient_tensors() override { return shards_->segment_tensors(); }
  double clip_grad_norm(double max_norm) override {
    // (on the backend's device; gemini's gradient shards may live on either tier)
    at::Tensor sq = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(manager_->chunk(0).device()));
    const auto& segments = shards_->segments();
    std::vector<at::Tensor>& segment_tensors = shards_->segment_tensors();
    for (size_t k = 0; k < segment_tensors.size(); ++k) {
      const at::Tensor& s = segment_tensors[k];
      // A kept chunk's gradients are whole on every rank: rank 0 alone counts them.
      if (manager_->chunk(segments[k].chunk).keep_gathered() && group_->rank() != 0) continue;
      if (s.grad().defined()) sq += s.grad().to(at::kDouble).pow(2).sum().to(sq.device());
    }
    group_->all_reduce(sq, "grad_norm");
    const double norm = std::sqrt(sq.item<double>());
    const double coef = std::min(1.0, max_norm / (norm + 1e-6));
    if (std::isfinite(coef) && coef < 1.0) {
      for (auto& s : segment_tensors) {
        if (s.grad().defined()) s.mutable_grad().mul_(coef);
      }
    }
    return norm;
  }
  void step() override {
    const double ema_decay = ema_ ? ema_->take_decay() : NAN;  // (each step applies its own decay)
    shards_->step(ema_decay, order_);
  }

  // ---------------------------------------------------------------- whole parameters

  void gather_full_parameters() override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    for (size_t c = 0; c < manager_->num_chunks(); ++c) shards_->wait_shard(c);
    manager_->gather_all();
    held_full_ = true;  // units running meanwhile (sampling) must not release anything
  }
  void release_full_parameters(bool write_back) override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (write_back) {
      torch::NoGradGuard no_grad;
      for (size_t c = 0; c < manager_->num_chunks(); ++c) {
        memory::Chunk& chunk = manager_->chunk(c);
        if (!chunk.gathered()) continue;
        shards_->wait_shard(c);
        chunk.update_shard_from_full();
        const at::Tensor shard = local_shard(chunk);
        shards_->with_block(c, [&](OptimizerBlock& b) {
          if (!b.master.is_alias_of(shard)) b.master.copy_(shard);  // (a float32 shard may be its own master)
        });
      }
    }
    held_full_ = false;
    manager_->release_all();
    shards_->flush();  // (a failed write is reported here, not at an unrelated later fetch)
  }

  // ---------------------------------------------------------------- checkpoints and accounting

  io::TensorMap optimizer_state() const override { return shards_->state(); }
  void load_optimizer_state(const io::TensorMap& saved, const std::string& where) override {
    shards_->load_state(saved, where);
  }
  MemoryReport memory() const override {
    MemoryReport r;
    r.parameters = manager_->resident_bytes();
    for (const auto& [_, p] : manager_->params()) r.gradients += nbytes(p.grad());
    for (size_t c = 0; c < manager_->num_chunks(); ++c) r.gradients += nbytes(shards_->grad_shard(c));
    shards_->add_memory(r);
    r.numel = manager_->numel();
    r.padded_numel = manager_->numel() + manager_->padding();
    r.peak_parameters = manager_->peak_resident_bytes();
    return r;
  }

 private:
  // Position of `unit` in the recorded order after `from` (the next occurrence), or its first occurrence.
  size_t position_of(size_t unit, size_t from) const {
    if (recording_) return order_.empty() ? kNoPosition : order_.size() - 1;
    const size_t start = from == kNoPosition ? 0 : from + 1;
    for (size_t i = start; i < order_.size(); ++i) {
      if (order_[i] == unit) return i;
    }
    for (size_t i = 0; i < order_.size(); ++i) {
      if (order_[i] == unit) return i;
    }
    return kNoPosition;
  }
  // The unit expected to run after `unit`: the next entry of the recorded order, or while recording the next index.
  size_t next_unit(size_t unit) const {
    if (recording_) return unit + 1 < manager_->num_units() ? unit + 1 : kNoPosition;
    return position_ != kNoPosition && position_ + 1 < order_.size() ? order_[position_ + 1] : kNoPosition;
  }
  size_t last_position_of(size_t unit) const {
    for (size_t i = order_.size(); i-- > 0;) {
      if (order_[i] == unit) return i;
    }
    return kNoPosition;
  }

  struct InFlight {
    size_t chunk = 0;
    at::Tensor buffer, output;
    dist::Work work;
    int64_t transient = 0;  // bytes of buffer and output
  };

  StrategyOptions options_;
  StrategyKind kind_;
  std::unique_ptr<ShardOptimizer> shards_;  // what happens to a shard in the optimizer step (zero3 / gemini)
  std::unique_ptr<ChunkedEma> ema_;         // with options.ema: the ShardedEma capability
  std::vector<UnitSpec> units_;
  std::unique_ptr<memory::ChunkManager> manager_;
  std::vector<std::vector<size_t>> unit_param_index_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<uintptr_t> hook_keys_;
  std::recursive_mutex mutex_;
  bool armed_ = false, in_backward_ = false, recording_ = true, held_full_ = false, counted_ = false;
  std::vector<size_t> order_;  // unit execution order of the first forward
  size_t position_ = kNoPosition;
  std::vector<uint8_t> expected_, ready_;
  std::vector<int32_t> locally_used_, globally_used_;
  std::vector<int64_t> chunk_pending_;
  std::vector<uint8_t> chunk_done_;
  std::vector<int64_t> active_;
  std::vector<at::Tensor> buffers_;
  int64_t next_launch_ = -1;
  std::deque<InFlight> in_flight_;
};

}  // namespace

std::unique_ptr<ChunkedStrategy> make_zero3(std::shared_ptr<dist::ProcessGroup> group, StrategyOptions options,
                                            StrategyKind kind) {
  ZD_CHECK(group != nullptr, "make_zero3: no process group");
  std::unique_ptr<ShardOptimizer> shards;
  switch (kind) {
    case StrategyKind::zero3: shards = make_in_memory_shard_optimizer(*group, options); break;
    case StrategyKind::gemini: shards = make_tiered_shard_optimizer(*group, options); break;
    default: throw Error(zerodiff::str("make_zero3: strategy ", name_of(kind), " is not chunked (zero3 or gemini)"));
  }
  return std::make_unique<Zero3Strategy>(std::move(group), std::move(options), kind, std::move(shards));
}

}  // namespace zerodiff::parallel::detail
