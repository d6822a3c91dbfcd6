// Internal helpers shared by the strategies (defined in Strategy.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/optim/adamw.h>

#include <string>
#include <vector>

#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/parallel/FlatLayout.h"
#include "zerodiff/parallel/Strategy.h"

namespace zerodiff::parallel::detail {

torch::optim::AdamWOptions adamw_options(double lr, const AdamWSettings& s);
/// Non-empty groups of floating-point tensors, each tensor once, names unique (Error naming the culprit).
void check_groups(const std::vector<ParamGroupSpec>& groups);
/// Rank 0's values into every tensor of `tensors` (one broadcast per dtype/device).
void broadcast_from_rank0(dist::ProcessGroup& group, const std::vector<at::Tensor>& tensors);
int64_t nbytes(const at::Tensor& t);
/// `p`'s AdamW state, if it has one, as "<key>.exp_avg", "<key>.exp_avg_sq", "<key>.step" (int64) into `out`.
void save_adam_entry(const torch::optim::Optimizer& opt, const at::Tensor& p, const std::string& key,
                     io::TensorMap& out);
/// Restores save_adam_entry's "<key>.*" into `p`'s AdamW state (nothing saved: no update yet, left empty).
/// Throws IoError naming `where` and `key` when an entry is missing or its shape differs from `p`'s.
void load_adam_entry(torch::optim::Optimizer& opt, const at::Tensor& p, const std::string& key,
                     const io::TensorMap& saved, const std::string& where);
/// The ZeRO shard checkpoint format: "layout" = [world size, Ψ, bucket or chunk elements, stage], then for each
/// segment (this rank's run of one parameter) "<key>.master" and, once updated, "<key>.exp_avg", ".exp_avg_sq",
/// ".step". `segments` are the tensors the optimizer updates, `keys` their names ("<parameter>@<offset>").
io::TensorMap shard_state(const torch::optim::Optimizer& opt, const std::vector<at::Tensor>& segments,
                          const std::vector<std::string>& keys, const std::vector<int64_t>& layout);
/// Restores shard_state() into `segments` (masters copied in, AdamW states set) after checking its layout
/// against `layout`: IoError naming `where` and what differs (`size_option` is the config key of entry 2).
void load_shard_state(torch::optim::Optimizer& opt, const std::vector<at::Tensor>& segments,
                      const std::vector<std::string>& keys, const std::vector<int64_t>& layout,
                      const char* size_option, const io::TensorMap& saved, const std::string& where);
/// Checks shard_state()'s "layout" entry of `saved` against `layout` (IoError naming `where` and what differs).
void check_shard_layout(const std::vector<int64_t>& layout, const char* size_option, const io::TensorMap& saved,
                        const std::string& where);
/// Warns when a layout has so many buckets that collective overhead will dominate (a tiny bucket_size_mb).
void warn_bucket_count(const FlatLayout& layout);
/// torch::optim::AdamW, or zerodiff's HybridAdam (SIMD CPU kernel, same options and state types) when `hybrid`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                                                        const torch::optim::AdamWOptions& defaults, bool hybrid);
int64_t adam_state_bytes(const torch::optim::Optimizer& opt);

}  // namespace zerodiff::parallel::detail
