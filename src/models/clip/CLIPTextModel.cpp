// The CLIP text encoder: CLIPTextEmbeddings, CLIPAttention, CLIPMLP, CLIPEncoderLayer, CLIPEncoder and
// CLIPTextModel (one translation unit for the six small module types declared in include/zerodiff/models/clip/,
// which keeps the LibTorch-heavy compile count down). Follows transformers.models.clip.modeling_clip (5.23).
//
// Attention goes through zerodiff::nn::attention with the causal (and padding) mask; our fused kernel has no mask,
// so `auto` runs SDPA here (transformers' default "sdpa" implementation). Shapes: B batch, S tokens,
// D hidden_size, H heads, Dh = D / H.
#include "zerodiff/models/clip/CLIPTextModel.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/nn/Attention.h"
#include "zerodiff/nn/Linear.h"

namespace zerodiff::models {

// ------------------------------------------------------------------------------------------- embeddings
CLIPTextEmbeddingsImpl::CLIPTextEmbeddingsImpl(CLIPTextOptions options_) : options(std::move(options_)) { reset(); }

void CLIPTextEmbeddingsImpl::reset() {
  token_embedding = register_module(
      "token_embedding", torch::nn::Embedding(options.vocab_size(), options.hidden_size()));
  position_embedding = register_module(
      "position_embedding", torch::nn::Embedding(options.max_position_embeddings(), options.hidden_size()));
}

at::Tensor CLIPTextEmbeddingsImpl::forward(const at::Tensor& input_ids, const at::Tensor& position_ids) {
  ZD_CHECK(input_ids.dim() == 2, "CLIPTextEmbeddings: input_ids must be [B, S], got shape ", input_ids.sizes());
  const int64_t S = input_ids.size(1);
  ZD_CHECK(S <= options.max_position_embeddings(), "CLIPTextEmbeddings: sequence length ", S,
           " exceeds max_position_embeddings ", options.max_position_embeddings());
  const at::Tensor positions =
      position_ids.defined() ? position_ids : at::arange(S, input_ids.options().dtype(at::kLong)).unsqueeze(0);
  return token_embedding(input_ids) + position_embedding(positions);  // [B, S, D]
}

// ------------------------------------------------------------------------------------------- attention
CLIPAttentionImpl::CLIPAttentionImpl(CLIPTextOptions options_) : options(std::move(options_)) { reset(); }

void CLIPAttentionImpl::reset() {
  const int64_t D = options.hidden_size();
  k_proj = register_module("k_proj", torch::nn::Linear(D, D));
  v_proj = register_module("v_proj", torch::nn::Linear(D, D));
  q_proj = register_module("q_proj", torch::nn::Linear(D, D));
  out_proj = register_module("out_proj", torch::nn::Linear(D, D));
}

at::Tensor CLIPAttentionImpl::forward(const at::Tensor& hidden_states, const at::Tensor& mask) {
  ZD_CHECK(hidden_states.dim() == 3 && hidden_states.size(2) == options.hidden_size(),
           "CLIPAttention: hidden_states must be [B, S, ", options.hidden_size(), "], got shape ",
           hidden_states.sizes());
  const int64_t B = hidden_states.size(0), S = hidden_states.size(1);
  const int64_t H = options.num_attention_heads(), Dh = options.head_dim();
  const auto heads = [&](const at::Tensor& t) { return t.view({B, S, H, Dh}).transpose(1, 2); };  // [B, H, S, Dh]
  const at::Tensor q = heads(nn::linear(q_proj, hidden_states));
  const at::Tensor k = heads(nn::linear(k_proj, hidden_states));
  const at::Tensor v = heads(nn::linear(v_proj, hidden_states));
  nn::AttentionOptions attention_options;
  attention_options.dropout = is_training() ? options.attention_dropout() : 0.0;
  attention_options.mask = mask;              // the combined causal + padding mask when given,
  attention_options.causal = !mask.defined();  // else the causal mask alone
  at::Tensor out = nn::attention(q, k, v, attention_options);
  out = out.transpose(1, 2).reshape({B, S, H * Dh});  // [B, S, D]
  return nn::linear(out_proj, out);
}

// ------------------------------------------------------------------------------------------- MLP
at::Tensor clip_activation(const at::Tensor& x, CLIPActivation activation) {
  switch (activation) {
    case CLIPActivation::quick_gelu:
      return x * at::sigmoid(1.702 * x);
    case CLIPActivation::gelu:
      return at::gelu(x);
    case CLIPActivation::gelu_tanh:
      return at::gelu(x, "tanh");
  }
  ZD_THROW("unknown CLIPActivation");
}

CLIPMLPImpl::CLIPMLPImpl(CLIPTextOptions options_) : options(std::move(options_)) { reset(); }

void CLIPMLPImpl::reset() {
  activation = options.activation();
  fc1 = register_module("fc1", torch::nn::Linear(options.hidden_size(), options.intermediate_size()));
  fc2 = register_module("fc2", torch::nn::Linear(options.intermediate_size(), options.hidden_size()));
}

at::Tensor CLIPMLPImpl::forward(const at::Tensor& hidden_states) {
  return nn::linear(fc2, clip_activation(nn::linear(fc1, hidden_states), activation));
}

// ------------------------------------------------------------------------------------------- encoder layer
CLIPEncoderLayerImpl::CLIPEncoderLayerImpl(CLIPTextOptions options_) : options(std::move(options_)) { reset(); }

void CLIPEncoderLayerImpl::reset() {
  const auto ln = [&] {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.hidden_size()}).eps(options.layer_norm_eps()));
  };
  self_attn = register_module("self_attn", CLIPAttention(options));
  layer_norm1 = register_module("layer_norm1", ln());
  mlp = register_module("mlp", CLIPMLP(options));
  layer_norm2 = register_module("layer_norm2", ln());
}

