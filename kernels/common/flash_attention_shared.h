// kernels/common/flash_attention_shared.h — what the CPU (kernels/cpu/flash_attention.cpp) and the CUDA
// (kernels/cuda/flash_attn/flash_api.cpp) flash-attention entry points share: the argument checks, which name the
// function and the tensor at fault, and the autograd node over a (forward, backward) kernel pair.
//
// Internal to libzerodiff: included by those two files only, never installed. Header-only (inline functions and a
// class template), so that the CPU translation unit, compiled once per SIMD target by Highway's foreach_target,
// needs no extra source file.
#pragma once

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>
#include <initializer_list>
#include <tuple>

#include "zerodiff/core/Error.h"

namespace zerodiff::kernels::flash_shared {

/// Checks that `t` is defined, lives on a device of type `device` and is 4-d [B, H, N, D].
/// Throws zerodiff::Error "<fn>: <name> is undefined" / "must be a CPU|CUDA tensor, got device ..." /
/// "must be 4-d [B, H, N, D], got shape ...".
inline void check_4d(const at::Tensor& t, const char* fn, const char* name, c10::DeviceType device) {
  ZD_CHECK(t.defined(), fn, ": ", name, " is undefined");
  ZD_CHECK(t.device().type() == device, fn, ": ", name, " must be a ", c10::DeviceTypeName(device),
           " tensor, got device ", t.device());
  ZD_CHECK(t.dim() == 4, fn, ": ", name, " must be 4-d [B, H, N, D], got shape ", t.sizes());
}

/// Checks that `t` is on q's device (one CUDA device for every tensor of a call). Throws zerodiff::Error.
inline void check_same_device(const at::Tensor& t, const at::Tensor& q, const char* fn, const char* name) {
  ZD_CHECK(t.device() == q.device(), fn, ": ", name, " is on ", t.device(), " but q is on ", q.device());
}

/// The checks of q [B, H, Nq, D], k and v [B, H, Nkv, D] both passes share: defined, on `device` (all on q's
/// device), 4-d, q's dtype one of `dtypes` (the message lists them as `dtype_names`, e.g. "float32 or bfloat16")
/// and shared by k and v, matching B, H and D, v shaped as k, 1 <= D <= 256, Nkv >= 1, a finite scale.
/// Returns q's dtype. Throws zerodiff::Error naming fn and the tensor at fault.
inline at::ScalarType check_qkv(const char* fn, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                double scale, c10::DeviceType device, std::initializer_list<at::ScalarType> dtypes,
                                const char* dtype_names) {
  check_4d(q, fn, "q", device);
  check_4d(k, fn, "k", device);
  check_4d(v, fn, "v", device);
  check_same_device(k, q, fn, "k");
  check_same_device(v, q, fn, "v");
  const at::ScalarType dt = q.scalar_type();
  bool allowed = false;
  for (const at::ScalarType d : dtypes) allowed = allowed || d == dt;
  ZD_CHECK(allowed, fn, ": q must be ", dtype_names, ", got ", dt);
  ZD_CHECK(k.scalar_type() == dt && v.scalar_type() == dt, fn, ": q, k and v must have one dtype, got q ", dt,
           ", k ", k.scalar_type(), ", v ", v.scalar_type());
  ZD_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3), fn,
           ": k must be [B, H, Nkv, D] with B, H, D of q; q ", q.sizes(), ", k ", k.sizes());
  ZD_CHECK(v.sizes() == k.sizes(), fn, ": v must have the shape of k; k ", k.sizes(), ", v ", v.sizes());
  const int64_t d = q.size(3);
  ZD_CHECK(d >= 1 && d <= 256, fn, ": head dim D must be in 1..256, got ", d, " (q ", q.sizes(), ")");
  ZD_CHECK(k.size(2) >= 1, fn, ": k and v need at least one key (Nkv >= 1), got k ", k.sizes());
  ZD_CHECK(std::isfinite(scale), fn, ": scale must be finite, got ", scale);
  return dt;
}

/// The backward pass's extra checks, after check_qkv returned `dt`: dout and out [B, H, Nq, D] of dtype `dt` on
/// q's device, lse float32 [B, H, Nq] on q's device. Throws zerodiff::Error naming fn and the tensor at fault.
inline void check_backward_extras(const char* fn, const at::Tensor& dout, const at::Tensor& q, const at::Tensor& out,
                                  const at::Tensor& lse, at::ScalarType dt) {
  const c10::DeviceType device = q.device().type();
  check_4d(dout, fn, "dout", device);
  check_4d(out, fn, "out", device);
  check_same_device(dout, q, fn, "dout");
  check_same_device(out, q, fn, "out");
  ZD_CHECK(dout.sizes() == q.sizes(), fn, ": dout must have the shape of q; q ", q.sizes(), ", dout ",
           dout.sizes());
  ZD_CHECK(out.sizes() == q.sizes(), fn, ": out must have the shape of q; q ", q.sizes(), ", out ", out.sizes());
  ZD_CHECK(dout.scalar_type() == dt && out.scalar_type() == dt, fn, ": dout and out must have q's dtype ", dt,
           ", got dout ", dout.scalar_type(), ", out ", out.scalar_type());
  ZD_CHECK(lse.defined(), fn, ": lse is undefined");
  check_same_device(lse, q, fn, "lse");
  ZD_CHECK(lse.scalar_type() == at::kFloat, fn, ": lse must be float32, got ", lse.scalar_type());
  ZD_CHECK(lse.dim() == 3 && lse.size(0) == q.size(0) && lse.size(1) == q.size(1) && lse.size(2) == q.size(2), fn,
           ": lse must be [B, H, Nq] = ", q.sizes().slice(0, 3), ", got ", lse.sizes());
}

/// The autograd node over a kernel pair: forward runs Forward(q, k, v, scale) -> (out, lse) and saves q, k, v,
/// out and lse (the fp32 log-sum-exp per row, [B, H, Nq]); backward runs Backward(dout, q, k, v, out, lse, scale)
/// -> (dq, dk, dv), which recomputes the probabilities from lse (FlashAttention-2, Dao 2023, Algorithm 2). No
/// gradient flows to scale; an undefined dout gives none.
template <auto Forward, auto Backward>
class FlashAttentionFunction : public torch::autograd::Function<FlashAttentionFunction<Forward, Backward>> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, double scale) {
    auto [out, lse] = Forward(q, k, v, scale);
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& dout = grads[0];
    if (!dout.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    auto [dq, dk, dv] =
        Backward(dout, saved[0], saved[1], saved[2], saved[3], saved[4], ctx->saved_data["scale"].toDouble());
    return {dq, dk, dv, at::Tensor()};
  }
};

}  // namespace zerodiff::kernels::flash_shared
