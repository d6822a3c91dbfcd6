// zerodiff/models/clip/CLIPTextOptions.h — the CLIPTextModel config, mirroring transformers' CLIPTextConfig
// (transformers 5.23 field names and defaults; text_encoder/config.json of a diffusers Stable Diffusion folder).
//
// Design rules: as for the UNet options, every config key is a field here, a generic transformers
// PretrainedConfig key with no effect on the text model (architectures, dtype, return_dict, ...), or rejected
// by name (NotImplementedError); a wrong JSON type is ConfigError. SD 1.x: ViT-L/14 (768 hidden, 12 layers,
// 12 heads, 3072 MLP, quick_gelu); SD 2.x: OpenCLIP ViT-H minus its last layer (1024, 23 layers, 16 heads,
// 4096, gelu). See configs/models/{sd15,sd21}/text_encoder/config.json.
#pragma once

#include <torch/arg.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "zerodiff/core/Enum.h"

namespace zerodiff::models {

/// The MLP activation of the encoder layers (transformers' ACT2FN names).
enum class CLIPActivation {
  quick_gelu,  ///< "quick_gelu": x * sigmoid(1.702 x) (OpenAI CLIP, SD 1.x)
  gelu,        ///< "gelu": exact erf GELU (OpenCLIP ViT-H, SD 2.x)
  gelu_tanh,   ///< "gelu_new", "gelu_pytorch_tanh", "gelu_fast": the tanh approximation
};
/// CLIPActivation's name table (core/Enum.h): transformers' ACT2FN names, the tanh approximation under three.
inline constexpr EnumName<CLIPActivation> kCLIPActivationNames[] = {{CLIPActivation::quick_gelu, "quick_gelu"},
                                                                    {CLIPActivation::gelu, "gelu"},
                                                                    {CLIPActivation::gelu_tanh, "gelu_new"},
                                                                    {CLIPActivation::gelu_tanh, "gelu_pytorch_tanh"},
                                                                    {CLIPActivation::gelu_tanh, "gelu_fast"}};
constexpr std::span<const EnumName<CLIPActivation>> enum_names(CLIPActivation) { return kCLIPActivationNames; }

/// Parses an ACT2FN name; throws NotImplementedError naming it when zerodiff does not implement it.
CLIPActivation parse_clip_activation(const std::string& name);

/// Options of CLIPTextModel; defaults are transformers' CLIPTextConfig defaults.
struct CLIPTextOptions {
  TORCH_ARG(int64_t, vocab_size) = 49408;
  TORCH_ARG(int64_t, hidden_size) = 512;
  TORCH_ARG(int64_t, intermediate_size) = 2048;
  /// Only used by CLIPTextModelWithProjection (kept for the config round trip).
  TORCH_ARG(int64_t, projection_dim) = 512;
  TORCH_ARG(int64_t, num_hidden_layers) = 12;
  TORCH_ARG(int64_t, num_attention_heads) = 8;
  /// Positions (SD: 77 = the tokenizer's model_max_length).
  TORCH_ARG(int64_t, max_position_embeddings) = 77;
  /// "quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh" or "gelu_fast".
  TORCH_ARG(std::string, hidden_act) = "quick_gelu";
  TORCH_ARG(double, layer_norm_eps) = 1e-5;
  /// Dropout on the attention probabilities in training (transformers: attention_dropout).
  TORCH_ARG(double, attention_dropout) = 0.0;
  TORCH_ARG(double, initializer_range) = 0.02;
  TORCH_ARG(double, initializer_factor) = 1.0;
  TORCH_ARG(int64_t, pad_token_id) = 1;
  TORCH_ARG(int64_t, bos_token_id) = 49406;
  /// Pooled output: with eos_token_id == 2 (the published SD 1.x/2.x configs, written before transformers
  /// PR #24773) the row's argmax of input_ids (the eos, highest id); otherwise the first position of this id.
  TORCH_ARG(int64_t, eos_token_id) = 49407;

 public:
  /// Reads a transformers config.json object (CLIPTextConfig). Throws ConfigError naming the key for a wrong
  /// JSON type or a bad value, NotImplementedError for unsupported values (hidden_act, model_type) and
  /// unknown keys.
  static CLIPTextOptions from_json(const nlohmann::json& config);
  /// The config.json transformers 5.23's CLIPTextConfig.save_pretrained writes ("architectures":
  /// ["CLIPTextModel"], "model_type": "clip_text_model", every field).
  nlohmann::json to_json() const;
  /// Checks sizes (> 0, hidden_size divisible by heads) and the activation. Throws ConfigError /
  /// NotImplementedError naming the field.
  void validate() const;
  int64_t head_dim() const { return hidden_size() / num_attention_heads(); }
  CLIPActivation activation() const { return parse_clip_activation(hidden_act()); }
};

}  // namespace zerodiff::models