at::Tensor CLIPEncoderLayerImpl::forward(const at::Tensor& hidden_states, const at::Tensor& mask) {
  at::Tensor x = hidden_states + self_attn(layer_norm1(hidden_states), mask);
  return x + mlp(layer_norm2(x));
}

// ------------------------------------------------------------------------------------------- encoder
CLIPEncoderImpl::CLIPEncoderImpl(CLIPTextOptions options_) : options(std::move(options_)) { reset(); }

void CLIPEncoderImpl::reset() {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_hidden_layers(); ++i) layers->push_back(CLIPEncoderLayer(options));
}

at::Tensor CLIPEncoderImpl::forward(const at::Tensor& inputs_embeds, const at::Tensor& mask, int64_t num_layers,
                                    std::vector<at::Tensor>* hidden_states) {
  const auto total = static_cast<int64_t>(layers->size());
  const int64_t n = num_layers < 0 ? total : num_layers;
  ZD_CHECK(n <= total, "CLIPEncoder: asked for ", n, " layers, the model has ", total);
  at::Tensor x = inputs_embeds;
  if (hidden_states) hidden_states->push_back(x);
  for (int64_t i = 0; i < n; ++i) {
    x = layers->ptr<CLIPEncoderLayerImpl>(static_cast<size_t>(i))->forward(x, mask);
    if (hidden_states) hidden_states->push_back(x);
  }
  return x;
}

// ------------------------------------------------------------------------------------------- text model
CLIPTextModelImpl::CLIPTextModelImpl(CLIPTextOptions options_) : options(std::move(options_)) {
  options.validate();
  reset();
}

void CLIPTextModelImpl::reset() {
  embeddings = register_module("embeddings", CLIPTextEmbeddings(options));
  encoder = register_module("encoder", CLIPEncoder(options));
  final_layer_norm = register_module(
      "final_layer_norm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.hidden_size()}).eps(options.layer_norm_eps())));
}

at::Tensor CLIPTextModelImpl::build_mask(const at::Tensor& attention_mask, int64_t seq_len) const {
  if (!attention_mask.defined()) return {};  // causal only: SDPA's is_causal
  ZD_CHECK(attention_mask.dim() == 2 && attention_mask.size(1) == seq_len, "CLIPTextModel: attention_mask must be [B, ",
           seq_len, "], got shape ", attention_mask.sizes());
  const at::Tensor causal = at::ones({seq_len, seq_len}, attention_mask.options().dtype(at::kBool)).tril();
  const at::Tensor keys = attention_mask.to(at::kBool).view({attention_mask.size(0), 1, 1, seq_len});
  return causal.view({1, 1, seq_len, seq_len}).logical_and(keys);  // [B, 1, S, S], true = attend
}

CLIPTextOutput CLIPTextModelImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                          bool output_hidden_states) {
  ZD_CHECK(input_ids.dim() == 2, "CLIPTextModel: input_ids must be [B, S], got shape ", input_ids.sizes());
  ZD_CHECK(!at::isFloatingType(input_ids.scalar_type()), "CLIPTextModel: input_ids must be integer, got ",
           input_ids.scalar_type());
  const at::Tensor ids = input_ids.to(at::kLong);
  CLIPTextOutput out;
  const at::Tensor x = embeddings(ids);
  const at::Tensor mask = build_mask(attention_mask, ids.size(1));
  const at::Tensor last = encoder->forward(x, mask, -1, output_hidden_states ? &out.hidden_states : nullptr);
  out.last_hidden_state = final_layer_norm(last);
  const at::Tensor positions = options.eos_token_id() == 2
                                   ? ids.to(at::kInt).argmax(-1)
                                   : ids.eq(options.eos_token_id()).to(at::kInt).argmax(-1);  // [B]
  out.pooler_output =
      out.last_hidden_state.index({at::arange(ids.size(0), positions.options().dtype(at::kLong)), positions});
  return out;
}

