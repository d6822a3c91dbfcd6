// single / ddp / zero1 / zero2, and make_strategy for all (see zerodiff/parallel/Strategy.h for the contract and
// references; zero3 and gemini are in Zero3Strategy.cpp).
#include "zerodiff/parallel/Strategy.h"

#include <ATen/ATen.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <limits>
#include <map>

#include "GradientReducer.h"
#include "StrategyUtil.h"
#include "Zero3Strategy.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/optim/HybridAdam.h"
#include "zerodiff/parallel/FlatLayout.h"

namespace zerodiff::parallel {

namespace detail {


torch::optim::AdamWOptions adamw_options(double lr, const AdamWSettings& s) {
  return torch::optim::AdamWOptions(lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(s.weight_decay);
}

void check_groups(const std::vector<ParamGroupSpec>& groups) {
  size_t total = 0;
  for (const auto& g : groups) total += g.params.size();
  ZD_CHECK(total > 0, "the training module has no trainable parameters");
  std::map<const void*, std::string> seen;
  std::map<std::string, int> names;
  for (const auto& g : groups) {
    ZD_CHECK(!g.params.empty(), "parameter group '", g.name, "' of the training module is empty");
    ZD_CHECK(g.lr > 0, "parameter group '", g.name, "': learning rate must be > 0, got ", g.lr);
    for (const auto& [name, p] : g.params) {
      ZD_CHECK(p.defined() && p.is_floating_point(), "parameter '", name, "' is not a floating-point tensor");
      auto [it, fresh] = seen.emplace(p.unsafeGetTensorImpl(), name);
      ZD_CHECK(fresh, "parameter '", name, "' appears twice in the parameter groups",
               it->second == name ? std::string() : zerodiff::str(" (also as '", it->second, "')"));
      ZD_CHECK(names[name]++ == 0, "two parameters are named '", name,
               "' in the parameter groups (the optimizer state is saved by name)");
    }
  }
}

// Broadcast from rank 0, coalesced per dtype/device into one flat buffer each.
void broadcast_from_rank0(dist::ProcessGroup& group, const std::vector<at::Tensor>& tensors) {
  if (group.size() == 1 || tensors.empty()) return;
  torch::NoGradGuard no_grad;
  std::map<std::pair<int, std::string>, std::vector<at::Tensor>> by_kind;
  for (const auto& t : tensors) {
    if (t.defined() && t.numel() > 0) by_kind[{static_cast<int>(t.scalar_type()), t.device().str()}].push_back(t);
  }
  // Coalesced into buffers of at most 16 Mi elements: few collectives, bounded extra memory.
  constexpr int64_t kMaxBuffer = int64_t{16} << 20;
  for (auto& [_, list] : by_kind) {
    for (size_t begin = 0; begin < list.size();) {
      size_t end = begin;
      int64_t total = 0;
      while (end < list.size() && (end == begin || total + list[end].numel() <= kMaxBuffer)) total += list[end++].numel();
      std::vector<at::Tensor> flat;
      for (size_t i = begin; i < end; ++i) flat.push_back(list[i].reshape(-1));
      at::Tensor buffer = at::cat(flat);
      group.broadcast(buffer, 0, "broadcast");
      int64_t offset = 0;
      for (size_t i = begin; i < end; ++i) {
        at::Tensor target = list[i];
        const int64_t n = target.numel();
        target.copy_(buffer.slice(0, offset, offset + n).view(target.sizes()));
        offset += n;
      }
      begin = end;
    }
  }
}

int64_t nbytes(const at::Tensor& t) {
  return t.defined() ? static_cast<int64_t>(t.numel()) * static_cast<int64_t>(t.element_size()) : 0;
}

int64_t adam_state_bytes(const torch::optim::Optimizer& opt) {
  int64_t total = 0;
  for (const auto& [_, state] : const_cast<torch::optim::Optimizer&>(opt).state()) {
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*state);
    total += nbytes(s.exp_avg()) + nbytes(s.exp_avg_sq());
  }
  return total;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                                                        const torch::optim::AdamWOptions& defaults, bool hybrid) {
  if (hybrid) return std::make_unique<optim::HybridAdam>(groups, defaults, /*adamw_mode=*/true);
  return std::make_unique<torch::optim::AdamW>(std::move(groups), defaults);
}

void save_adam_entry(const torch::optim::Optimizer& opt, const at::Tensor& p, const std::string& key,
                     io::TensorMap& out) {
  auto& state = const_cast<torch::optim::Optimizer&>(opt).state();
  auto it = state.find(p.unsafeGetTensorImpl());
  if (it == state.end()) return;  // no update yet
  auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
  out[key + ".exp_avg"] = s.exp_avg().detach().cpu();
  out[key + ".exp_avg_sq"] = s.exp_avg_sq().detach().cpu();
  out[key + ".step"] = at::tensor(s.step(), at::kLong);
}

void load_adam_entry(torch::optim::Optimizer& opt, const at::Tensor& p, const std::string& key,
                     const io::TensorMap& saved, const std::string& where) {
  auto m = saved.find(key + ".exp_avg");
  if (m == saved.end()) return;  // no update yet when saved
  auto v = saved.find(key + ".exp_avg_sq");
  auto s = saved.find(key + ".step");
  if (v == saved.end() || s == saved.end() || m->second.sizes() != p.sizes() || v->second.sizes() != p.sizes()) {
    throw IoError(zerodiff::str(where, ": optimizer state of '", key, "' is incomplete or has the wrong shape"));
  }
  auto st = std::make_unique<torch::optim::AdamWParamState>();
  st->step(s->second.item<int64_t>());
  st->exp_avg(m->second.to(p.device(), p.scalar_type()).clone());
  st->exp_avg_sq(v->second.to(p.device(), p.scalar_type()).clone());
  opt.state()[p.unsafeGetTensorImpl()] = std::move(st);
}

io::TensorMap shard_state(const torch::optim::Optimizer& opt, const std::vector<at::Tensor>& segments,
                          const std::vector<std::string>& keys, const std::vector<int64_t>& layout) {
  io::TensorMap out;
  out["layout"] = at::tensor(layout);
  for (size_t k = 0; k < segments.size(); ++k) {
    out[keys[k] + ".master"] = segments[k].detach().cpu().clone();
    save_adam_entry(opt, segments[k], keys[k], out);
  }
  return out;
}

void check_shard_layout(const std::vector<int64_t>& layout, const char* size_option, const io::TensorMap& saved,
                        const std::string& where) {
  auto found = saved.find("layout");
  if (found == saved.end() || found->second.numel() != 4) {
    throw IoError(zerodiff::str(where, ": no ZeRO shard layout (saved by another strategy?); resume with the "
                                       "strategy that wrote it"));
  }
  const at::Tensor l = found->second.to(at::kLong);
  const std::vector<int64_t> got(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + 4);
  if (got[3] != layout[3]) {
    throw IoError(zerodiff::str(where, ": optimizer shard of zero", got[3], "; this run is zero", layout[3],
                                ". Resume with the strategy that wrote it"));
  }
  if (got != layout) {
    auto mib = [](int64_t elements) { return static_cast<double>(elements) * 4.0 / (1024.0 * 1024.0); };
    throw IoError(zerodiff::str(where, ": the optimizer shard was saved with world size ", got[0], ", ", got[1],
                                " parameters, ", size_option, " ", mib(got[2]), " (", got[2],
                                " elements); this run has world size ", layout[0], ", ", layout[1], " parameters, ",
                                size_option, " ", mib(layout[2]), " (", layout[2],
                                " elements). Resume with the same world size and ", size_option));
  }
}

void load_shard_state(torch::optim::Optimizer& opt, const std::vector<at::Tensor>& segments,
                      const std::vector<std::string>& keys, const std::vector<int64_t>& layout,
                      const char* size_option, const io::TensorMap& saved, const std::string& where) {
  check_shard_layout(layout, size_option, saved, where);
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < segments.size(); ++k) {
    at::Tensor seg = segments[k];
    auto m = saved.find(keys[k] + ".master");
    if (m == saved.end() || m->second.sizes() != seg.sizes()) {
      throw IoError(zerodiff::str(where, ": master weights of '", keys[k], "' are missing or have the wrong size"));
    }
    seg.copy_(m->second);
    load_adam_entry(opt, seg, keys[k], saved, where);
  }
}

void warn_bucket_count(const FlatLayout& layout) {
  if (layout.buckets().size() > 4096) {
    ZD_LOG_WARN(layout.buckets().size(), " gradient buckets of ", layout.bucket_numel(),
                " elements per step: every bucket is one collective, so steps will be slow; "
                "raise the bucket size (StrategyOptions::bucket_numel; PyTorch DDP uses 25 MiB)");
  }
}

}  // namespace detail

namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;
using detail::adamw_options;
using detail::check_groups;
using detail::broadcast_from_rank0;
using detail::nbytes;
using detail::adam_state_bytes;
using detail::make_optimizer;

// AdamW state by parameter name: <name>.exp_avg, <name>.exp_avg_sq, <name>.step (int64 scalar).
io::TensorMap adam_state(const torch::optim::Optimizer& opt, const Named& params) {
  io::TensorMap out;
  for (const auto& [name, p] : params) detail::save_adam_entry(opt, p, name, out);
  return out;
}

void load_adam_state(torch::optim::Optimizer& opt, const Named& params, const io::TensorMap& saved, const std::string& where) {
  for (const auto& [name, p] : params) detail::load_adam_entry(opt, p, name, saved, where);
}

// ------------------------------------------------------------------ single / ddp

class ReplicatedStrategy : public Strategy {
 public:
  ReplicatedStrategy(std::shared_ptr<dist::ProcessGroup> group, bool ddp, StrategyOptions options)
      : Strategy(std::move(group)), ddp_(ddp), options_(options) {
    ZD_CHECK(ddp_ || group_->size() == 1, "strategy single runs in one process, but the world has ", group_->size(),
             " processes; use strategy ddp, zero1, zero2, zero3 or gemini");
  }
  StrategyKind kind() const override { return ddp_ ? StrategyKind::ddp : StrategyKind::single; }

