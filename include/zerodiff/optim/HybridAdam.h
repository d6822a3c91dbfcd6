// zerodiff/optim/HybridAdam.h — Adam/AdamW as a drop-in torch::optim::Optimizer whose CPU parameters are
// updated by zerodiff's SIMD kernel (kernels/Adam.h: Highway runtime dispatch, multi-threaded, bias correction
// folded, loss-scale un-scaling and the fp16/bf16 compute copy in the same pass) and whose CUDA parameters go
// through ATen's fused AdamW/Adam kernel (at::_fused_adamw_ / at::_fused_adam_). After ColossalAI's HybridAdam
// (colossalai/nn/optimizer/hybrid_adam.py) and DeepSpeed's CPUAdam.
//
// Options and per-parameter state are torch's own AdamWOptions / AdamWParamState, so state_dict save/load (and
// a checkpoint written by torch::optim::AdamW) are interchangeable. amsgrad is not supported (throws).
#pragma once

#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>

#include <map>
#include <vector>

namespace zerodiff::optim {

class HybridAdam : public torch::optim::Optimizer {
 public:
  /// `adamw_mode`: decoupled weight decay (AdamW, default) or L2 in the gradient (Adam). Every parameter must be
  /// float32 (fp32 master weights); throws zerodiff::Error naming the group otherwise, NotImplementedError for
  /// amsgrad.
  HybridAdam(const std::vector<torch::optim::OptimizerParamGroup>& groups, torch::optim::AdamWOptions defaults = {},
             bool adamw_mode = true);
  HybridAdam(std::vector<at::Tensor> params, torch::optim::AdamWOptions defaults = {}, bool adamw_mode = true);

  /// One update of every parameter with a gradient (parameters without one are skipped, as torch's AdamW).
  /// Gradients are multiplied by inv_grad_scale() on the way (a GradScaler's 1/scale).
  at::Tensor step(LossClosure closure = nullptr) override;

  /// Gradients are multiplied by this inside the kernel (default 1).
  void set_inv_grad_scale(double inv_scale) { inv_grad_scale_ = inv_scale; }
  double inv_grad_scale() const { return inv_grad_scale_; }
  /// After each step, `param`'s updated values are also written to `copy` (float16 or bfloat16, same shape,
  /// contiguous, same device) in the same pass. An undefined `copy` removes it.
  void set_half_copy(const at::Tensor& param, const at::Tensor& copy);

  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  bool adamw_mode() const { return adamw_mode_; }

 private:
  void check_groups() const;
  bool adamw_mode_;
  double inv_grad_scale_ = 1.0;
  std::map<const void*, at::Tensor> half_copies_;
};

}  // namespace zerodiff::optim
