// zerodiff/nn/Attention.h — the one front door for scaled dot-product attention (DESIGN.md §4).
//
// Design rules: every attention in the model stack (UNet self/cross attention, VAE mid-block
// attention) calls zerodiff::nn::attention, so fused kernels (ours on CUDA and CPU) can be swapped in
// behind `AttentionBackend` without touching the models. `attention_math` is the plain reference that
// every backend is tested against. Layout is [B, H, N, D] throughout, softmax scale D^-0.5 (as
// diffusers' Attention with scale_qk=True); optional causal / explicit masks and dropout (CLIP's text encoder).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "zerodiff/core/Enum.h"

namespace zerodiff::nn {

/// Which implementation computes attention.
enum class AttentionBackend {
  automatic,  ///< the run's policy (AttentionPolicyScope; by default: zerodiff where it supports the call and, on the
              ///< CPU, where it is the faster one (cpu_kernel_preferred), else sdpa)
  zerodiff,   ///< our fused kernels (kernels/FlashAttention.h): CPU float32 / bfloat16, CUDA float16 / bfloat16
              ///< (compute capability >= 8.0); head dim <= 256, no mask, not causal, no dropout
  sdpa,       ///< at::scaled_dot_product_attention (what diffusers' AttnProcessor2_0 calls)
  math,       ///< attention_math: matmul, softmax, matmul in plain ATen ops
};
/// AttentionBackend's name table (core/Enum.h): the run config's `attention`, zerodiff-sample's --attention, logs.
inline constexpr EnumName<AttentionBackend> kAttentionBackendNames[] = {{AttentionBackend::automatic, "auto"},
                                                                        {AttentionBackend::zerodiff, "zerodiff"},
                                                                        {AttentionBackend::sdpa, "sdpa"},
                                                                        {AttentionBackend::math, "math"}};
constexpr std::span<const EnumName<AttentionBackend>> enum_names(AttentionBackend) { return kAttentionBackendNames; }
/// The backends a whole run or pipeline may take as its policy (the run config's `attention`, zerodiff-sample's
/// --attention): every one but zerodiff, which our kernels cannot serve for every call (CLIP's causal attention).
inline constexpr AttentionBackend kAttentionPolicies[] = {AttentionBackend::automatic, AttentionBackend::sdpa,
                                                          AttentionBackend::math};

/// Parses "auto", "zerodiff", "sdpa" or "math"; throws zerodiff::ConfigError naming the bad value otherwise.
AttentionBackend parse_attention_backend(std::string_view name);
/// "auto", "zerodiff", "sdpa" or "math".
const char* attention_backend_name(AttentionBackend backend);

/// The process-wide policy that AttentionBackend::automatic defers to. Default: automatic. Models built with an
/// explicit backend ignore it. It is set in one place only, AttentionPolicyScope (train::run for the run config's
/// top-level `attention` key, zerodiff-sample for its --attention flag).
AttentionBackend attention_policy();

/// Sets attention_policy() for its lifetime and restores the previous policy when it ends. Scopes must nest (end in
/// the reverse order of their creation, on one thread). Not thread-safe against concurrent attention calls: create
/// it before the models run.
class AttentionPolicyScope {
 public:
  explicit AttentionPolicyScope(AttentionBackend policy);
  ~AttentionPolicyScope();
  AttentionPolicyScope(const AttentionPolicyScope&) = delete;
  AttentionPolicyScope& operator=(const AttentionPolicyScope&) = delete;