  void setup(std::vector<ParamGroupSpec> groups, const std::vector<at::Tensor>& broadcast,
             const AdamWSettings& adamw) override {
    check_groups(groups);
    std::vector<torch::optim::OptimizerParamGroup> opt_groups;
    for (const auto& g : groups) {
      std::vector<at::Tensor> tensors;
      for (const auto& [name, p] : g.params) {
        params_.emplace_back(name, p);
        tensors.push_back(p);
      }
      opt_groups.emplace_back(tensors, std::make_unique<torch::optim::AdamWOptions>(adamw_options(g.lr, adamw)));
    }
    optimizer_ = make_optimizer(std::move(opt_groups), adamw_options(groups[0].lr, adamw), options_.hybrid_adam);
    if (!ddp_) return;
    broadcast_from_rank0(*group_, broadcast);
    // Flat order = reverse registration order (≈ the order backward produces gradients).
    std::vector<int64_t> numels;
    for (auto it = params_.rbegin(); it != params_.rend(); ++it) {
      order_.push_back(it->second);
      names_.push_back(it->first);
      numels.push_back(it->second.numel());
    }
    layout_ = std::make_unique<FlatLayout>(numels, group_->size(), options_.bucket_numel);
    detail::warn_bucket_count(*layout_);
    reducer_ = std::make_unique<detail::GradientReducer>(*group_, *layout_, order_, names_,
                                                         detail::GradientReducer::Mode::all_reduce);
  }
  void set_lr(size_t group, double lr) override {
    ZD_CHECK(group < optimizer_->param_groups().size(), "no parameter group ", group);
    static_cast<torch::optim::AdamWOptions&>(optimizer_->param_groups()[group].options()).lr(lr);
  }
  void zero_grad() override {
    optimizer_->zero_grad();
    if (reducer_) reducer_->reset_step();
  }
  void begin_backward(bool last) override {
    if (reducer_) reducer_->begin_backward(last);
  }
  void end_backward(bool last) override {
    if (reducer_) reducer_->end_backward(last);
  }
  std::vector<at::Tensor> gradient_tensors() override {
    std::vector<at::Tensor> out;
    for (const auto& [_, p] : params_) out.push_back(p);
    return out;
  }
  double clip_grad_norm(double max_norm) override {
    // Every rank holds the same averaged gradients: the local norm is the global one.
    return torch::nn::utils::clip_grad_norm_(gradient_tensors(), max_norm);
  }
  void step() override { optimizer_->step(); }
  io::TensorMap optimizer_state() const override { return adam_state(*optimizer_, params_); }
  void load_optimizer_state(const io::TensorMap& state, const std::string& where) override {
    if (state.count("layout")) {
      throw IoError(zerodiff::str(where, ": a ZeRO optimizer shard; this run's strategy ", name(),
                                  " keeps whole AdamW states. Resume with the strategy that wrote it"));
    }
    load_adam_state(*optimizer_, params_, state, where);
  }
  MemoryReport memory() const override {
    MemoryReport r;
    for (const auto& [_, p] : params_) {
      r.parameters += nbytes(p);
      r.gradients += nbytes(p.grad());
      r.numel += p.numel();
    }
    r.padded_numel = layout_ ? layout_->padded_numel() : r.numel;
    r.peak_parameters = r.parameters;
    r.optimizer_states = adam_state_bytes(*optimizer_);
    return r;
  }

