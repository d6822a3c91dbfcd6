// zerodiff/nn/Attention.h — the one front door for scaled dot-product attention (DESIGN.md §4).
//
// Design rules: every attention in the model stack (UNet self/cross attention, VAE mid-block
// attention) calls zerodiff::nn::attention, so fused kernels (ours on CUDA and CPU) can be swapped in
// behind `AttentionBackend` without touching the models. `attention_math` is the plain reference that
// every backend is tested against. Layout is [B, H, N, D] throughout, softmax scale D^-0.5 (as
// diffusers' Attention with scale_qk=True), no mask, no dropout.
#pragma once

#include <ATen/core/Tensor.h>

#include <string_view>

namespace zerodiff::nn {

/// Which implementation computes attention.
enum class AttentionBackend {
  sdpa,  ///< at::scaled_dot_product_attention (what diffusers' AttnProcessor2_0 calls)
  math,  ///< attention_math: matmul, softmax, matmul in plain ATen ops
};

/// Parses "sdpa" or "math"; throws zerodiff::ConfigError naming the bad value otherwise.
AttentionBackend parse_attention_backend(std::string_view name);

/// Options of zerodiff::nn::attention.
struct AttentionOptions {
  /// Compute in float32 when q/k/v are float16/bfloat16 and cast the result back to q's dtype
  /// (diffusers' upcast_attention / upcast_softmax). No effect on float32/float64 inputs.
  bool upcast = false;
  AttentionBackend backend = AttentionBackend::sdpa;
};

/// softmax(q k^T * D^-0.5) v.
///   q: [B, H, Nq, D], k: [B, H, Nk, D], v: [B, H, Nk, Dv] (same dtype and device) -> [B, H, Nq, Dv]
///   in q's dtype. Differentiable. Throws zerodiff::Error naming the tensor when ranks, batch/head
///   counts, head dims, dtypes or devices do not match.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options = {});

/// Reference implementation of attention(): scores = (q * D^-0.5) k^T (in float32 when `upcast` and
/// the inputs are half precision), softmax over the last dim, times v, cast back to q's dtype.
/// Same shapes and checks as attention().
at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          bool upcast = false);

}  // namespace zerodiff::nn