 private:
  AttentionBackend saved_;
};

/// Whether an automatic policy runs our CPU kernel on this machine (where it supports the call): only on the SIMD
/// targets where it was measured faster than ATen's SDPA, AVX-512 (Highway's AVX3* and AVX10* targets: 1.8-2.2x); on
/// AVX2-only CPUs it measured 0.79-1.03x, so `auto` runs SDPA there (docs/performance.md). An explicit `zerodiff`
/// backend (AttentionOptions::backend, the models' attention_backend option) runs it on any CPU.
bool cpu_kernel_preferred();

/// Options of zerodiff::nn::attention.
struct AttentionOptions {
  /// Compute in float32 when q/k/v are float16/bfloat16 and cast the result back to q's dtype
  /// (diffusers' upcast_attention / upcast_softmax). No effect on float32/float64 inputs.
  bool upcast = false;
  /// Causal mask: query i attends to keys j <= i (CLIP's text encoder). Needs Nq == Nk.
  bool causal = false;
  /// Optional mask broadcastable to [B, H, Nq, Nk]: bool (true = attend) or additive float (as SDPA's attn_mask).
  at::Tensor mask;
  /// Dropout probability on the attention weights (training only; 0 = none).
  double dropout = 0.0;
  AttentionBackend backend = AttentionBackend::automatic;
};

/// softmax(q k^T * D^-0.5 [+ mask]) v.
///   q: [B, H, Nq, D], k: [B, H, Nk, D], v: [B, H, Nk, Dv] (same dtype and device) -> [B, H, Nq, Dv]
///   in q's dtype. Differentiable. Any strides.
/// Backend `automatic` resolves through attention_policy(); an automatic policy runs our kernel where it supports
/// the call and SDPA otherwise:
///   * CPU: on the CPUs where it is the faster one (cpu_kernel_preferred()), float32 or bfloat16 (bfloat16/float16
///     with `upcast` are computed in float32), D == Dv <= 256, Nk >= 1, no mask, not causal, no dropout.
///   * CUDA: a build with CUDA kernels, compute capability >= 8.0, float16 or bfloat16 without `upcast` (the kernel
///     accumulates in float32 but rounds P and dS to the input precision, so an explicit float32 request goes to
///     SDPA), D == Dv <= 256, Nk >= 1, no mask, not causal, no dropout — and the kernel's self-check passed.
///     Self-check: the first time our CUDA kernel would run for a (device, dtype, head-dim bucket 64 / 128 / 256),
///     cuda_kernel_self_check() runs it once per process on small random inputs (forward and backward) against a
///     float32 reference; if it fails, the figures are logged as an error and `automatic` runs SDPA for that bucket
///     from then on. An explicit AttentionBackend::zerodiff never falls back: it throws zerodiff::Error with the
///     self-check's figures instead.
/// The first call of each (backend, device, dtype) logs which backend ran. Throws zerodiff::Error naming the tensor
/// when ranks, batch/head counts, head dims, dtypes or devices do not match, and zerodiff::NotImplementedError when
/// backend `zerodiff` is asked for a call it does not support (saying why, e.g. float32 on CUDA, D > 256, a build
/// without CUDA kernels).
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options = {});

/// The backend attention() runs for these inputs and options (automatic resolved; never `automatic`). For CUDA
/// inputs our kernel supports, this is where the once-per-bucket self-check runs (see attention()).
AttentionBackend resolve_attention_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const AttentionOptions& options);

/// Outcome of the self-check that guards our CUDA kernel in attention() (see there).
struct CudaKernelSelfCheck {
  bool passed = false;
  /// What ran and the measured errors, e.g. "Half head dim 40 (bucket 64) on cuda:0: max |ours - ref| / max |ref|:
  /// out 4.1e-04, lse 2.0e-07, dq 6.3e-04, dk 5.0e-04, dv 3.9e-04 (tolerances 2e-02, lse 1e-03; ...)", or the
  /// error a kernel threw.
  std::string report;
};

/// Runs our CUDA flash-attention kernels once per process for (device, dtype, head-dim bucket of head_dim): B = 1,
/// H = 2, Nq = 96, Nkv = 77, D = head_dim, q/k/v/dout transposed from [B, N, H, D] (strided), random values from a
/// private generator (the global RNG state is untouched), forward and backward against a float32 reference
/// (matmul, softmax, explicit gradient formulas) with autocast off and no autograd recording. Passes when every
/// max |ours − ref| / max |ref| is below 2e-2 (lse: 1e-3), the tolerances of tests/gpu. Later calls return the
/// cached result. Logs the result (info when passed, error when failed). Thread-safe.
/// device: a CUDA device; dtype: float16 or bfloat16; head_dim: 1..256. Never throws for a kernel failure (that
/// is a failed check); throws zerodiff::Error when device is not CUDA.
CudaKernelSelfCheck cuda_kernel_self_check(c10::Device device, at::ScalarType dtype, int64_t head_dim);

/// Reference implementation of attention(): scores = (q * D^-0.5) k^T (in float32 when `upcast` and
/// the inputs are half precision) [+ mask, causal], softmax over the last dim, [dropout,] times v, cast back to
/// q's dtype. Same shapes and checks as attention().
at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          bool upcast = false);
at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const AttentionOptions& options);

}  // namespace zerodiff::nn
