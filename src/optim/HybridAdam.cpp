#include "zerodiff/optim/HybridAdam.h"

#include <ATen/ATen.h>
#include <torch/optim/serialize.h>

#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/Adam.h"

namespace zerodiff::optim {

HybridAdam::HybridAdam(const std::vector<torch::optim::OptimizerParamGroup>& groups,
                       torch::optim::AdamWOptions defaults, bool adamw_mode)
    : Optimizer(groups, std::make_unique<torch::optim::AdamWOptions>(defaults)), adamw_mode_(adamw_mode) {
  check_groups();
}

HybridAdam::HybridAdam(std::vector<at::Tensor> params, torch::optim::AdamWOptions defaults, bool adamw_mode)
    : HybridAdam({torch::optim::OptimizerParamGroup(std::move(params))}, defaults, adamw_mode) {}

void HybridAdam::check_groups() const {
  for (size_t gi = 0; gi < param_groups_.size(); ++gi) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(param_groups_[gi].options());
    if (o.amsgrad()) throw NotImplementedError("HybridAdam: amsgrad is not supported");
    ZD_CHECK(o.lr() >= 0 && o.eps() >= 0 && std::get<0>(o.betas()) >= 0 && std::get<0>(o.betas()) < 1 &&
                 std::get<1>(o.betas()) >= 0 && std::get<1>(o.betas()) < 1,
             "HybridAdam: group ", gi, " has invalid lr / betas / eps");
    for (const auto& p : param_groups_[gi].params()) {
      ZD_CHECK(p.scalar_type() == at::kFloat, "HybridAdam: group ", gi, " holds a ", p.scalar_type(),
               " parameter; HybridAdam updates float32 master weights (use set_half_copy for fp16/bf16 copies)");
    }
  }
}

void HybridAdam::set_half_copy(const at::Tensor& param, const at::Tensor& copy) {
  if (!copy.defined()) {
    half_copies_.erase(param.unsafeGetTensorImpl());
    return;
  }
  ZD_CHECK(copy.scalar_type() == at::kHalf || copy.scalar_type() == at::kBFloat16,
           "HybridAdam::set_half_copy: the copy must be float16 or bfloat16, got ", copy.scalar_type());
  ZD_CHECK(copy.sizes() == param.sizes() && copy.device() == param.device() && copy.is_contiguous(),
           "HybridAdam::set_half_copy: the copy must be contiguous, on the parameter's device and of its shape ",
           param.sizes(), ", got ", copy.sizes());
  half_copies_[param.unsafeGetTensorImpl()] = copy;
}

at::Tensor HybridAdam::step(LossClosure closure) {
  at::NoGradGuard no_grad;
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    // CUDA parameters of this group: one fused ATen call.
    std::vector<at::Tensor> cuda_params, cuda_grads, cuda_m, cuda_v, cuda_steps;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      ZD_CHECK(!p.grad().is_sparse(), "HybridAdam does not support sparse gradients");
      auto it = state_.find(p.unsafeGetTensorImpl());
      if (it == state_.end()) {
        auto st = std::make_unique<torch::optim::AdamWParamState>();
        st->step(0);
        st->exp_avg(at::zeros_like(p, at::MemoryFormat::Contiguous));
        st->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Contiguous));
        it = state_.emplace(p.unsafeGetTensorImpl(), std::move(st)).first;
      }
      auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
      s.step(s.step() + 1);
      const auto copy = half_copies_.find(p.unsafeGetTensorImpl());
      if (p.is_cuda()) {
        cuda_params.push_back(p);
        cuda_grads.push_back(inv_grad_scale_ == 1.0 ? p.grad() : p.grad() * inv_grad_scale_);
        cuda_m.push_back(s.exp_avg());
        cuda_v.push_back(s.exp_avg_sq());
        cuda_steps.push_back(at::full({}, static_cast<double>(s.step()), p.options().dtype(at::kFloat)));
        continue;
      }
      kernels::AdamStepArgs args;
      args.lr = o.lr();
      args.beta1 = std::get<0>(o.betas());
      args.beta2 = std::get<1>(o.betas());
      args.eps = o.eps();
      args.weight_decay = o.weight_decay();
      args.adamw = adamw_mode_;
      args.step = s.step();
      args.inv_grad_scale = inv_grad_scale_;
      at::Tensor param = p.is_contiguous() ? p : p.contiguous();
      const at::Tensor grad = p.grad().contiguous();
      at::Tensor m = s.exp_avg(), v = s.exp_avg_sq();
      kernels::adam_step_cpu(param, grad, m, v, args, copy == half_copies_.end() ? at::Tensor() : copy->second);
      if (!param.is_same(p)) p.copy_(param);
    }
    if (!cuda_params.empty()) {
      const double b1 = std::get<0>(o.betas()), b2 = std::get<1>(o.betas());
      if (adamw_mode_) {
        at::_fused_adamw_(cuda_params, cuda_grads, cuda_m, cuda_v, {}, cuda_steps, o.lr(), b1, b2, o.weight_decay(),
                          o.eps(), false, false);
      } else {
        at::_fused_adam_(cuda_params, cuda_grads, cuda_m, cuda_v, {}, cuda_steps, o.lr(), b1, b2, o.weight_decay(),
                         o.eps(), false, false);
      }
      for (auto& p : cuda_params) {
        const auto copy = half_copies_.find(p.unsafeGetTensorImpl());
        if (copy != half_copies_.end()) copy->second.copy_(p);
      }
    }
  }
  return loss;
}

void HybridAdam::save(torch::serialize::OutputArchive& archive) const {
  torch::optim::serialize<torch::optim::AdamWParamState, torch::optim::AdamWOptions>(archive, *this);
}

void HybridAdam::load(torch::serialize::InputArchive& archive) {
  torch::optim::serialize<torch::optim::AdamWParamState, torch::optim::AdamWOptions>(archive, *this);
  check_groups();
}

}  // namespace zerodiff::optim
