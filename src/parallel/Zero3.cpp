// zero3: parameters sharded in chunks (memory::ChunkManager), gathered per unit while it runs.
// References: ZeRO stage 3 (Rajbhandari et al. 2020, §5.3) and ColossalAI's GeminiDDP / ZeroDDP hooks
// (colossalai/zero/gemini): gather a unit's chunks before its forward, release them after; gather again when
// the gradient of the unit's output arrives; reduce-scatter a chunk as soon as all its gradients are in and
// keep only the shard. fp32 master shards pair with the compute chunks; AdamW runs on this rank's segments.
//
// Per step and rank, communication is: all-gather of every used chunk in forward and again in backward, and
// one reduce-scatter of every chunk per micro-batch (3Ψ in total with one micro-batch).
//
// gemini = the same, plus memory::GeminiManager: before a unit's chunks are gathered it makes room on the device
// (evicting parameter shards to the host), and each chunk's optimizer block (fp32 master, gradient shard,
// exp_avg, exp_avg_sq) lives on the device, the host or disk. AdamW then runs chunk by chunk in this file
// (the HybridAdam kernel on the CPU, ATen's fused AdamW on CUDA, per segment exactly as HybridAdam steps them),
// reading disk blocks ahead and writing them behind (memory::DiskStateStore); the updated master is copied into
// the parameter shard wherever that lives.
//
// Sharded EMA (options.ema): per chunk an fp32 EMA of this rank's master shard, updated at the end of step() with
// the decay set_ema_decay() gave (ema -= (1 - d) * (ema - master), train::EMA::update's rule), no communication.
// zero3 keeps it beside the master (ema_[c], same device); gemini appends it to the chunk's optimizer block
// {master, exp_avg, exp_avg_sq, ema}, so it lives on the block's tier (device, host or disk), moves with it after
// the warm-up, is counted in the block's bytes by the placement, and is updated while the block is in memory for
// AdamW (no extra disk traffic). Checkpoints all-gather it chunk by chunk into whole tensors (gather_ema).
#include "Zero3.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <deque>
#include <map>
#include <mutex>
#include <set>

#include "StrategyUtil.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/kernels/Adam.h"
#include "zerodiff/memory/ChunkManager.h"
#include "zerodiff/memory/DiskStateStore.h"
#include "zerodiff/memory/GeminiManager.h"

