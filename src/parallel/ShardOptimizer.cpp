// What the shard optimizers share (see ShardOptimizer.h): setup's bookkeeping, the checkpoint keys and layout, the
// optimizer block's disk form and the EMA update.
#include "ShardOptimizer.h"

#include <ATen/ATen.h>

#include "zerodiff/core/Error.h"

namespace zerodiff::parallel::detail {

std::vector<at::Tensor> OptimizerBlock::take_tensors() && {
  std::vector<at::Tensor> out{std::move(master), std::move(exp_avg), std::move(exp_avg_sq)};
  if (ema.defined()) out.push_back(std::move(ema));
  return out;
}

OptimizerBlock OptimizerBlock::from_tensors(std::vector<at::Tensor> tensors) {
  ZD_CHECK(tensors.size() == 3 || tensors.size() == 4, "an optimizer block has 3 tensors (4 with an EMA), got ",
           tensors.size());
  OptimizerBlock b{std::move(tensors[0]), std::move(tensors[1]), std::move(tensors[2]), at::Tensor()};
  if (tensors.size() == 4) b.ema = std::move(tensors[3]);
  return b;
}

void ShardOptimizer::setup(memory::ChunkManager& chunks, std::vector<Segment> segments,
                           const std::vector<ParamGroupSpec>& groups, const AdamWSettings& adamw) {
  ZD_CHECK(chunks_ == nullptr, "ShardOptimizer::setup: called twice");
  chunks_ = &chunks;
  segments_ = std::move(segments);
  build(groups, adamw);
  ZD_INTERNAL_ASSERT(segment_tensors_.size() == segments_.size() && grad_shards_.size() == chunks.num_chunks(),
                     "shard optimizer: ", segment_tensors_.size(), " segment tensors for ", segments_.size(),
                     " segments, ", grad_shards_.size(), " gradient shards for ", chunks.num_chunks(), " chunks");
}

std::vector<std::string> ShardOptimizer::segment_keys() const {
  std::vector<std::string> keys;
  for (const Segment& s : segments_) {
    keys.push_back(zerodiff::str(chunks_->params()[s.param].first, "@", s.param_offset));
  }
  return keys;
}

std::vector<int64_t> ShardOptimizer::shard_layout() const {
  return {group_.size(), chunks_->numel(), chunks_->chunk_numel(), 3};
}

void ShardOptimizer::update_ema(at::Tensor& ema, const at::Tensor& master, double decay) {
  ema.sub_((ema - master.to(at::kFloat)) * (1.0 - decay));
}

}  // namespace zerodiff::parallel::detail