 private:
  bool ddp_;
  StrategyOptions options_;
  Named params_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;  // torch AdamW or HybridAdam (same state types)
  std::vector<at::Tensor> order_;
  std::vector<std::string> names_;
  std::unique_ptr<FlatLayout> layout_;
  std::unique_ptr<detail::GradientReducer> reducer_;
};

// ------------------------------------------------------------------ zero1 / zero2

class ZeroStrategy : public Strategy {
 public:
  ZeroStrategy(std::shared_ptr<dist::ProcessGroup> group, int stage, StrategyOptions options)
      : Strategy(std::move(group)), stage_(stage), options_(options) {}
  StrategyKind kind() const override { return stage_ == 1 ? StrategyKind::zero1 : StrategyKind::zero2; }
  bool sharded() const override { return true; }

  void setup(std::vector<ParamGroupSpec> groups, const std::vector<at::Tensor>& broadcast,
             const AdamWSettings& adamw) override {
    check_groups(groups);
    broadcast_from_rank0(*group_, broadcast);
    // Flat order = reverse registration order; remember each parameter's group.
    std::vector<std::pair<size_t, std::pair<std::string, at::Tensor>>> all;
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      for (const auto& np : groups[gi].params) all.emplace_back(gi, np);
    }
    std::vector<int64_t> numels;
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      group_of_.push_back(it->first);
      names_.push_back(it->second.first);
      params_.push_back(it->second.second);
      numels.push_back(it->second.second.numel());
      ZD_CHECK(it->second.second.is_contiguous(), "parameter '", it->second.first,
               "' is not contiguous (zero1/zero2 write parameters through flat views)");
      ZD_CHECK(it->second.second.scalar_type() == all[0].second.second.scalar_type(), "parameter '",
               it->second.first, "' has dtype ", it->second.second.scalar_type(), ", others ",
               all[0].second.second.scalar_type(), ": one dtype per ZeRO strategy");
    }
    layout_ = std::make_unique<FlatLayout>(numels, group_->size(), options_.bucket_numel);
    detail::warn_bucket_count(*layout_);
    const auto fp32 = params_[0].options().dtype(at::kFloat).requires_grad(false);
    // Master shard (fp32, or the parameters' dtype in bf16-true), filled from the (broadcast) parameters.
    master_ = at::zeros({layout_->shard_numel()}, fp32.dtype(options_.master_dtype));
    pieces_ = layout_->shard_pieces(group_->rank());
    std::vector<std::vector<at::Tensor>> per_group(groups.size());
    {
      torch::NoGradGuard no_grad;
      for (const Piece& piece : pieces_) {
        at::Tensor seg = master_.slice(0, piece.offset, piece.offset + piece.numel);
        seg.copy_(params_[piece.param].detach().reshape(-1).slice(0, piece.param_offset, piece.param_offset + piece.numel));
        segments_.push_back(seg);
        per_group[group_of_[piece.param]].push_back(seg);
      }
    }
    std::vector<torch::optim::OptimizerParamGroup> opt_groups;
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      opt_groups.emplace_back(per_group[gi], std::make_unique<torch::optim::AdamWOptions>(adamw_options(groups[gi].lr, adamw)));
    }
    optimizer_ = make_optimizer(std::move(opt_groups), adamw_options(groups[0].lr, adamw), options_.hybrid_adam);
    if (stage_ == 2) grad_shard_ = at::zeros({layout_->shard_numel()}, fp32);
    reducer_ = std::make_unique<detail::GradientReducer>(
        *group_, *layout_, params_, names_,
        stage_ == 1 ? detail::GradientReducer::Mode::all_reduce : detail::GradientReducer::Mode::reduce_scatter,
        grad_shard_);
  }
  void set_lr(size_t group, double lr) override {
    ZD_CHECK(group < optimizer_->param_groups().size(), "no parameter group ", group);
    static_cast<torch::optim::AdamWOptions&>(optimizer_->param_groups()[group].options()).lr(lr);
  }
  void zero_grad() override {
    for (auto& p : params_) p.mutable_grad().reset();
    for (auto& s : segments_) s.mutable_grad().reset();
    if (grad_shard_.defined()) grad_shard_.zero_();
    reducer_->reset_step();
  }
  void begin_backward(bool last) override { reducer_->begin_backward(last); }
  void end_backward(bool last) override {
    reducer_->end_backward(last);
    if (!last) return;
    // The optimizer's view of this rank's gradients: shard segments (zero2) or slices of the averaged full
    // gradients (zero1); none for parameters no rank used this step (AdamW skips them, as torch's does).
    for (size_t k = 0; k < pieces_.size(); ++k) {
      const Piece& piece = pieces_[k];
      at::Tensor grad;
      if (reducer_->globally_used(piece.param)) {
        if (stage_ == 2) {
          grad = grad_shard_.slice(0, piece.offset, piece.offset + piece.numel);
        } else {
          grad = params_[piece.param].grad().view(-1).slice(0, piece.param_offset, piece.param_offset + piece.numel);
        }
        // AdamW sees gradients in the master's dtype (fp16/bf16 compute with an fp32 master; bf16-true: bf16).
        if (grad.scalar_type() != master_.scalar_type()) grad = grad.to(master_.scalar_type());
      }
      segments_[k].mutable_grad() = grad;
    }
  }
  std::vector<at::Tensor> gradient_tensors() override { return segments_; }
  double clip_grad_norm(double max_norm) override {
    // Global L2 norm: each rank's shard contributes its sum of squares (no element is counted twice).
    at::Tensor sq = at::zeros({1}, master_.options().dtype(at::kDouble));
    for (const auto& s : segments_) {
      if (s.grad().defined()) sq += s.grad().to(at::kDouble).pow(2).sum();
    }
    group_->all_reduce(sq, "grad_norm");
    const double norm = std::sqrt(sq.item<double>());
    if (std::isfinite(max_norm) || !std::isfinite(norm)) {
      const double coef = std::min(1.0, max_norm / (norm + 1e-6));
      if (std::isfinite(coef)) {
        for (auto& s : segments_) {
          if (s.grad().defined()) s.mutable_grad().mul_(coef);
        }
      }
    }
    return norm;
  }
  void step() override {
    optimizer_->step();
    // Parameters are whole again on every rank: all-gather the master shard, bucket by bucket.
    torch::NoGradGuard no_grad;
    const int rank = group_->rank();
    for (size_t b = 0; b < layout_->buckets().size(); ++b) {
      const Bucket& bucket = layout_->buckets()[b];
      const int64_t start = layout_->shard_offset_of_bucket(b);
      const ShardInfo part = layout_->bucket_part(b, rank);
      at::Tensor input = master_.slice(0, start, start + part.size).to(params_[0].scalar_type());
      at::Tensor output = at::empty({bucket.numel}, input.options());
      group_->all_gather(output, input.contiguous(), "param_all_gather");
      for (const Piece& piece : bucket.pieces) {
        params_[piece.param].detach().view(-1).slice(0, piece.param_offset, piece.param_offset + piece.numel)
            .copy_(output.slice(0, piece.offset - bucket.offset, piece.offset - bucket.offset + piece.numel));
      }
    }
  }

  io::TensorMap optimizer_state() const override {
    return detail::shard_state(*optimizer_, segments_, segment_keys(), shard_layout());
  }
  void load_optimizer_state(const io::TensorMap& saved, const std::string& where) override {
    detail::load_shard_state(*optimizer_, segments_, segment_keys(), shard_layout(), "bucket size in MiB", saved,
                             where);
  }
  MemoryReport memory() const override {
    MemoryReport r;
    for (const auto& p : params_) {
      r.parameters += nbytes(p);
      r.gradients += nbytes(p.grad());
    }
    r.gradients += nbytes(grad_shard_);
    r.master_weights = nbytes(master_);
    r.optimizer_states = adam_state_bytes(*optimizer_);
    r.numel = layout_->numel();
    r.padded_numel = layout_->padded_numel();
    r.peak_parameters = r.parameters;
    return r;
  }

 private:
  std::vector<std::string> segment_keys() const {
    std::vector<std::string> keys;
    for (const Piece& piece : pieces_) keys.push_back(zerodiff::str(names_[piece.param], "@", piece.param_offset));
    return keys;
  }
  std::vector<int64_t> shard_layout() const {
    return {group_->size(), layout_->numel(), layout_->bucket_numel(), stage_};
  }

  int stage_;
  StrategyOptions options_;
  std::vector<at::Tensor> params_;  // flat order
  std::vector<std::string> names_;
  std::vector<size_t> group_of_;
  std::unique_ptr<FlatLayout> layout_;
  at::Tensor master_;                // [shard_numel] fp32 (bf16-true: the parameters' dtype)
  at::Tensor grad_shard_;            // [shard_numel] fp32 (zero2)
  std::vector<Piece> pieces_;        // this rank's shard, by parameter run
  std::vector<at::Tensor> segments_;  // views of master_, one per piece: what AdamW updates
  std::unique_ptr<torch::optim::Optimizer> optimizer_;  // torch AdamW or HybridAdam (same state types)
  std::unique_ptr<detail::GradientReducer> reducer_;
};

}  // namespace

