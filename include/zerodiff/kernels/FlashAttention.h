// zerodiff/kernels/FlashAttention.h — fused scaled dot-product attention on the CPU, forward and backward,
// following FlashAttention-2 (Dao 2023, "FlashAttention-2: Faster Attention with Better Parallelism and Work
// Partitioning", Algorithm 1 for the forward pass, Algorithm 2 for the backward pass).
//
//   out = softmax(scale · q kᵀ) v,   lse = log Σ_j exp(scale · q kⱼᵀ)   (per query row)
//
// The Nq × Nkv score matrix is never materialised: scores live one (query block × key block) tile at a time in
// a per-thread buffer, with an online softmax (running row max and row sum) in the forward pass and P recomputed
// from the saved log-sum-exp in the backward pass, so memory grows linearly with N. No mask, no dropout, no
// causal variant (Stable Diffusion needs none of them). The plain reference every test compares against is
// zerodiff::nn::attention_math (matmul, softmax, matmul).
//
// Shapes use [B, H, N, D]: batch, heads, sequence length, head dim. Inputs may have any strides (e.g. the
// transpose of a [B, N, H, D] projection); float32 rows with a unit-stride last dim are read in place, anything
// else is converted one head at a time into per-thread scratch. Extra memory: O(threads · N · D) floats.
#pragma once

#include <ATen/core/Tensor.h>

#include <string_view>
#include <tuple>

namespace zerodiff::kernels {

/// Forward pass (FlashAttention-2, Algorithm 1) on the CPU.
///   q: [B, H, Nq, D], k: [B, H, Nkv, D], v: [B, H, Nkv, D] — CPU tensors, all float32 or all bfloat16, any
///   strides; 1 <= D <= 256, Nkv >= 1 (Nq, B or H may be 0).
///   scale: the factor applied to q kᵀ before the softmax (usually 1/sqrt(D)); must be finite.
/// Returns (out, lse): out [B, H, Nq, D] contiguous in q's dtype; lse [B, H, Nq] float32, the log-sum-exp of
/// the scaled scores of each query row (what the backward pass needs to recompute the probabilities).
/// Arithmetic is float32 throughout (bfloat16 inputs are widened one head at a time into per-thread scratch, the
/// output rounded once).
/// Parallel over B × H × query blocks (at::parallel_for). Throws zerodiff::Error naming the tensor on a wrong
/// rank, mismatched batch / head / sequence / head-dim sizes, mismatched or unsupported dtype, non-CPU or
/// undefined tensor, head dim out of range, Nkv = 0 or a non-finite scale.
std::tuple<at::Tensor, at::Tensor> flash_attention_forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                                               const at::Tensor& v, double scale);

/// Backward pass (FlashAttention-2, Algorithm 2) on the CPU: the gradients of out = attention(q, k, v) given
/// dout = ∂L/∂out.
///   dout, out: [B, H, Nq, D]; q: [B, H, Nq, D]; k, v: [B, H, Nkv, D]; all in one dtype (float32 or bfloat16),
///   any strides; lse: [B, H, Nq] float32 and `out` as returned by flash_attention_forward_cpu for the same
///   q, k, v and scale.
/// Returns (dq, dk, dv), contiguous, shaped and typed like q, k, v. Per tile it recomputes P = exp(scale·q kᵀ −
/// lse), uses D_i = rowsum(dout ∘ out) and dS = P ∘ (dP − D_i) with dP = dout vᵀ; dq, dk and dv are
/// accumulated in float32. Parallel over B × H (× key-block chunks when B·H is smaller than the thread count;
/// see the comment in kernels/cpu/flash_attention.cpp). Throws zerodiff::Error like the forward pass, and
/// naming `dout`, `out` or `lse` when their shape or dtype does not match.
std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attention_backward_cpu(const at::Tensor& dout,
                                                                            const at::Tensor& q, const at::Tensor& k,
                                                                            const at::Tensor& v, const at::Tensor& out,
                                                                            const at::Tensor& lse, double scale);

/// Differentiable attention on the CPU: out = softmax(scale · q kᵀ) v, shapes and dtypes as
/// flash_attention_forward_cpu. A torch::autograd::Function that saves q, k, v, out and lse, and calls
/// flash_attention_backward_cpu for the gradients of q, k and v (those that require grad). Throws like
/// flash_attention_forward_cpu.
at::Tensor flash_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

/// The tile GEMM behind the kernels, chosen once by a self-test, for the benchmark's report: "oneDNN brgemm"
/// (at::native::cpublas::brgemm), else "blas sgemm" (the Fortran sgemm_ of the BLAS bundled with LibTorch),
/// else "at::addmm" (tile-level ATen ops).
const char* flash_attention_gemm_backend();

/// Selects the tile GEMM for all later calls (tests and benchmarks compare them): "brgemm", "blas", "aten", or
/// "auto" (the default choice). Not to be called while a kernel runs. Throws zerodiff::Error for another name
/// or a backend this machine / LibTorch build lacks.
void flash_attention_use_gemm_backend(std::string_view name);

/// The SIMD target Highway chose for the softmax / elementwise parts (e.g. "AVX3", "AVX2", "NEON").
const char* flash_attention_simd_target();

}  // namespace zerodiff::kernels
