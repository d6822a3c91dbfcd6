// zerodiff/nn/Attention.h — the one front door for scaled dot-product attention (DESIGN.md §4).
//
// Design rules: every attention in the model stack (UNet self/cross attention, VAE mid-block
// attention) calls zerodiff::nn::attention, so fused kernels (ours on CUDA and CPU) can be swapped in
// behind `AttentionBackend` without touching the models. `attention_math` is the plain reference that
// every backend is tested against. Layout is [B, H, N, D] throughout, softmax scale D^-0.5 (as
// diffusers' Attention with scale_qk=True); optional causal / explicit masks and dropout (CLIP's text encoder).
#pragma once

#include <ATen/core/Tensor.h>

#include <string_view>

namespace zerodiff::nn {

/// Which implementation computes attention.
enum class AttentionBackend {
  automatic,  ///< the run's policy (set_attention_policy; by default: zerodiff where it supports the call, else sdpa)
  zerodiff,   ///< our fused kernel (kernels/FlashAttention.h): CPU, float32 / bfloat16, head dim <= 256, no mask
  sdpa,       ///< at::scaled_dot_product_attention (what diffusers' AttnProcessor2_0 calls)
  math,       ///< attention_math: matmul, softmax, matmul in plain ATen ops
};

/// Parses "auto", "zerodiff", "sdpa" or "math"; throws zerodiff::ConfigError naming the bad value otherwise.
AttentionBackend parse_attention_backend(std::string_view name);
/// "auto", "zerodiff", "sdpa" or "math".
const char* attention_backend_name(AttentionBackend backend);

/// The process-wide policy that AttentionBackend::automatic defers to (the run config's top-level `attention`
/// key sets it). Default: automatic. Models built with an explicit backend ignore it. Not thread-safe against
/// concurrent attention calls: set it before training starts.
void set_attention_policy(AttentionBackend policy);
AttentionBackend attention_policy();

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
/// the call (CPU, float32 or bfloat16 — bfloat16/float16 with `upcast` are computed in float32 —, D == Dv <= 256,
/// Nk >= 1, no mask, not causal, no dropout) and SDPA otherwise. The first call of each (backend, device, dtype)
/// logs which backend ran. Throws zerodiff::Error naming the tensor when ranks, batch/head counts, head dims,
/// dtypes or devices do not match, and zerodiff::NotImplementedError when backend `zerodiff` is asked for a call
/// it does not support (saying why).
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options = {});

/// The backend attention() runs for these inputs and options (automatic resolved; never `automatic`).
AttentionBackend resolve_attention_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const AttentionOptions& options);

/// Reference implementation of attention(): scores = (q * D^-0.5) k^T (in float32 when `upcast` and
/// the inputs are half precision) [+ mask, causal], softmax over the last dim, [dropout,] times v, cast back to
/// q's dtype. Same shapes and checks as attention().
at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          bool upcast = false);
at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const AttentionOptions& options);

}  // namespace zerodiff::nn