std::unique_ptr<Strategy> make_strategy(StrategyKind kind, std::shared_ptr<dist::ProcessGroup> group,
                                        StrategyOptions options) {
  ZD_CHECK(group != nullptr, "make_strategy: no process group");
  ZD_CHECK(options.bucket_numel >= 1, "bucket size must be >= 1 element, got ", options.bucket_numel);
  switch (kind) {
    case StrategyKind::single: return std::make_unique<ReplicatedStrategy>(std::move(group), false, options);
    case StrategyKind::ddp: return std::make_unique<ReplicatedStrategy>(std::move(group), true, options);
    case StrategyKind::zero1: return std::make_unique<ZeroStrategy>(std::move(group), 1, options);
    case StrategyKind::zero2: return std::make_unique<ZeroStrategy>(std::move(group), 2, options);
    case StrategyKind::zero3:
    case StrategyKind::gemini: return detail::make_zero3(std::move(group), std::move(options), kind);
  }
  throw Error(zerodiff::str("make_strategy: ", static_cast<int>(kind), " is not a strategy (", enum_list<StrategyKind>(),
                            ")"));
}

std::unique_ptr<Strategy> make_strategy(std::string_view name, std::shared_ptr<dist::ProcessGroup> group,
                                        StrategyOptions options) {
  return make_strategy(parse_enum<StrategyKind>(name, "strategy"), std::move(group), std::move(options));
}

