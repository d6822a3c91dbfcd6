// Internal: gradient communication that overlaps backward, bucket by bucket (torch's c10d Reducer idea,
// torch/csrc/distributed/c10d/reducer.cpp): a post-hook on every parameter's AccumulateGrad node marks the
// parameter ready; a bucket whose parameters are all ready is sent at once, buckets strictly in index order
// (so every rank issues the same collectives in the same order even when readiness differs); at the end
// of backward the rest are sent (parameters without a gradient contribute zeros) and everything is awaited.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/function.h>

#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/parallel/FlatLayout.h"

namespace zerodiff::parallel::detail {

class GradientReducer {
 public:
  /// all_reduce: ddp / zero1 — buckets are summed over ranks and divided by N, the averaged gradient is
  ///   written back into each parameter's .grad; communication happens only on a step's last micro-batch
  ///   (earlier ones accumulate locally, as DDP's no_sync).
  /// reduce_scatter: zero2 — every micro-batch's buckets are reduce-scattered, averaged and added into
  ///   `grad_shard` (this rank's FlatLayout shard); each parameter's .grad is released once all its buckets
  ///   are sent, so no full gradient outlives its bucket.
  enum class Mode { all_reduce, reduce_scatter };

  GradientReducer(dist::ProcessGroup& group, const FlatLayout& layout, std::vector<at::Tensor> params,
                  std::vector<std::string> names, Mode mode, at::Tensor grad_shard = {});
  ~GradientReducer();

  void begin_backward(bool last);
  void end_backward(bool last);
  /// After the last end_backward of a step: whether any rank produced a gradient for parameter i this step.
  bool globally_used(size_t i) const { return globally_used_[i] != 0; }
  /// Clears the per-step "used" record (call at zero_grad).
  void reset_step();

 private:
  void on_ready(size_t param);
  void try_launch();
  void launch(size_t bucket);
  void complete_oldest();

  struct InFlight {
    size_t bucket;
    at::Tensor buffer;  // [bucket numel] (all_reduce) or the reduce-scatter input
    at::Tensor output;  // reduce_scatter: [bucket numel / N]
    dist::Work work;
  };

  dist::ProcessGroup& group_;
  const FlatLayout& layout_;
  std::vector<at::Tensor> params_;
  std::vector<std::string> names_;
  Mode mode_;
  at::Tensor grad_shard_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;  // kept alive: hooks live on them
  std::vector<uintptr_t> hook_keys_;
  std::mutex mutex_;
  bool armed_ = false;
  std::vector<int64_t> pending_;        // per bucket: parameters not yet ready in this backward
  std::vector<int64_t> unsent_;         // per parameter: its buckets not yet sent in this backward
  std::vector<uint8_t> ready_;          // per parameter: hook fired in this backward
  std::vector<int32_t> locally_used_;   // per parameter: had a gradient in this step
  std::vector<int32_t> globally_used_;
  size_t next_bucket_ = 0;
  std::deque<InFlight> in_flight_;
  static constexpr size_t kMaxInFlight = 2;
};

}  // namespace zerodiff::parallel::detail
