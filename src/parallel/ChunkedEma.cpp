// The sharded EMA of zero3 and gemini (see ChunkedEma.h).
#include "ChunkedEma.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <map>

#include "zerodiff/core/Error.h"

namespace zerodiff::parallel::detail {

memory::ChunkManager& ChunkedEma::chunks() const {
  ZD_CHECK(chunks_ != nullptr, "strategy ", strategy_, ": the sharded EMA is used before setup()");
  return *chunks_;
}

std::vector<at::Tensor> ChunkedEma::params() const {
  std::vector<at::Tensor> out;
  if (chunks_ == nullptr) return out;
  for (const auto& [_, p] : chunks_->params()) out.push_back(p);
  return out;
}

void ChunkedEma::set_decay(double decay) {
  ZD_CHECK(decay >= 0 && decay <= 1, "EMA decay must be in [0, 1], got ", decay);
  decay_ = decay;
}

double ChunkedEma::take_decay() {
  ZD_CHECK(std::isfinite(decay_), "strategy ", strategy_,
           " keeps a sharded EMA: call sharded_ema()->set_decay(decay) before every step()");
  const double d = decay_;
  decay_ = NAN;
  return d;
}

std::vector<std::pair<at::Tensor, at::Tensor>> ChunkedEma::gather() {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  torch::NoGradGuard no_grad;
  const memory::ChunkManager& manager = chunks();
  const bool root = group_.rank() == 0;
  const c10::Device device = manager.chunk(0).device();  // (the backend's; gemini's shards may be on the host)
  std::vector<std::pair<at::Tensor, at::Tensor>> out;
  for (size_t c = 0; c < manager.num_chunks(); ++c) {
    const memory::Chunk& chunk = manager.chunk(c);
    at::Tensor full;  // [chunk_numel] fp32
    shards_.with_block(c, [&](OptimizerBlock& b) {
      if (chunk.keep_gathered()) {
        full = root ? b.ema.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true) : at::Tensor();  // whole everywhere
      } else {
        full = at::empty({chunk.chunk_numel()}, at::TensorOptions().dtype(at::kFloat).device(device));
        group_.all_gather(full, b.ema.to(device).contiguous(), "ema_all_gather");
      }
    });
    if (!root) continue;
    full = full.cpu();
    for (const auto& ct : chunk.tensors()) {
      out.emplace_back(ct.param, full.slice(0, ct.offset, ct.offset + ct.numel).view(ct.param.sizes()).clone());
    }
  }
  shards_.flush();
  return out;
}

void ChunkedEma::load(const std::vector<std::pair<at::Tensor, at::Tensor>>& whole, const std::string& where) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  torch::NoGradGuard no_grad;
  const memory::ChunkManager& manager = chunks();
  std::map<const void*, at::Tensor> by_param;
  for (const auto& [p, t] : whole) by_param[p.unsafeGetTensorImpl()] = t;
  const int rank = group_.rank();
  for (size_t c = 0; c < manager.num_chunks(); ++c) {
    const memory::Chunk& chunk = manager.chunk(c);
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
    shards_.with_block(c, [&](OptimizerBlock& b) { b.ema.copy_(full.slice(0, lo, lo + n)); });
  }
  shards_.flush();
}

void ChunkedEma::use_ema_weights(bool on) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  ZD_CHECK(!held_full_, "use_ema_weights: not while the whole model is gathered (gather_full_parameters)");
  ZD_CHECK(!on || saved_.empty(), "use_ema_weights(true): the EMA weights are already in the parameter shards");
  ZD_CHECK(on || !saved_.empty(),
           "use_ema_weights(false): the parameter shards hold the trained weights already (no use_ema_weights(true) "
           "before)");
  torch::NoGradGuard no_grad;
  memory::ChunkManager& manager = chunks();
  manager.release_all();  // (the shards are what the units gather next)
  for (size_t c = 0; c < manager.num_chunks(); ++c) shards_.wait_shard(c);
  if (on) {
    // All or nothing: first a copy of every chunk's trained shard (zero3's fp32 master may be this very tensor;
    // gemini keeps the copies in host memory, outside the device budget), then the EMA into the shards, so that
    // use_ema_weights(false) restores every chunk whichever step throws.
    std::vector<at::Tensor> saved;
    saved.reserve(manager.num_chunks());
    for (size_t c = 0; c < manager.num_chunks(); ++c) saved.push_back(shards_.stash(local_shard(manager.chunk(c))));
    saved_ = std::move(saved);
    for (size_t c = 0; c < manager.num_chunks(); ++c) {
      shards_.wait_shard(c);  // (fetching an earlier block may have moved this shard)
      at::Tensor shard = local_shard(manager.chunk(c));
      shards_.with_block(c, [&](OptimizerBlock& b) { shard.copy_(b.ema); });
    }
  } else {
    for (size_t c = 0; c < manager.num_chunks(); ++c) {
      shards_.wait_shard(c);
      local_shard(manager.chunk(c)).copy_(saved_[c]);
    }
    saved_.clear();
  }
  shards_.flush();
}

}  // namespace zerodiff::parallel::detail