namespace zerodiff::parallel::detail {

namespace {

using memory::TensorState;

struct Segment {
  size_t chunk = 0;
  size_t param = 0;          // index in ChunkManager::params()
  int64_t param_offset = 0;  // first element in the flattened parameter
  int64_t shard_offset = 0;  // first element in the chunk's shard
  int64_t numel = 0;
};

class Zero3Strategy : public Strategy, public UnitHooks {
 public:
  Zero3Strategy(std::shared_ptr<dist::ProcessGroup> group, StrategyOptions options, bool gemini)
      : Strategy(std::move(group)), options_(std::move(options)), gemini_(gemini) {}
  ~Zero3Strategy() override {
    for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
  }
  StrategyKind kind() const override { return gemini_ ? StrategyKind::gemini : StrategyKind::zero3; }
  bool sharded() const override { return true; }
  bool replicated_parameters() const override { return false; }
  void set_units(std::vector<UnitSpec> units) override { units_ = std::move(units); }
  UnitHooks* unit_hooks() override { return this; }

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
    // fp32 master shards and this rank's segments, grouped for AdamW.
    const int rank = group_->rank();
    std::vector<std::vector<at::Tensor>> per_group(groups.size());
    torch::NoGradGuard no_grad;
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      memory::Chunk& chunk = manager_->chunk(c);
      const at::Tensor own = local(c);
      const auto fp32 = own.options().dtype(at::kFloat);
      // Compute chunks of the master's dtype (fp32; bf16 in bf16-true): the shard (or a kept chunk's full buffer)
      // is the master itself; fp16/bf16 ones pair with an fp32 copy. (gemini: always a copy of its own, since the
      // master and the shard may live on different tiers.)
      const at::ScalarType master_dtype = options_.master_dtype;
      if (gemini_) {
        // Built in host memory and placed on its tier afterwards: nothing outside the budget on the device.
        master_.push_back(own.to(at::TensorOptions().device(at::kCPU).dtype(master_dtype), false, /*copy=*/true));
        grad_shard_.push_back(at::zeros({own.numel()}, fp32.device(at::kCPU)));
      } else {
        master_.push_back(chunk.dtype() == master_dtype ? own : own.to(master_dtype).clone());
        grad_shard_.push_back(at::zeros({own.numel()}, fp32));
        // The EMA starts as the master shard (train::EMA snapshots the parameters the same way), fp32 beside it.
        if (options_.ema) ema_.push_back(master_.back().to(at::kFloat, /*non_blocking=*/false, /*copy=*/true));
      }
      const int64_t lo_part = chunk.keep_gathered() ? 0 : rank * chunk.shard_numel();
      const int64_t hi_part = lo_part + own.numel();
      for (size_t t = 0; t < chunk.tensors().size(); ++t) {
        const auto& ct = chunk.tensors()[t];
        const int64_t lo = std::max(ct.offset, lo_part), hi = std::min(ct.offset + ct.numel, hi_part);
        if (lo >= hi) continue;
        Segment s{c, index_of.at(ct.param.unsafeGetTensorImpl()), lo - ct.offset, lo - lo_part, hi - lo};
        // gemini: a handle without storage that carries the segment's gradient (the master may be on disk).
        at::Tensor view = gemini_ ? at::empty({0}, fp32.dtype(master_dtype))
                                  : master_[c].slice(0, s.shard_offset, s.shard_offset + s.numel);
        segments_.push_back(s);
        segment_tensors_.push_back(view);
        segment_group_.push_back(group_of.at(ct.param.unsafeGetTensorImpl()));
        per_group[segment_group_.back()].push_back(view);
      }
    }
    if (gemini_) {
      setup_gemini(groups, adamw);
    } else {
    std::vector<torch::optim::OptimizerParamGroup> opt_groups;
    for (size_t g = 0; g < groups.size(); ++g) {
      opt_groups.emplace_back(per_group[g], std::make_unique<torch::optim::AdamWOptions>(adamw_options(groups[g].lr, adamw)));
    }
    optimizer_ = make_optimizer(std::move(opt_groups), adamw_options(groups[0].lr, adamw), options_.hybrid_adam);
    }
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
    // (While the whole model is held gathered — sampling, export — nothing is placed: that gather is outside the
    // budget, and only some ranks run units then.)
    memory::GeminiManager* const placement = held_full_ ? nullptr : placement_.get();
    if (placement) {
      placement->on_event(unit, memory::Phase::forward, position_);
      placement->prepare_gather(manager_->unit_chunks(unit), manager_->unit_name(unit));
    }
    const memory::ModelDataScope model_data;  // (gemini's memory tracer: these allocations are model data)
    for (size_t c : manager_->unit_chunks(unit)) {
      memory::Chunk& chunk = manager_->chunk(c);
      chunk.gather(*group_, /*async=*/false);
      chunk.wait();
      if (placement) placement->after_gather(c);
      for (size_t t = 0; t < chunk.tensors().size(); ++t) {
        if (chunk.tensors()[t].state == TensorState::HOLD) chunk.set_state(t, TensorState::COMPUTE);
      }
      ++active_[c];
    }
    // Prefetch the next unit (of the recorded execution order; while recording, the next index).
    if (const size_t next = next_unit(unit); next != kNone && may_prefetch(true, position_, unit, next)) {
      for (size_t c : manager_->unit_chunks(next)) manager_->chunk(c).gather(*group_, /*async=*/true);
    }
    manager_->note_resident();
    if (placement) placement->note();
  }

