#include "zerodiff/train/EmaKeeper.h"

#include <map>
#include <set>
#include <utility>
#include <vector>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/io/Diffusers.h"

namespace zerodiff::train {

namespace {

// train::EMA over the whole model.
class WholeEmaKeeper final : public EmaKeeper {
 public:
  WholeEmaKeeper(torch::nn::Module& model, const EMAOptions& options) : model_(model), ema_(model, options) {}

  void before_step(int64_t) override {}
  void after_step(int64_t step) override { ema_.update(model_, step); }
  io::TensorMap state() override { return io::TensorMap(ema_.shadow().begin(), ema_.shadow().end()); }
  void load(const io::TensorMap& saved, const std::string&) override {
    ema_.load(std::map<std::string, at::Tensor>(saved.begin(), saved.end()));
  }
  void use_ema_weights(bool on) override {
    if (on) {
      raw_.clear();
      for (auto& [k, v] : io::state_dict(model_)) raw_[k] = v.clone();
      ema_.copy_to(model_);
    } else {
      io::load_state_dict(model_, raw_);
      raw_.clear();
    }
  }

 private:
  torch::nn::Module& model_;
  EMA ema_;
  io::TensorMap raw_;  // the trained weights while the EMA ones are in use
};

// The strategy's sharded EMA, under the names train::EMA would use.
class ShardedEmaKeeper final : public EmaKeeper {
 public:
  ShardedEmaKeeper(torch::nn::Module& model, const EMAOptions& options, parallel::Strategy& strategy,
                   parallel::ShardedEma& ema, bool is_rank0)
      : options_(options), ema_(ema), is_rank0_(is_rank0) {
    // The names train::EMA would use: trainable parameters, a tied tensor under each of its names.
    std::set<const void*> chunked;
    for (const auto& p : ema.params()) chunked.insert(p.unsafeGetTensorImpl());
    for (const auto& p : model.named_parameters(true)) {
      if (!p.value().requires_grad()) continue;
      if (!chunked.count(p.value().unsafeGetTensorImpl())) {
        throw NotImplementedError(zerodiff::str(
            "trainer.ema with strategy ", strategy.name(), ": parameter '", p.key(),
            "' requires a gradient but is in none of the module's parameter groups, so it is not sharded; the sharded "
            "EMA covers the trained parameters only (set requires_grad false on it, or add it to a group)"));
      }
      params_.emplace_back(p.key(), p.value());
    }
  }

  void before_step(int64_t step) override { ema_.set_decay(ema_decay_at(options_, step)); }
  void after_step(int64_t) override {}  // updated inside step(), after AdamW
  io::TensorMap state() override {
    std::map<const void*, at::Tensor> whole;
    for (auto& [p, t] : ema_.gather()) whole.emplace(p.unsafeGetTensorImpl(), std::move(t));
    io::TensorMap out;
    if (!is_rank0_) return out;
    for (const auto& [name, p] : params_) out[name] = whole.at(p.unsafeGetTensorImpl());
    return out;
  }
  void load(const io::TensorMap& saved, const std::string& where) override {
    std::vector<std::pair<at::Tensor, at::Tensor>> whole;
    for (const auto& [name, p] : params_) {
      auto it = saved.find(name);
      if (it == saved.end()) throw IoError(zerodiff::str(where, ": no EMA weight for parameter '", name, "'"));
      whole.emplace_back(p, it->second);
    }
    ema_.load(whole, where);
  }
  void use_ema_weights(bool on) override { ema_.use_ema_weights(on); }

 private:
  EMAOptions options_;
  parallel::ShardedEma& ema_;
  bool is_rank0_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
};

}  // namespace

std::unique_ptr<EmaKeeper> make_ema_keeper(const EMAOptions& options, torch::nn::Module& model,
                                           parallel::Strategy& strategy, bool is_rank0) {
  check_ema_options(options);
  if (parallel::ShardedEma* sharded = strategy.sharded_ema()) {
    return std::make_unique<ShardedEmaKeeper>(model, options, strategy, *sharded, is_rank0);
  }
  return std::make_unique<WholeEmaKeeper>(model, options);
}

EmaWeightsScope::EmaWeightsScope(EmaKeeper& keeper) : keeper_(keeper) { keeper_.use_ema_weights(true); }

EmaWeightsScope::~EmaWeightsScope() {
  if (!armed_) return;
  try {
    keeper_.use_ema_weights(false);
  } catch (const std::exception& e) {
    ZD_LOG_ERROR("could not put the trained weights back after using the EMA weights: ", e.what());
  }
}

void EmaWeightsScope::restore() {
  armed_ = false;
  keeper_.use_ema_weights(false);
}

}  // namespace zerodiff::train