MemoryReport zero_memory_formula(StrategyKind strategy, int64_t numel, int world_size) {
  ZD_CHECK(world_size >= 1, "world size must be >= 1");
  MemoryReport r;
  const int64_t psi = numel, n = world_size;
  r.numel = psi;
  r.parameters = 4 * psi;
  switch (strategy) {
    case StrategyKind::single:
    case StrategyKind::ddp:
      r.gradients = 4 * psi;
      r.optimizer_states = 8 * psi;
      return r;
    case StrategyKind::zero1:
      r.gradients = 4 * psi;
      r.master_weights = 4 * psi / n;
      r.optimizer_states = 8 * psi / n;
      return r;
    case StrategyKind::zero2:
      r.gradients = 4 * psi / n;
      r.master_weights = 4 * psi / n;
      r.optimizer_states = 8 * psi / n;
      return r;
    case StrategyKind::zero3:
      r.parameters = 4 * psi / n;  // the fp32 shard is the master: no second copy
      r.gradients = 4 * psi / n;
      r.optimizer_states = 8 * psi / n;
      return r;
    case StrategyKind::gemini: break;  // (what gemini holds where depends on its placement)
  }
  throw Error(zerodiff::str("zero_memory_formula: no formula for strategy '", name_of(strategy), "'"));
}

MemoryReport zero_memory_formula(std::string_view strategy, int64_t numel, int world_size) {
  return zero_memory_formula(parse_enum<StrategyKind>(strategy, "strategy"), numel, world_size);
}

}  // namespace zerodiff::parallel
