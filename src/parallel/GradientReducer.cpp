#include "GradientReducer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "zerodiff/core/Error.h"

namespace zerodiff::parallel::detail {

GradientReducer::GradientReducer(dist::ProcessGroup& group, const FlatLayout& layout, std::vector<at::Tensor> params,
                                 std::vector<std::string> names, Mode mode, at::Tensor grad_shard)
    : group_(group),
      layout_(layout),
      params_(std::move(params)),
      names_(std::move(names)),
      mode_(mode),
      grad_shard_(std::move(grad_shard)) {
  ZD_CHECK(mode_ == Mode::all_reduce || grad_shard_.defined(), "GradientReducer: reduce_scatter needs a gradient shard");
  const size_t n = params_.size();
  pending_.assign(layout_.buckets().size(), 0);
  unsent_.assign(n, 0);
  ready_.assign(n, 0);
  locally_used_.assign(n, 0);
  globally_used_.assign(n, 0);
  // Every check before the first hook: a throwing constructor must not leave hooks pointing at it.
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params_[i];
    ZD_CHECK(p.is_leaf() && p.requires_grad(), "parameter '", names_[i], "' is not a trainable leaf tensor");
    ZD_CHECK(p.scalar_type() == params_[0].scalar_type() && p.device() == params_[0].device(), "parameter '",
             names_[i], "' is ", p.scalar_type(), " on ", p.device(), " but '", names_[0], "' is ",
             params_[0].scalar_type(), " on ", params_[0].device(), ": one gradient dtype and device per strategy");
    ZD_CHECK(torch::autograd::impl::grad_accumulator(p) != nullptr, "parameter '", names_[i],
             "' has no gradient accumulator");
  }
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params_[i];
    auto acc = torch::autograd::impl::grad_accumulator(p);
    hook_keys_.push_back(acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_ready(i);
          return outputs;
        })));
    accumulators_.push_back(std::move(acc));
  }
}

GradientReducer::~GradientReducer() {
  for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
}

void GradientReducer::reset_step() {
  std::fill(locally_used_.begin(), locally_used_.end(), 0);
  std::fill(globally_used_.begin(), globally_used_.end(), 0);
}

void GradientReducer::begin_backward(bool last) {
  std::lock_guard<std::mutex> lock(mutex_);
  ZD_CHECK(in_flight_.empty(), "GradientReducer: begin_backward while communication is in flight");
  armed_ = mode_ == Mode::reduce_scatter || last;
  if (!armed_) return;
  for (size_t b = 0; b < layout_.buckets().size(); ++b) {
    pending_[b] = static_cast<int64_t>(layout_.buckets()[b].pieces.size());
  }
  for (size_t i = 0; i < params_.size(); ++i) unsent_[i] = static_cast<int64_t>(layout_.buckets_of(i).size());
  std::fill(ready_.begin(), ready_.end(), 0);
  next_bucket_ = 0;
}

void GradientReducer::on_ready(size_t param) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;
  if (ready_[param]) {
    throw Error(zerodiff::str("parameter '", names_[param],
                              "' received its gradient twice in one backward (a parameter shared by two "
                              "activation-checkpointed blocks?); the ", mode_ == Mode::all_reduce ? "ddp/zero1" : "zero2",
                              " gradient buckets need one gradient per parameter per backward"));
  }
  ready_[param] = 1;
  for (size_t b : layout_.buckets_of(param)) {
    // Every piece of this parameter in bucket b (a parameter has at most one piece per bucket).
    --pending_[b];
  }
  try_launch();
}

void GradientReducer::try_launch() {
  while (next_bucket_ < layout_.buckets().size() && pending_[next_bucket_] == 0) launch(next_bucket_++);
}

void GradientReducer::launch(size_t b) {
  const Bucket& bucket = layout_.buckets()[b];
  at::Tensor buffer = at::zeros({bucket.numel}, params_[0].options().requires_grad(false));
  for (const Piece& piece : bucket.pieces) {
    at::Tensor& p = params_[piece.param];
    const at::Tensor g = p.grad();
    if (g.defined()) {
      locally_used_[piece.param] = 1;
      buffer.slice(0, piece.offset - bucket.offset, piece.offset - bucket.offset + piece.numel)
          .copy_(g.reshape(-1).slice(0, piece.param_offset, piece.param_offset + piece.numel));
    }
    if (mode_ == Mode::reduce_scatter && --unsent_[piece.param] == 0) p.mutable_grad().reset();
  }
  InFlight f;
  f.bucket = b;
  f.buffer = buffer;
  if (mode_ == Mode::all_reduce) {
    f.work = group_.all_reduce(f.buffer, "grad_all_reduce", dist::ReduceOp::sum, /*async=*/true);
  } else {
    f.output = at::empty({bucket.numel / layout_.world_size()}, buffer.options());
    f.work = group_.reduce_scatter(f.output, f.buffer, "grad_reduce_scatter", /*async=*/true);
  }
  in_flight_.push_back(std::move(f));
  while (in_flight_.size() > kMaxInFlight) complete_oldest();
}

void GradientReducer::complete_oldest() {
  InFlight f = std::move(in_flight_.front());
  in_flight_.pop_front();
  f.work.wait();
  const double n = static_cast<double>(layout_.world_size());
  const Bucket& bucket = layout_.buckets()[f.bucket];
  torch::NoGradGuard no_grad;
  if (mode_ == Mode::all_reduce) {
    f.buffer.div_(n);
    for (const Piece& piece : bucket.pieces) {
      at::Tensor& p = params_[piece.param];
      if (!p.grad().defined()) {
        p.mutable_grad() = at::zeros_like(p, at::MemoryFormat::Contiguous);
      } else if (!p.grad().is_contiguous()) {
        p.mutable_grad() = p.grad().contiguous();
      }
      p.mutable_grad()
          .view(-1)
          .slice(0, piece.param_offset, piece.param_offset + piece.numel)
          .copy_(f.buffer.slice(0, piece.offset - bucket.offset, piece.offset - bucket.offset + piece.numel));
    }
  } else {
    f.output.div_(n);
    const int64_t start = layout_.shard_offset_of_bucket(f.bucket);
    grad_shard_.slice(0, start, start + f.output.numel()).add_(f.output);
  }
}

void GradientReducer::end_backward(bool last) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;
  armed_ = false;
  // Buckets still waiting for a parameter that got no gradient in this backward go now, in order.
  while (next_bucket_ < layout_.buckets().size()) launch(next_bucket_++);
  if (last) {
    at::Tensor used = at::tensor(std::vector<int32_t>(locally_used_.begin(), locally_used_.end()),
                                 at::TensorOptions().dtype(at::kInt));
    if (params_[0].is_cuda()) used = used.to(params_[0].device());
    group_.all_reduce(used, "grad_used_flags", dist::ReduceOp::max);
    used = used.cpu();
    const int32_t* u = used.data_ptr<int32_t>();
    globally_used_.assign(u, u + used.numel());
  }
  while (!in_flight_.empty()) complete_oldest();
  if (last && mode_ == Mode::all_reduce) {
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!globally_used_[i]) params_[i].mutable_grad().reset();  // no rank used it: AdamW skips it
    }
  }
}

}  // namespace zerodiff::parallel::detail
