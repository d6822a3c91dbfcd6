// tests/support/attention_reference.h — what the CPU (tests/unit/test_flash_attention.cpp) and CUDA
// (tests/gpu/test_flash_attention_cuda.cpp) flash-attention tests share: inputs in the memory layouts the kernels
// must read, the plain reference softmax(scale · q kᵀ) v with its autograd gradients, the error metric, and
// error_of() for exact error-message checks.
#pragma once

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <functional>
#include <string>

#include "zerodiff/core/Error.h"

namespace zerodiff::testing {

/// The memory layouts a [B, H, N, D] input comes in.
enum class Layout {
  contiguous,   ///< [B, H, N, D] contiguous
  transposed,   ///< a [B, N, H, D] tensor transposed to [B, H, N, D] (rows strided by H·D)
  padded_rows,  ///< rows of D + 3 elements (a row stride that is not a multiple of 8: element-wise loads on CUDA)
  strided_d,    ///< every other element of a [B, H, N, 2D] tensor (last-dim stride 2: the kernels copy it)
};

inline const char* name(Layout l) {
  switch (l) {
    case Layout::contiguous: return "contiguous";
    case Layout::transposed: return "transposed";
    case Layout::padded_rows: return "padded_rows";
    case Layout::strided_d: return "strided_d";
  }
  return "?";
}

/// A [B, H, N, D] tensor of N(0, 1) values, drawn in float32 on `device` and rounded to `dtype`, in `layout`.
inline at::Tensor make_input(int64_t B, int64_t H, int64_t N, int64_t D, at::ScalarType dtype, Layout layout,
                             const at::Device& device = at::kCPU) {
  const auto opts = torch::TensorOptions().device(device);
  switch (layout) {
    case Layout::contiguous: return torch::randn({B, H, N, D}, opts).to(dtype);
    case Layout::transposed: return torch::randn({B, N, H, D}, opts).to(dtype).transpose(1, 2);
    case Layout::padded_rows: return torch::randn({B, H, N, D + 3}, opts).to(dtype).slice(3, 0, D);
    case Layout::strided_d: return torch::randn({B, H, N, 2 * D}, opts).to(dtype).slice(3, 0, 2 * D, 2);
  }
  return {};
}

/// max |ours − ref| / max |ref|, computed in float64 (the error relative to the tensor's largest value). NaN when
/// ours has a NaN, so that every EXPECT_LT on it fails.
inline double rel_err(const at::Tensor& ours, const at::Tensor& ref) {
  const at::Tensor r = ref.to(at::kDouble);
  const double scale = r.abs().max().item<double>();
  const double err = (ours.to(at::kDouble) - r).abs().max().item<double>();
  return err / (scale > 0 ? scale : 1.0);
}

/// The reference's output [B, H, Nq, D], log-sum-exp [B, H, Nq] and gradients, all of the `compute` dtype.
struct AttentionReference {
  at::Tensor out, lse, dq, dk, dv;
};

/// softmax(scale · q kᵀ) v by ATen matmul and softmax in `compute` precision (float64 on the CPU, float32 on the
/// GPU: autocast off, TF32 off by default) on the same (rounded) values as the kernel under test; gradients for
/// the upstream gradient `dout` by autograd.
inline AttentionReference attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const at::Tensor& dout, double scale, at::ScalarType compute) {
  at::Tensor qr = q.detach().to(compute).requires_grad_(true);
  at::Tensor kr = k.detach().to(compute).requires_grad_(true);
  at::Tensor vr = v.detach().to(compute).requires_grad_(true);
  const at::Tensor scores = at::matmul(qr, kr.transpose(-2, -1)) * scale;
  AttentionReference r;
  r.lse = scores.logsumexp(-1).detach();
  r.out = at::matmul(scores.softmax(-1), vr);
  r.out.backward(dout.to(compute));
  r.out = r.out.detach();
  r.dq = qr.grad();
  r.dk = kr.grad();
  r.dv = vr.grad();
  return r;
}

/// Runs fn and returns the message of the zerodiff::Error it throws, or "(no error)".
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const zerodiff::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace zerodiff::testing
