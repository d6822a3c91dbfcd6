// Attention front door: shape checks, then the selected backend. See zerodiff/nn/Attention.h.
#include "zerodiff/nn/Attention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <string>

#include "zerodiff/core/Error.h"

namespace zerodiff::nn {
namespace {

void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  ZD_CHECK(q.defined() && k.defined() && v.defined(), "attention: q, k and v must be defined");
  ZD_CHECK(q.dim() == 4, "attention: q must be [B, H, Nq, D], got shape ", q.sizes().vec());
  ZD_CHECK(k.dim() == 4, "attention: k must be [B, H, Nk, D], got shape ", k.sizes().vec());
  ZD_CHECK(v.dim() == 4, "attention: v must be [B, H, Nk, Dv], got shape ", v.sizes().vec());
  ZD_CHECK(q.size(0) == k.size(0) && q.size(0) == v.size(0) && q.size(1) == k.size(1) &&
               q.size(1) == v.size(1),
           "attention: batch and head counts differ: q ", q.sizes().vec(), ", k ", k.sizes().vec(),
           ", v ", v.sizes().vec());
  ZD_CHECK(q.size(3) == k.size(3), "attention: q and k head dims differ: q ", q.sizes().vec(), ", k ",
           k.sizes().vec());
  ZD_CHECK(k.size(2) == v.size(2), "attention: k and v sequence lengths differ: k ", k.sizes().vec(),
           ", v ", v.sizes().vec());
  ZD_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
           "attention: dtypes differ: q ", q.scalar_type(), ", k ", k.scalar_type(), ", v ",
           v.scalar_type());
  ZD_CHECK(q.device() == k.device() && q.device() == v.device(), "attention: devices differ: q ",
           q.device(), ", k ", k.device(), ", v ", v.device());
}

bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

}  // namespace

AttentionBackend parse_attention_backend(std::string_view name) {
  if (name == "sdpa") return AttentionBackend::sdpa;
  if (name == "math") return AttentionBackend::math;
  throw ConfigError(str("attention backend must be one of sdpa, math; got '", name, "'"));
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options) {
  check_qkv(q, k, v);
  switch (options.backend) {
    case AttentionBackend::math:
      return attention_math(q, k, v, options.upcast);
    case AttentionBackend::sdpa:
      break;
  }
  if (options.upcast && is_half(q)) {
    return at::scaled_dot_product_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat))
        .to(q.scalar_type());
  }
  return at::scaled_dot_product_attention(q, k, v);
}

at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool upcast) {
  check_qkv(q, k, v);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const bool up = upcast && is_half(q);
  const at::Tensor qf = up ? q.to(at::kFloat) : q;
  const at::Tensor kf = up ? k.to(at::kFloat) : k;
  const at::Tensor vf = up ? v.to(at::kFloat) : v;
  const at::Tensor probs = at::matmul(qf * scale, kf.transpose(-2, -1)).softmax(-1);
  return at::matmul(probs, vf).to(q.scalar_type());
}

}  // namespace zerodiff::nn