at::Tensor CLIPTextModelImpl::encode(const at::Tensor& input_ids, std::optional<int64_t> clip_skip) {
  ZD_CHECK(input_ids.dim() == 2, "CLIPTextModel: input_ids must be [B, S], got shape ", input_ids.sizes());
  const int64_t L = options.num_hidden_layers();
  const int64_t skip = clip_skip.value_or(0);
  ZD_CHECK(skip >= 0 && skip <= L, "CLIPTextModel: clip_skip must be in [0, ", L, "], got ", skip);
  // hidden_states[-(k+1)] is the output of layer L-k (hidden_states[0] = embeddings).
  const at::Tensor ids = input_ids.to(at::kLong);
  return final_layer_norm(encoder->forward(embeddings(ids), at::Tensor(), L - skip));
}

std::vector<nn::Unit> CLIPTextModelImpl::units() const {
  std::vector<nn::Unit> units;
  units.push_back({"embeddings", embeddings.ptr(), "embeddings"});
  for (size_t i = 0; i < encoder->layers->size(); ++i) {
    const std::string name = "encoder.layers." + std::to_string(i);
    units.push_back({name, encoder->layers->ptr(i), name});
  }
  units.push_back({"final_layer_norm", final_layer_norm.ptr(), "final_layer_norm"});
  return units;
}

CLIPTextModel clip_text_model_from_pretrained(const std::string& dir, const std::string& variant) {
  const nlohmann::json config = io::read_config_json(dir);
  CLIPTextOptions options;
  const std::string where = dir + "/config.json: ";
  try {
    options = CLIPTextOptions::from_json(config);
  } catch (const NotImplementedError& e) {
    throw NotImplementedError(where + e.what());
  } catch (const ConfigError& e) {
    throw ConfigError(where + e.what());
  }
  CLIPTextModel model(options);
  const io::TensorMap file = io::load_weights(dir, io::kTransformersWeightsName, variant);
  // transformers 4.x keys: "text_model.<name>" (transformers 5's PrefixChange strips it); checkpoints written
  // before transformers 4.31 also hold the then-persistent "embeddings.position_ids" buffer, which is dropped.
  static const std::string kPrefix = "text_model.";
  io::TensorMap weights;
  for (const auto& [name, tensor] : file) {
    const std::string key = name.rfind(kPrefix, 0) == 0 ? name.substr(kPrefix.size()) : name;
    if (key == "embeddings.position_ids") {
      ZD_LOG_DEBUG(dir, ": ignoring the legacy buffer '", name, "'");
      continue;
    }
    weights.emplace(key, tensor);
  }
  io::load_state_dict(*model, weights, /*strict=*/true, dir);
  return model;
}

void save_pretrained(const CLIPTextModel& model, const std::string& dir) {
  nlohmann::json config = model->options.to_json();
  // transformers 5 loads with dtype="auto": config.json's "dtype" is the dtype the weights come back in.
  const at::ScalarType dtype = model->final_layer_norm->weight.scalar_type();
  config["dtype"] = dtype == at::kHalf ? "float16" : dtype == at::kBFloat16 ? "bfloat16" : "float32";
  io::save_pretrained(*model, dir, config, io::kTransformersWeightsName);
}

}  // namespace zerodiff::models
