// zerodiff/kernels/FlashAttention.h — fused scaled dot-product attention on the CPU and on CUDA, forward and
// backward, following FlashAttention-2 (Dao 2023, "FlashAttention-2: Faster Attention with Better Parallelism and Work
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
//
// The CUDA kernels (kernels/cuda/flash_attn/, design note in flash.h there) take float16 or bfloat16 on devices
// of compute capability 8.0 or newer: tensor-core MMAs with float32 accumulation and a float32 online softmax.
// They read inputs through their strides when the last dim is unit-stride. A build without CUDA kernels keeps
// these functions; they throw zerodiff::Error saying so.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
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

// ------------------------------------------------------------------ CUDA

/// Forward pass (FlashAttention-2, Algorithm 1) on CUDA.
///   q: [B, H, Nq, D], k: [B, H, Nkv, D], v: [B, H, Nkv, D] — CUDA tensors on one device of compute capability
///   >= 8.0, all float16 or all bfloat16; 1 <= D <= 256 (D is padded to the kernel's bucket 64, 128 or 256 inside
///   the kernel, never in memory), Nkv >= 1 (Nq, B or H may be 0); Nq, Nkv < 2³¹.
///   Strides: any batch / head / row strides are read in place when the last dim is unit-stride (e.g. the
///   transpose of a [B, N, H, D] projection); a tensor with a strided last dim is first copied contiguous.
///   scale: the factor applied to q kᵀ before the softmax (usually 1/sqrt(D)); must be finite.
/// Returns (out, lse): out [B, H, Nq, D] contiguous in q's dtype; lse [B, H, Nq] float32 (natural log-sum-exp of
/// each query row's scaled scores), on q's device. Runs on the current CUDA stream of q's device.
/// Throws zerodiff::Error naming the tensor on an undefined or non-CUDA tensor, tensors on different devices, a
/// wrong rank, mismatched batch / head / sequence / head-dim sizes, a dtype other than float16 / bfloat16 or
/// mismatched dtypes, D outside 1..256, Nkv = 0, a non-finite scale, a device older than compute capability 8.0,
/// or sizes beyond the kernels' grid limits; zerodiff::Error "built without CUDA kernels" in a build without
/// them; c10::Error when a kernel launch fails (C10_CUDA_KERNEL_LAUNCH_CHECK).
std::tuple<at::Tensor, at::Tensor> flash_attention_forward_cuda(const at::Tensor& q, const at::Tensor& k,
                                                                const at::Tensor& v, double scale);

/// Backward pass (FlashAttention-2, Algorithm 2) on CUDA: the gradients of out = attention(q, k, v) given
/// dout = ∂L/∂out.
///   dout, out: [B, H, Nq, D]; q: [B, H, Nq, D]; k, v: [B, H, Nkv, D]; one dtype (float16 or bfloat16) and one
///   CUDA device for all; strides as flash_attention_forward_cuda (dout may be any view, e.g. an expanded
///   gradient: a strided last dim is copied contiguous); lse: [B, H, Nq] float32 and `out` as returned by
///   flash_attention_forward_cuda for the same q, k, v and scale.
/// Returns (dq, dk, dv), contiguous, shaped and typed like q, k, v. Recomputes P = exp(scale·q kᵀ − lse) per tile,
/// uses D_i = rowsum(dout ∘ out) (a pre-kernel) and dS = P ∘ (dP − D_i); dk and dv accumulate in registers per key
/// block, dq in a float32 [B, H, Nq, D] buffer through atomic adds (converted to q's dtype at the end). When few
/// key blocks would leave the GPU idle (cross-attention: 77 keys), each key block's query blocks are split over
/// several CTAs and dk, dv also go through float32 buffers. Extra device memory: 4 · B·H·Nq·D bytes for dq's
/// buffer (+ 8 · B·H·Nkv·D with the split) and 4 · B·H·Nq bytes for D_i.
/// Throws like flash_attention_forward_cuda, and naming `dout`, `out` or `lse` when their shape, dtype or device
/// does not match.
std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attention_backward_cuda(const at::Tensor& dout,
                                                                             const at::Tensor& q, const at::Tensor& k,
                                                                             const at::Tensor& v, const at::Tensor& out,
                                                                             const at::Tensor& lse, double scale);

/// Differentiable attention on CUDA: out = softmax(scale · q kᵀ) v, shapes, dtypes and strides as
/// flash_attention_forward_cuda. A torch::autograd::Function that saves q, k, v, out and lse, and calls
/// flash_attention_backward_cuda for the gradients of q, k and v (those that require grad). Throws like
/// flash_attention_forward_cuda.
at::Tensor flash_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

/// Why the CUDA kernels cannot run attention on q [B, H, Nq, D], k, v [B, H, Nkv, D] ("" when they can): this
/// build has no CUDA kernels, a tensor is not on a CUDA device, the dtype is not float16 / bfloat16, the value
/// head dim differs from D, D is outside 1..256, there are no keys, or the device is older than compute
/// capability 8.0, or q, k, v are not all defined 4-d tensors. Never throws.
std::string flash_attention_cuda_unsupported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

/// The head-dim bucket the CUDA kernels compile for and run D in: 64 (D <= 64), 128 (D <= 128) or 256, as
/// FlashAttention-2 rounds (Stable Diffusion: 40 → 64, 80 → 128, 160 → 256).
constexpr int64_t flash_attention_cuda_head_dim_bucket(int64_t d) { return d <= 64 ? 64 : d <= 128 ? 128 : 256; }

}  // namespace zerodiff::kernels
