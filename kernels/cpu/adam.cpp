// CPU kernel: Adam / AdamW update (zerodiff/kernels/Adam.h). Highway's foreach_target compiles the loop once per
// SIMD target and dispatches at run time; at::parallel_for splits the tensor into blocks. Reference:
// adam_step_reference below (plain ATen, the same operation order as torch.optim.AdamW's single-tensor path).
// Design rules: raw contiguous pointers in the kernel, no temporaries, the half copy written while the block is
// in cache.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/adam.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <cmath>
#include <cstdint>

// Shared by every target's copy of the kernel (this file is compiled once per target).
#ifndef ZERODIFF_ADAM_SCALARS
#define ZERODIFF_ADAM_SCALARS
namespace zerodiff::kernels::detail {
struct AdamScalars {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay, step_size, inv_sqrt_bc2,
      inv_grad_scale;
  bool adamw;
};
}  // namespace zerodiff::kernels::detail
#endif

HWY_BEFORE_NAMESPACE();
namespace zerodiff::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void AdamBlock(float* HWY_RESTRICT p, const float* HWY_RESTRICT g, float* HWY_RESTRICT m, float* HWY_RESTRICT v,
               int64_t n, const detail::AdamScalars& s) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto b1 = hn::Set(d, s.beta1), omb1 = hn::Set(d, s.one_minus_beta1);
  const auto b2 = hn::Set(d, s.beta2), omb2 = hn::Set(d, s.one_minus_beta2);
  const auto eps = hn::Set(d, s.eps), wd = hn::Set(d, s.weight_decay), decay = hn::Set(d, s.decay);
  const auto step_size = hn::Set(d, s.step_size), ibc2 = hn::Set(d, s.inv_sqrt_bc2);
  const auto inv_scale = hn::Set(d, s.inv_grad_scale);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    auto pv = hn::LoadU(d, p + i);
    auto gv = hn::Mul(hn::LoadU(d, g + i), inv_scale);
    if (s.adamw) {
      pv = hn::Mul(pv, decay);
    } else {
      gv = hn::MulAdd(wd, pv, gv);
    }
    const auto mv = hn::MulAdd(gv, omb1, hn::Mul(hn::LoadU(d, m + i), b1));
    const auto vv = hn::MulAdd(hn::Mul(gv, gv), omb2, hn::Mul(hn::LoadU(d, v + i), b2));
    const auto denom = hn::MulAdd(hn::Sqrt(vv), ibc2, eps);
    pv = hn::NegMulAdd(hn::Div(mv, denom), step_size, pv);
    hn::StoreU(mv, d, m + i);
    hn::StoreU(vv, d, v + i);
    hn::StoreU(pv, d, p + i);
  }
  for (; i < n; ++i) {  // tail: the same operations, one element at a time
    float pv = p[i], gv = g[i] * s.inv_grad_scale;
    if (s.adamw) {
      pv *= s.decay;
    } else {
      gv = std::fma(s.weight_decay, pv, gv);
    }
    const float mv = std::fma(gv, s.one_minus_beta1, m[i] * s.beta1);
    const float vv = std::fma(gv * gv, s.one_minus_beta2, v[i] * s.beta2);
    const float denom = std::fma(std::sqrt(vv), s.inv_sqrt_bc2, s.eps);
    m[i] = mv;
    v[i] = vv;
    p[i] = std::fma(-(mv / denom), s.step_size, pv);
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace zerodiff::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/Adam.h"

namespace zerodiff::kernels {

HWY_EXPORT(AdamBlock);
HWY_EXPORT(TargetName);

const char* adam_simd_target() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

namespace {

void check(const at::Tensor& t, const char* name, int64_t numel, bool fp32) {
  ZD_CHECK(t.defined() && t.device().is_cpu() && t.is_contiguous(), "adam_step_cpu: ", name,
           " must be a contiguous CPU tensor");
  ZD_CHECK(!fp32 || t.scalar_type() == at::kFloat, "adam_step_cpu: ", name, " must be float32, got ", t.scalar_type());
  ZD_CHECK(t.numel() == numel, "adam_step_cpu: ", name, " has ", t.numel(), " elements, the parameter ", numel);
}

}  // namespace

void adam_step_cpu(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                   const AdamStepArgs& a, const at::Tensor& half_copy) {
  const int64_t n = param.numel();
  check(param, "param", n, true);
  check(grad, "grad", n, true);
  check(exp_avg, "exp_avg", n, true);
  check(exp_avg_sq, "exp_avg_sq", n, true);
  ZD_CHECK(a.step >= 1, "adam_step_cpu: step must be >= 1, got ", a.step);
  if (half_copy.defined()) {
    check(half_copy, "half_copy", n, false);
    ZD_CHECK(half_copy.scalar_type() == at::kHalf || half_copy.scalar_type() == at::kBFloat16,
             "adam_step_cpu: half_copy must be float16 or bfloat16, got ", half_copy.scalar_type());
  }
  const double bc1 = 1.0 - std::pow(a.beta1, static_cast<double>(a.step));
  const double bc2 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
  const detail::AdamScalars s{static_cast<float>(a.beta1),
                              static_cast<float>(1.0 - a.beta1),
                              static_cast<float>(a.beta2),
                              static_cast<float>(1.0 - a.beta2),
                              static_cast<float>(a.eps),
                              static_cast<float>(a.weight_decay),
                              static_cast<float>(1.0 - a.lr * a.weight_decay),
                              static_cast<float>(a.lr / bc1),
                              static_cast<float>(1.0 / std::sqrt(bc2)),
                              static_cast<float>(a.inv_grad_scale),
                              a.adamw};
  float* p = param.data_ptr<float>();
  const float* g = grad.const_data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  void* half = half_copy.defined() ? half_copy.data_ptr() : nullptr;
  const bool bf16 = half_copy.defined() && half_copy.scalar_type() == at::kBFloat16;
  // Blocks of 16 Ki elements (64 KiB per array: the half copy is written while the block is in L2).
  constexpr int64_t kBlock = int64_t{1} << 14;
  at::parallel_for(0, (n + kBlock - 1) / kBlock, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t lo = b * kBlock, len = std::min(kBlock, n - lo);
      HWY_DYNAMIC_DISPATCH(AdamBlock)(p + lo, g + lo, m + lo, v + lo, len, s);
      if (half == nullptr) continue;
      // ATen's vectorized conversion (round to nearest even, exactly Tensor::to) while the block is in cache;
      // inside this parallel region it runs on the calling thread.
      const at::Tensor src = at::from_blob(p + lo, {len}, at::TensorOptions().dtype(at::kFloat));
      at::Tensor dst = at::from_blob(static_cast<char*>(half) + lo * 2, {len},
                                     at::TensorOptions().dtype(bf16 ? at::kBFloat16 : at::kHalf));
      dst.copy_(src);
    }
  });
}

void adam_step_reference(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                         const AdamStepArgs& a) {
  at::NoGradGuard no_grad;
  at::Tensor g = a.inv_grad_scale == 1.0 ? grad : grad * a.inv_grad_scale;
  if (a.adamw) {
    param.mul_(1.0 - a.lr * a.weight_decay);
  } else if (a.weight_decay != 0) {
    g = g.add(param, a.weight_decay);
  }
  const double bc1 = 1.0 - std::pow(a.beta1, static_cast<double>(a.step));
  const double bc2 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
  exp_avg.mul_(a.beta1).add_(g, 1.0 - a.beta1);
  exp_avg_sq.mul_(a.beta2).addcmul_(g, g, 1.0 - a.beta2);
  const at::Tensor denom = (exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(a.eps);
  param.addcdiv_(exp_avg, denom, -a.lr / bc1);
}

}  // namespace zerodiff::kernels
#endif  // HWY_ONCE
