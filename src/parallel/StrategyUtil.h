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
int64_t adam_state_bytes(const torch::optim::AdamW& opt);

}  // namespace zerodiff::parallel::detail
