// zerodiff/kernels/Adam.h — the Adam / AdamW update of one contiguous fp32 tensor on the CPU, SIMD (Highway,
// runtime-dispatched AVX2 / AVX-512 / NEON) and multi-threaded, with a plain ATen reference beside it.
//
// The update (Kingma & Ba 2015; AdamW: Loshchilov & Hutter 2019; operation order as torch.optim.AdamW's
// single-tensor path), for step t >= 1, g = grad * inv_grad_scale:
//   AdamW: p *= 1 - lr * wd             Adam: g += wd * p
//   m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g²
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Bias corrections are folded into two scalars per step. It reads p, g, m, v and writes p, m, v: 28 bytes per
// element (+2 with the fp16/bf16 compute copy, written in the same pass).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace zerodiff::kernels {

struct AdamStepArgs {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool adamw = true;            ///< decoupled weight decay (AdamW) or L2 added to the gradient (Adam)
  int64_t step = 1;             ///< the step being taken (1 for the first)
  double inv_grad_scale = 1.0;  ///< gradients are multiplied by this (un-scaling a loss scale in the same pass)
};

/// Updates `param`, `exp_avg`, `exp_avg_sq` in place from `grad` (all contiguous float32 CPU tensors with the
/// same number of elements). When `half_copy` is defined (contiguous float16 or bfloat16, same size) it receives
/// the updated parameter cast to its dtype (round to nearest even, as Tensor::to). Throws zerodiff::Error naming
/// the tensor on a wrong dtype, device, layout or size.
void adam_step_cpu(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                   const AdamStepArgs& args, const at::Tensor& half_copy = {});

/// The same update with plain ATen ops (the reference of the tests and benchmarks; any device).
void adam_step_reference(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                         const AdamStepArgs& args);

/// The SIMD target Highway chose on this machine (e.g. "AVX3", "AVX2", "NEON").
const char* adam_simd_target();

}  // namespace zerodiff::kernels