  void post_forward(size_t unit, const std::vector<at::Tensor>& outputs) override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    // Chunks the next unit needs stay gathered.
    std::vector<size_t> next;
    if (const size_t n = next_unit(unit); n != kNone) next = manager_->unit_chunks(n);
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
    if (placement_) {
      placement_->on_event(unit, memory::Phase::backward, pos);
      placement_->prepare_gather(needed, manager_->unit_name(unit));
    }
    const memory::ModelDataScope model_data;
    for (size_t c : needed) {
      memory::Chunk& chunk = manager_->chunk(c);
      chunk.gather(*group_, /*async=*/false);
      chunk.wait();
      if (placement_) placement_->after_gather(c);
    }
    // Prefetch the unit that ran before this one.
    if (pos != kNone && pos > 0) {
      std::vector<size_t> prev;
      for (size_t c : manager_->unit_chunks(order_[pos - 1])) {
        if (!chunk_done_[c]) prev.push_back(c);
      }
      if (may_prefetch(false, pos, unit, order_[pos - 1])) {
        for (size_t c : prev) manager_->chunk(c).gather(*group_, /*async=*/true);
      }
    }
    manager_->note_resident();
    if (placement_) placement_->note();
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
    const int64_t buffer_bytes = chunk.chunk_bytes();
    if (placement_) placement_->add_transient(buffer_bytes);  // (the gathered chunk is released just below)
    const memory::ModelDataScope model_data;
    at::Tensor buffer = at::zeros({chunk.chunk_numel()}, local(c).options());
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
      if (placement_) placement_->add_transient(out_bytes);
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
    at::Tensor& g = grad_shard_[f.chunk];  // (gemini: on the tier of the chunk's optimizer block)
    g.add_(f.output.to(g.device(), at::kFloat).div_(static_cast<double>(group_->size())));
    if (placement_) placement_->add_transient(-f.transient);
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
    position_ = kNone;
    manager_->release_all();  // prefetched chunks that no unit used
    if (!last) return;
    for (size_t k = 0; k < segments_.size(); ++k) {
      const Segment& s = segments_[k];
      at::Tensor grad;
      if (globally_used_[s.param]) {
        grad = grad_shard_[s.chunk].slice(0, s.shard_offset, s.shard_offset + s.numel);
        // AdamW sees gradients in the master's dtype (bf16-true: bf16; the reduction itself ran in fp32).
        if (grad.scalar_type() != options_.master_dtype) grad = grad.to(options_.master_dtype);
      }
      segment_tensors_[k].mutable_grad() = grad;
    }
  }

  // ---------------------------------------------------------------- optimizer

  void set_lr(size_t group, double lr) override {
    if (gemini_) {
      ZD_CHECK(group < group_lr_.size(), "no parameter group ", group);
      group_lr_[group] = lr;
      return;
    }
    ZD_CHECK(group < optimizer_->param_groups().size(), "no parameter group ", group);
    static_cast<torch::optim::AdamWOptions&>(optimizer_->param_groups()[group].options()).lr(lr);
  }
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
    for (auto& s : segment_tensors_) s.mutable_grad().reset();
    for (auto& g : grad_shard_) g.zero_();
    std::fill(locally_used_.begin(), locally_used_.end(), 0);
    std::fill(expected_.begin(), expected_.end(), 0);
    held_full_ = false;
    manager_->release_all();
    manager_->reset_peak();
    if (placement_) placement_->begin_warmup();  // the first step is gemini's warm-up (no-op afterwards)
  }
  std::vector<at::Tensor> gradient_tensors() override { return segment_tensors_; }
  double clip_grad_norm(double max_norm) override {
    // (on the backend's device; gemini's gradient shards may live on either tier)
    at::Tensor sq = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(manager_->chunk(0).device()));
    for (size_t k = 0; k < segment_tensors_.size(); ++k) {
      const at::Tensor& s = segment_tensors_[k];
      // A kept chunk's gradients are whole on every rank: rank 0 alone counts them.
      if (manager_->chunk(segments_[k].chunk).keep_gathered() && group_->rank() != 0) continue;
      if (s.grad().defined()) sq += s.grad().to(at::kDouble).pow(2).sum().to(sq.device());
    }
    group_->all_reduce(sq, "grad_norm");
    const double norm = std::sqrt(sq.item<double>());
    const double coef = std::min(1.0, max_norm / (norm + 1e-6));
    if (std::isfinite(coef) && coef < 1.0) {
      for (auto& s : segment_tensors_) {
        if (s.grad().defined()) s.mutable_grad().mul_(coef);
      }
    }
    return norm;
  }
  void step() override {
    const double ema_decay = take_ema_decay();
    if (gemini_) return gemini_step(ema_decay);
    optimizer_->step();
    torch::NoGradGuard no_grad;
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      if (!master_[c].is_alias_of(local(c))) local(c).copy_(master_[c]);
      if (options_.ema) update_ema(ema_[c], master_[c], ema_decay);
    }
  }

  // ---------------------------------------------------------------- sharded EMA

  bool sharded_ema() const override { return options_.ema; }
  void set_ema_decay(double decay) override {
    require_ema("set_ema_decay");
    ZD_CHECK(decay >= 0 && decay <= 1, "EMA decay must be in [0, 1], got ", decay);
    ema_decay_ = decay;
  }

  std::vector<std::pair<at::Tensor, at::Tensor>> gather_ema() override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    require_ema("gather_ema");
    torch::NoGradGuard no_grad;
    const bool root = group_->rank() == 0;
    const c10::Device device = manager_->chunk(0).device();  // (the backend's; gemini's shards may be on the host)
    std::vector<std::pair<at::Tensor, at::Tensor>> out;
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      const memory::Chunk& chunk = manager_->chunk(c);
      at::Tensor full;  // [chunk_numel] fp32
      {
        auto block = gemini_ ? fetch_block(c) : std::vector<at::Tensor>{};
        const at::Tensor shard = gemini_ ? block[3] : ema_[c];
        if (chunk.keep_gathered()) {
          full = root ? shard.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true) : at::Tensor();  // whole everywhere
        } else {
          full = at::empty({chunk.chunk_numel()}, at::TensorOptions().dtype(at::kFloat).device(device));
          group_->all_gather(full, shard.to(device).contiguous(), "ema_all_gather");
        }
        if (gemini_) store_block(c, std::move(block));
      }
      if (!root) continue;
      full = full.cpu();
      for (const auto& ct : chunk.tensors()) {
        out.emplace_back(ct.param, full.slice(0, ct.offset, ct.offset + ct.numel).view(ct.param.sizes()).clone());
      }
    }
    if (gemini_) flush_disk();
    return out;
  }

  void load_ema(const std::vector<std::pair<at::Tensor, at::Tensor>>& whole, const std::string& where) override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    require_ema("load_ema");
    torch::NoGradGuard no_grad;
    std::map<const void*, at::Tensor> by_param;
    for (const auto& [p, t] : whole) by_param[p.unsafeGetTensorImpl()] = t;
    const int rank = group_->rank();
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      const memory::Chunk& chunk = manager_->chunk(c);
      at::Tensor full = at::zeros({chunk.chunk_numel()}, at::kFloat);  // (padding: 0)
      for (const auto& ct : chunk.tensors()) {
        auto it = by_param.find(ct.param.unsafeGetTensorImpl());
        if (it == by_param.end() || !it->second.defined()) {
          throw IoError(zerodiff::str(where, ": no EMA weights for parameter '", ct.name, "'"));
        }
        if (it->second.sizes() != ct.param.sizes()) {
          throw IoError(zerodiff::str(where, ": EMA weights of '", ct.name, "' have shape ", it->second.sizes().vec(),
                                      ", expected ", ct.param.sizes().vec()));
        }
        full.slice(0, ct.offset, ct.offset + ct.numel).copy_(it->second.reshape(-1));
      }
      const int64_t lo = chunk.keep_gathered() ? 0 : rank * chunk.shard_numel();
      const int64_t n = chunk.keep_gathered() ? chunk.chunk_numel() : chunk.shard_numel();
      auto block = gemini_ ? fetch_block(c) : std::vector<at::Tensor>{};
      (gemini_ ? block[3] : ema_[c]).copy_(full.slice(0, lo, lo + n));
      if (gemini_) store_block(c, std::move(block));
    }
    if (gemini_) flush_disk();
  }

  void use_ema_weights(bool on) override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    require_ema("use_ema_weights");
    ZD_CHECK(!held_full_, "use_ema_weights: not while the whole model is gathered (gather_full_parameters)");
    ZD_CHECK(!on || ema_saved_.empty(), "use_ema_weights(true): the EMA weights are already in the parameter shards");
    ZD_CHECK(on || !ema_saved_.empty(),
             "use_ema_weights(false): the parameter shards hold the trained weights already (no use_ema_weights(true) "
             "before)");
    torch::NoGradGuard no_grad;
    manager_->release_all();  // (the shards are what the units gather next)
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      if (placement_) placement_->wait_shard(c);
    }
    if (on) {
      // All or nothing: first a copy of every chunk's trained shard (zero3's fp32 master may be this very tensor;
      // gemini keeps the copies in host memory, outside the device budget), then the EMA into the shards, so that
      // use_ema_weights(false) restores every chunk whichever step throws.
      std::vector<at::Tensor> saved;
      saved.reserve(manager_->num_chunks());
      for (size_t c = 0; c < manager_->num_chunks(); ++c) {
        const at::Tensor shard = local(c);
        saved.push_back(gemini_ ? shard.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true) : shard.clone());
      }
      ema_saved_ = std::move(saved);
      for (size_t c = 0; c < manager_->num_chunks(); ++c) {
        if (placement_) placement_->wait_shard(c);  // (fetching an earlier block may have moved this shard)
        at::Tensor shard = local(c);
        auto block = gemini_ ? fetch_block(c) : std::vector<at::Tensor>{};
        shard.copy_(gemini_ ? block[3] : ema_[c]);
        if (gemini_) store_block(c, std::move(block));
      }
    } else {
      for (size_t c = 0; c < manager_->num_chunks(); ++c) {
        if (placement_) placement_->wait_shard(c);
        local(c).copy_(ema_saved_[c]);
      }
      ema_saved_.clear();
    }
    if (gemini_) flush_disk();
  }

  // ---------------------------------------------------------------- whole parameters

  void gather_full_parameters() override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (placement_) {
      for (size_t c = 0; c < manager_->num_chunks(); ++c) placement_->wait_shard(c);
    }
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
        if (placement_) placement_->wait_shard(c);
        chunk.update_shard_from_full();
        if (gemini_) {
          auto block = fetch_block(c);
          block[0].copy_(local(c));
          store_block(c, std::move(block));
        } else if (!master_[c].is_alias_of(local(c))) {
          master_[c].copy_(local(c));
        }
      }
    }
    held_full_ = false;
    manager_->release_all();
    if (gemini_) flush_disk();  // (a failed write is reported here, not at an unrelated later fetch)
  }

  // ---------------------------------------------------------------- checkpoints and accounting

  io::TensorMap optimizer_state() const override {
    if (gemini_) return const_cast<Zero3Strategy*>(this)->gemini_state();
    return shard_state(*optimizer_, segment_tensors_, segment_keys(), shard_layout());
  }
  void load_optimizer_state(const io::TensorMap& saved, const std::string& where) override {
    if (gemini_) return load_gemini_state(saved, where);
    load_shard_state(*optimizer_, segment_tensors_, segment_keys(), shard_layout(), "trainer.zero3_chunk_size_mb",
                     saved, where);
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      if (!master_[c].is_alias_of(local(c))) local(c).copy_(master_[c]);
    }
  }
  MemoryReport memory() const override {
    MemoryReport r;
    r.parameters = manager_->resident_bytes();
    for (const auto& [_, p] : manager_->params()) r.gradients += nbytes(p.grad());
    for (const auto& g : grad_shard_) r.gradients += nbytes(g);
    if (gemini_) {
      for (size_t c = 0; c < blocks_.size(); ++c) {  // in memory (device or host); disk blocks are not
        if (blocks_[c].empty()) continue;
        r.master_weights += nbytes(blocks_[c][0]);
        r.optimizer_states += nbytes(blocks_[c][1]) + nbytes(blocks_[c][2]);
        if (options_.ema) r.ema += nbytes(blocks_[c][3]);
      }
    } else {
      for (size_t c = 0; c < master_.size(); ++c) {
        if (!master_[c].is_alias_of(local(c))) r.master_weights += nbytes(master_[c]);  // fp16/bf16 chunks
      }
      r.optimizer_states = adam_state_bytes(*optimizer_);
      for (const auto& e : ema_) r.ema += nbytes(e);
    }
    r.numel = manager_->numel();
    r.padded_numel = manager_->numel() + manager_->padding();
    r.peak_parameters = manager_->peak_resident_bytes();
    return r;
  }
  const memory::ChunkManager* chunks() const override { return manager_.get(); }
  const memory::GeminiManager* gemini() const override { return placement_.get(); }

 private:
  static constexpr size_t kNone = static_cast<size_t>(-1);

  // ---------------------------------------------------------------- gemini

  // Optimizer blocks: {master, exp_avg, exp_avg_sq}, fp32 (bf16-true: bf16) [shard_numel] (a kept chunk:
  // [chunk_numel]) each, plus the fp32 EMA shard with options.ema, on the tier GeminiManager chose; the gradient
  // shard grad_shard_[c] lives beside them (host memory for disk).
  void setup_gemini(const std::vector<ParamGroupSpec>& groups, const AdamWSettings& adamw) {
    adamw_ = adamw;
    for (const auto& g : groups) group_lr_.push_back(g.lr);
    segment_step_.assign(segments_.size(), 0);
    chunk_segments_.assign(manager_->num_chunks(), {segments_.size(), 0});
    for (size_t k = 0; k < segments_.size(); ++k) {
      auto& [lo, hi] = chunk_segments_[segments_[k].chunk];
      lo = std::min(lo, k);
      hi = std::max(hi, k + 1);
    }
    const c10::Device device = manager_->chunk(0).device();
    const int64_t block_bytes = 3 * static_cast<int64_t>(c10::elementSize(options_.master_dtype)) + 4 +  // + fp32 gradient
                                (options_.ema ? 4 : 0);                                                // + fp32 EMA
    placement_ = std::make_unique<memory::GeminiManager>(*manager_, device, options_.placement, block_bytes, group_.get());
    if (options_.placement.disk) {
      if (options_.master_dtype != at::kFloat) {
        throw NotImplementedError("gemini: optimizer states on disk are float32 only; with bf16-true keep them in "
                                  "host memory (leave trainer.gemini.offload_dir empty)");
      }
      ZD_CHECK(!options_.offload_dir.empty(), "gemini: optimizer states on disk need an offload directory "
                                              "(trainer.gemini.offload_dir)");
      disk_ = std::make_unique<memory::DiskStateStore>(options_.offload_dir, group_->rank());
      disk_->set_pinned(device.is_cuda());
    }
    blocks_.resize(manager_->num_chunks());
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      std::vector<at::Tensor> block{master_[c], at::zeros_like(master_[c]), at::zeros_like(master_[c])};
      if (options_.ema) block.push_back(master_[c].to(at::kFloat, /*non_blocking=*/false, /*copy=*/true));
      master_[c] = at::Tensor();  // gemini keeps the master in the block
      place_block(c, std::move(block), placement_->optim_tier(c));
    }
    placement_->reset_peaks();
    ZD_LOG_INFO(placement_->summary());
  }

  at::TensorOptions tier_options(memory::Tier tier) const {
    const c10::Device device = manager_->chunk(0).device();
    const auto base = at::TensorOptions();
    return tier == memory::Tier::device ? base.device(device) : base.device(at::kCPU).pinned_memory(device.is_cuda());
  }

  // Puts `block` (and the chunk's gradient shard) on `tier`: copies into fresh tensors there, or into the disk store.
  void place_block(size_t c, std::vector<at::Tensor> block, memory::Tier tier) {
    torch::NoGradGuard no_grad;
    const auto opts = tier_options(tier);
    auto moved = [&](const at::Tensor& t) {
      at::Tensor out = at::empty(t.sizes(), opts.dtype(t.scalar_type()));
      out.copy_(t);
      return out;
    };
    grad_shard_[c] = moved(grad_shard_[c]);
    if (tier == memory::Tier::disk) {
      for (auto& t : block) t = t.to(at::kCPU).contiguous();  // (the store reads and writes host memory)
      disk_->add(c, block);
      blocks_[c].clear();
    } else {
      for (auto& t : block) t = moved(t);
      blocks_[c] = std::move(block);
    }
  }

  // The block of chunk c in memory (read from disk if it lives there: then hand it back with store_block).
  std::vector<at::Tensor> fetch_block(size_t c) {
    return placement_->optim_tier(c) == memory::Tier::disk ? disk_->fetch(c) : blocks_[c];
  }
  void store_block(size_t c, std::vector<at::Tensor> block) {
    if (placement_->optim_tier(c) == memory::Tier::disk) disk_->write_back(c, std::move(block));
  }
  void flush_disk() {
    if (disk_) disk_->flush();
  }

  int64_t chunk_bytes(size_t c) const {
    return manager_->chunk(c).chunk_bytes();
  }

  // Whether to prefetch `next`'s chunks while `unit` runs (forward, or backward) at order position `pos`. zero3:
  // always. gemini: never in the warm-up step; afterwards by the plan every rank agreed on (a prefetch is a
  // collective, so all ranks must make the same choice), making room for the chunks first.
  bool may_prefetch(bool forward, size_t pos, size_t unit, size_t next) {
    if (!placement_) return true;
    if (held_full_) return false;  // everything is gathered already
    if (!plan_ready_ || pos == kNone || pos >= order_.size() || !(forward ? prefetch_fwd_ : prefetch_bwd_)[pos]) {
      return false;
    }
    int64_t bytes = 0;
    for (size_t c : manager_->unit_chunks(next)) {
      if (!manager_->chunk(c).gathered()) bytes += chunk_bytes(c);
    }
    std::vector<size_t> keep = manager_->unit_chunks(unit);
    keep.insert(keep.end(), manager_->unit_chunks(next).begin(), manager_->unit_chunks(next).end());
    placement_->reserve(bytes, keep, zerodiff::str("the prefetched chunks of unit '", manager_->unit_name(next), "'"));
    for (size_t c : manager_->unit_chunks(next)) placement_->wait_shard(c);
    return true;
  }

  // After the warm-up: prefetch at an event only where its measured non-model peak, the chunks of the unit and of
  // the one prefetched (backward: plus the reduce buffers in flight), the kept-gathered chunks and the optimizer
  // blocks on the device fit the budget on every rank.
  void plan_prefetch() {
    int64_t fixed = 0;
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      if (manager_->chunk(c).keep_gathered()) fixed += chunk_bytes(c);
      if (placement_->optim_tier(c) == memory::Tier::device) fixed += placement_->optim_block_bytes(c);
    }
    const size_t n = order_.size();
    std::vector<int32_t> ok(2 * n, 0);
    for (size_t p = 0; p < n; ++p) {
      for (const bool forward : {true, false}) {
        if (forward ? p + 1 >= n : p == 0) continue;
        const size_t unit = order_[p], next = order_[forward ? p + 1 : p - 1];
        std::set<size_t> cs(manager_->unit_chunks(unit).begin(), manager_->unit_chunks(unit).end());
        cs.insert(manager_->unit_chunks(next).begin(), manager_->unit_chunks(next).end());
        int64_t working = forward ? 0 : placement_->backward_margin();
        for (size_t c : cs) {
          if (!manager_->chunk(c).keep_gathered()) working += chunk_bytes(c);
        }
        const int64_t nm =
            placement_->non_model_peak(zerodiff::str(forward ? "forward " : "backward ", manager_->unit_name(unit)));
        ok[forward ? p : n + p] = nm + working + fixed <= placement_->budget();
      }
    }
    at::Tensor agreed = at::tensor(ok, at::kInt).to(manager_->chunk(0).device());
    if (group_->size() > 1) group_->all_reduce(agreed, "gemini_prefetch_plan", dist::ReduceOp::min);
    agreed = agreed.cpu();
    const int32_t* a = agreed.data_ptr<int32_t>();
    prefetch_fwd_.assign(a, a + n);
    prefetch_bwd_.assign(a + n, a + 2 * n);
    plan_ready_ = true;
  }

  // AdamW chunk by chunk: each segment exactly as optim::HybridAdam (CPU) or its fused ATen path (CUDA) steps it.
  void gemini_step(double ema_decay) {
    torch::NoGradGuard no_grad;
    const size_t n = manager_->num_chunks();
    auto next_on_disk = [&](size_t from) {
      for (size_t c = from; c < n; ++c) {
        if (placement_->optim_tier(c) == memory::Tier::disk) return c;
      }
      return kNone;
    };
    if (disk_ && next_on_disk(0) != kNone) disk_->prefetch(next_on_disk(0));
    for (size_t c = 0; c < n; ++c) {
      const bool on_disk = placement_->optim_tier(c) == memory::Tier::disk;
      auto block = fetch_block(c);
      if (on_disk) {
        if (const size_t next = next_on_disk(c + 1); next != kNone) disk_->prefetch(next);  // read-ahead
      }
      bool changed = false;
      for (size_t k = chunk_segments_[c].first; k < chunk_segments_[c].second; ++k) {
        const at::Tensor& grad = segment_tensors_[k].grad();
        if (!grad.defined()) continue;  // unused by every rank: no update (torch's AdamW skips it too)
        const Segment& seg = segments_[k];
        at::Tensor p = block[0].slice(0, seg.shard_offset, seg.shard_offset + seg.numel);
        at::Tensor m = block[1].slice(0, seg.shard_offset, seg.shard_offset + seg.numel);
        at::Tensor v = block[2].slice(0, seg.shard_offset, seg.shard_offset + seg.numel);
        const int64_t step = ++segment_step_[k];
        const double lr = group_lr_[segment_group_[k]];
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
        local(c).copy_(block[0], /*non_blocking=*/true);  // the compute copy, on its own tier
      }
      if (options_.ema) update_ema(block[3], block[0], ema_decay);  // (every chunk, as train::EMA updates every tensor)
      store_block(c, std::move(block));  // write-behind
    }
    flush_disk();
    // After the warm-up step the auto policy moves the optimizer blocks that fit onto the device.
    if (placement_->warming_up()) {
      std::vector<memory::Tier> before;
      for (size_t c = 0; c < n; ++c) before.push_back(placement_->optim_tier(c));
      for (size_t c : placement_->end_warmup(order_)) {
        // (the manager counts the block on the device already: room is made by evicting parameter shards)
        placement_->reserve(0, {}, zerodiff::str("the optimizer states of chunk ", c));
        std::vector<at::Tensor> block = before[c] == memory::Tier::disk ? disk_->fetch(c) : blocks_[c];
        place_block(c, block, memory::Tier::device);
        if (before[c] == memory::Tier::disk) disk_->write_back(c, std::move(block));  // hands the buffers back
      }
      plan_prefetch();
      ZD_LOG_INFO("after the warm-up step: ", placement_->summary(), "; prefetching at ",
                  std::count(prefetch_fwd_.begin(), prefetch_fwd_.end(), 1), " of ", order_.size(), " forward and ",
                  std::count(prefetch_bwd_.begin(), prefetch_bwd_.end(), 1), " backward unit starts");
    }
  }

  io::TensorMap gemini_state() {
    torch::NoGradGuard no_grad;
    io::TensorMap out;
    out["layout"] = at::tensor(shard_layout());
    const auto keys = segment_keys();
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      auto block = fetch_block(c);
      for (size_t k = chunk_segments_[c].first; k < chunk_segments_[c].second; ++k) {
        const Segment& seg = segments_[k];
        auto part = [&](size_t i) { return block[i].slice(0, seg.shard_offset, seg.shard_offset + seg.numel).cpu().clone(); };
        out[keys[k] + ".master"] = part(0);
        if (segment_step_[k] == 0) continue;  // no update yet
        out[keys[k] + ".exp_avg"] = part(1);
        out[keys[k] + ".exp_avg_sq"] = part(2);
        out[keys[k] + ".step"] = at::tensor(segment_step_[k], at::kLong);
      }
      store_block(c, std::move(block));
    }
    flush_disk();
    return out;
  }

  void load_gemini_state(const io::TensorMap& saved, const std::string& where) {
    check_shard_layout(shard_layout(), "trainer.zero3_chunk_size_mb", saved, where);
    torch::NoGradGuard no_grad;
    const auto keys = segment_keys();
    for (size_t c = 0; c < manager_->num_chunks(); ++c) {
      auto block = fetch_block(c);
      for (size_t k = chunk_segments_[c].first; k < chunk_segments_[c].second; ++k) {
        const Segment& seg = segments_[k];
        auto part = [&](size_t i) { return block[i].slice(0, seg.shard_offset, seg.shard_offset + seg.numel); };
        auto find = [&](const char* what) {
          auto it = saved.find(keys[k] + what);
          return it == saved.end() ? at::Tensor() : it->second;
        };
        const at::Tensor master = find(".master"), m = find(".exp_avg"), v = find(".exp_avg_sq"), st = find(".step");
        if (!master.defined() || master.numel() != seg.numel) {
          throw IoError(zerodiff::str(where, ": master weights of '", keys[k], "' are missing or have the wrong size"));
        }
        part(0).copy_(master.reshape(-1));
        if (!m.defined()) {  // no update yet when saved
          part(1).zero_();
          part(2).zero_();
          segment_step_[k] = 0;
          continue;
        }
        if (!v.defined() || !st.defined() || m.numel() != seg.numel || v.numel() != seg.numel) {
          throw IoError(zerodiff::str(where, ": optimizer state of '", keys[k], "' is incomplete or has the wrong shape"));
        }
        part(1).copy_(m.reshape(-1));
        part(2).copy_(v.reshape(-1));
        segment_step_[k] = st.item<int64_t>();
      }
      placement_->wait_shard(c);
      local(c).copy_(block[0]);
      store_block(c, std::move(block));
    }
    flush_disk();
  }

  void require_ema(const char* what) const {
    if (!options_.ema) {
      throw Error(zerodiff::str("strategy ", name(), " was built without a sharded EMA (StrategyOptions::ema): ", what));
    }
  }
  // The decay set for this step (consumed: each step() with an EMA needs its own set_ema_decay); NAN without EMA.
  double take_ema_decay() {
    if (!options_.ema) return NAN;
    ZD_CHECK(std::isfinite(ema_decay_), "strategy ", name(),
             " keeps a sharded EMA: call set_ema_decay(decay) before every step()");
    const double d = ema_decay_;
    ema_decay_ = NAN;
    return d;
  }
  // ema -= (1 - d) * (ema - float(master)), exactly train::EMA::update's expression (same fp32 results).
  static void update_ema(at::Tensor& ema, const at::Tensor& master, double decay) {
    ema.sub_((ema - master.to(at::kFloat)) * (1.0 - decay));
  }

  // This rank's resident copy of chunk c that the master mirrors: its shard, or a kept chunk's full buffer.
  at::Tensor local(size_t c) const {
    const memory::Chunk& chunk = manager_->chunk(c);
    return chunk.keep_gathered() ? chunk.full() : chunk.shard();
  }

  // Position of `unit` in the recorded order after `from` (the next occurrence), or its first occurrence.
  size_t position_of(size_t unit, size_t from) const {
    if (recording_) return order_.empty() ? kNone : order_.size() - 1;
    const size_t start = from == kNone ? 0 : from + 1;
    for (size_t i = start; i < order_.size(); ++i) {
      if (order_[i] == unit) return i;
    }
    for (size_t i = 0; i < order_.size(); ++i) {
      if (order_[i] == unit) return i;
    }
    return kNone;
  }
  // The unit expected to run after `unit`: the next entry of the recorded order, or while recording the next index.
  size_t next_unit(size_t unit) const {
    if (recording_) return unit + 1 < manager_->num_units() ? unit + 1 : kNone;
    return position_ != kNone && position_ + 1 < order_.size() ? order_[position_ + 1] : kNone;
  }
  size_t last_position_of(size_t unit) const {
    for (size_t i = order_.size(); i-- > 0;) {
      if (order_[i] == unit) return i;
    }
    return kNone;
  }
  std::vector<std::string> segment_keys() const {
    std::vector<std::string> keys;
    for (const Segment& s : segments_) keys.push_back(zerodiff::str(manager_->params()[s.param].first, "@", s.param_offset));
    return keys;
  }
  std::vector<int64_t> shard_layout() const {
    return {group_->size(), manager_->numel(), manager_->chunk_numel(), 3};
  }

  struct InFlight {
    size_t chunk = 0;
    at::Tensor buffer, output;
    dist::Work work;
    int64_t transient = 0;  // bytes of buffer and output
  };

  StrategyOptions options_;
  bool gemini_ = false;
  std::unique_ptr<memory::GeminiManager> placement_;  // gemini only
  std::unique_ptr<memory::DiskStateStore> disk_;      // gemini with optimizer states on disk
  std::vector<std::vector<at::Tensor>> blocks_;       // gemini: per chunk {master, exp_avg, exp_avg_sq} in memory
  std::vector<std::pair<size_t, size_t>> chunk_segments_;  // gemini: segment range [first, second) per chunk
  std::vector<int64_t> segment_step_;                 // gemini: AdamW step count per segment
  std::vector<double> group_lr_;
  AdamWSettings adamw_;
  std::vector<size_t> segment_group_;
  std::vector<uint8_t> prefetch_fwd_, prefetch_bwd_;  // gemini: per order position, agreed by every rank
  bool plan_ready_ = false;
  std::vector<UnitSpec> units_;
  std::unique_ptr<memory::ChunkManager> manager_;
  std::vector<std::vector<size_t>> unit_param_index_;
  std::vector<at::Tensor> master_, grad_shard_;  // per chunk, fp32 [shard_numel]
  std::vector<at::Tensor> ema_;         // zero3 with options.ema: per chunk, fp32 [shard_numel] beside master_
                                        // (gemini keeps it as block element 3 instead)
  std::vector<at::Tensor> ema_saved_;   // use_ema_weights(true): the parameter shards' trained values, per chunk
  double ema_decay_ = NAN;              // set by set_ema_decay, consumed by the next step()
  std::vector<Segment> segments_;
  std::vector<at::Tensor> segment_tensors_;  // views of master_: what AdamW updates (gemini: storage-less handles
                                             // that carry the segments' gradients)
  std::unique_ptr<torch::optim::Optimizer> optimizer_;  // torch AdamW or HybridAdam (same state types)
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<uintptr_t> hook_keys_;
  std::recursive_mutex mutex_;
  bool armed_ = false, in_backward_ = false, recording_ = true, held_full_ = false, counted_ = false;
  std::vector<size_t> order_;  // unit execution order of the first forward
  size_t position_ = kNone;
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

std::unique_ptr<Strategy> make_zero3(std::shared_ptr<dist::ProcessGroup> group, StrategyOptions options, bool gemini) {
  return std::make_unique<Zero3Strategy>(std::move(group), std::move(options), gemini);
}

}  // namespace zerodiff::parallel::detail
