// zerodiff/models/clip/CLIPTextModel.h — the Stable Diffusion text encoder.
// Follows transformers.models.clip.modeling_clip.CLIPTextModel (5.23). Module names equal transformers 5's
// state-dict keys: "embeddings.token_embedding.weight", "encoder.layers.0.self_attn.q_proj.weight", ...,
// "final_layer_norm.weight". transformers 4.x (and so the published SD 1.x/2.x text_encoder folders) prefixed
// every key with "text_model."; from_pretrained strips that prefix as transformers 5 does (its PrefixChange
// conversion), so both layouts load.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <string>
#include <vector>

#include "zerodiff/models/clip/CLIPEncoder.h"
#include "zerodiff/models/clip/CLIPTextEmbeddings.h"
#include "zerodiff/models/clip/CLIPTextOptions.h"
#include "zerodiff/nn/Unit.h"

namespace zerodiff::models {

/// transformers' BaseModelOutputWithPooling (+ hidden_states when asked).
struct CLIPTextOutput {
  at::Tensor last_hidden_state;  // [B, S, D] after final_layer_norm
  at::Tensor pooler_output;      // [B, D] last_hidden_state at the eos position of each row
  /// With output_hidden_states: num_hidden_layers + 1 tensors [B, S, D]: the embeddings, then every layer's
  /// output (before final_layer_norm), as transformers' `hidden_states`.
  std::vector<at::Tensor> hidden_states;
};

/// Parameter names: embeddings.*, encoder.layers.<i>.*, final_layer_norm.{weight,bias}.
class CLIPTextModelImpl : public torch::nn::Cloneable<CLIPTextModelImpl> {
 public:
  /// Builds the model (random init as torch's defaults). Throws from options.validate().
  explicit CLIPTextModelImpl(CLIPTextOptions options);
  void reset() override;

  /// input_ids [B, S] int64 (S <= max_position_embeddings); attention_mask [B, S] (1 = token, 0 = padding)
  /// or undefined (causal mask only, which is what diffusers' pipelines use for CLIP).
  CLIPTextOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                         bool output_hidden_states = false);

  /// The prompt embedding of diffusers' StableDiffusionPipeline.encode_prompt: clip_skip unset ->
  /// last_hidden_state; clip_skip = k -> final_layer_norm(hidden_states[-(k + 1)]) (k = 1: the penultimate
  /// layer). Only the needed layers run. [B, S] -> [B, S, D]. Throws zerodiff::Error when k is not in
  /// [0, num_hidden_layers].
  at::Tensor encode(const at::Tensor& input_ids, std::optional<int64_t> clip_skip = std::nullopt);

  /// Sharding units in execution order: "embeddings", "encoder.layers.<i>", "final_layer_norm".
  std::vector<nn::Unit> units() const;

  CLIPTextOptions options;
  CLIPTextEmbeddings embeddings{nullptr};
  CLIPEncoder encoder{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};

 private:
  at::Tensor build_mask(const at::Tensor& attention_mask, int64_t seq_len) const;
};
TORCH_MODULE(CLIPTextModel);

/// Loads a transformers text_encoder folder: config.json + model[.<variant>].safetensors (or its sharded
/// index), with or without the "text_model." key prefix; strict (every missing, unexpected or mis-shaped key
/// is reported). Throws IoError / ConfigError / NotImplementedError naming the folder.
CLIPTextModel clip_text_model_from_pretrained(const std::string& dir, const std::string& variant = "");

/// Writes config.json (options.to_json()) and model.safetensors with transformers 5's key names.
void save_pretrained(const CLIPTextModel& model, const std::string& dir);

}  // namespace zerodiff::models
