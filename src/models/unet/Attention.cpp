#include "zerodiff/models/unet/Attention.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "zerodiff/nn/Linear.h"

namespace zerodiff::models {

AttentionImpl::AttentionImpl(AttentionOptions options_) : options(std::move(options_)) { reset(); }

void AttentionImpl::reset() {
  const int64_t inner = options.dim_head() * options.heads();
  const int64_t context_dim = options.cross_attention_dim().value_or(options.query_dim());
  group_norm = nullptr;
  if (options.norm_num_groups()) {
    group_norm = register_module(
        "group_norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(*options.norm_num_groups(), options.query_dim())
                                               .eps(options.eps())
                                               .affine(true)));
  }
  to_q = register_module("to_q", torch::nn::Linear(torch::nn::LinearOptions(options.query_dim(), inner).bias(options.bias())));
  to_k = register_module("to_k", torch::nn::Linear(torch::nn::LinearOptions(context_dim, inner).bias(options.bias())));
  to_v = register_module("to_v", torch::nn::Linear(torch::nn::LinearOptions(context_dim, inner).bias(options.bias())));
  // Elements of ModuleLists are reached through the list (never through cached holders), so that
  // clone(), which replaces the list's elements, stays consistent.
  to_out = register_module(
      "to_out", torch::nn::ModuleList(
                    torch::nn::Linear(torch::nn::LinearOptions(inner, options.query_dim()).bias(options.out_bias())),
                    torch::nn::Dropout(options.dropout())));
}

at::Tensor AttentionImpl::forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states) {
  const int64_t input_ndim = hidden_states.dim();
  ZD_CHECK((input_ndim == 3 && hidden_states.size(2) == options.query_dim()) ||
               (input_ndim == 4 && hidden_states.size(1) == options.query_dim()),
           "Attention: hidden_states must be [B, N, ", options.query_dim(), "] or [B, ", options.query_dim(),
           ", H, W], got ", hidden_states.sizes().vec());
  const at::Tensor& residual = hidden_states;
  at::Tensor x = hidden_states;
  int64_t channel = 0, height = 0, width = 0;
  if (input_ndim == 4) {
    channel = x.size(1), height = x.size(2), width = x.size(3);
    x = x.reshape({x.size(0), channel, height * width}).transpose(1, 2);
  }
  const at::Tensor& context_in = encoder_hidden_states.defined() ? encoder_hidden_states : x;
  if (encoder_hidden_states.defined()) {
    ZD_CHECK(encoder_hidden_states.dim() == 3 && encoder_hidden_states.size(0) == x.size(0) &&
                 encoder_hidden_states.size(2) == to_k->options.in_features(),
             "Attention: encoder_hidden_states must be [", x.size(0), ", S, ", to_k->options.in_features(), "], got ",
             encoder_hidden_states.sizes().vec());
  }
  const int64_t batch = context_in.size(0);
  if (group_norm) {
    x = group_norm->forward(x.transpose(1, 2)).transpose(1, 2);
  }
  at::Tensor query = nn::linear(to_q, x);
  const at::Tensor& context = encoder_hidden_states.defined() ? encoder_hidden_states : x;
  at::Tensor key = nn::linear(to_k, context);
  at::Tensor value = nn::linear(to_v, context);
  const int64_t heads = options.heads();
  const int64_t head_dim = key.size(-1) / heads;
  query = query.view({batch, -1, heads, head_dim}).transpose(1, 2);
  key = key.view({batch, -1, heads, head_dim}).transpose(1, 2);
  value = value.view({batch, -1, heads, head_dim}).transpose(1, 2);

  nn::AttentionOptions attention_options;
  attention_options.upcast = options.upcast_attention() || options.upcast_softmax();
  attention_options.backend = options.backend();
  at::Tensor out = nn::attention(query, key, value, attention_options);  // [B, H, N, D]

  out = out.transpose(1, 2).reshape({batch, -1, heads * head_dim}).to(query.scalar_type());
  out = nn::linear(torch::nn::Linear(to_out->ptr<torch::nn::LinearImpl>(0)), out);
  out = to_out->at<torch::nn::DropoutImpl>(1).forward(out);
  if (input_ndim == 4) {
    out = out.transpose(-1, -2).reshape({batch, channel, height, width});
  }
  if (options.residual_connection()) out = out + residual;
  if (options.rescale_output_factor() != 1.0) out = out / options.rescale_output_factor();
  return out;
}

}  // namespace zerodiff::models
