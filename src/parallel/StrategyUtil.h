// Internal helpers shared by the strategies (defined in Strategy.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/optim/adamw.h>

#include <vector>

#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/parallel/Strategy.h"

namespace zerodiff::parallel::detail {

torch::optim::AdamWOptions adamw_options(double lr, const AdamWSettings& s);
/// Non-empty groups of floating-point tensors, each tensor once, names unique (Error naming the culprit).
void check_groups(const std::vector<ParamGroupSpec>& groups);
/// Rank 0's values into every tensor of `tensors` (one broadcast per dtype/device).
void broadcast_from_rank0(dist::ProcessGroup& group, const std::vector<at::Tensor>& tensors);
int64_t nbytes(const at::Tensor& t);
/// torch::optim::AdamW, or zerodiff's HybridAdam (SIMD CPU kernel, same options and state types) when `hybrid`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                                                        const torch::optim::AdamWOptions& defaults, bool hybrid);
int64_t adam_state_bytes(const torch::optim::Optimizer& opt);

}  // namespace zerodiff::parallel::detail
