// CLIPTextOptions <-> transformers' CLIPTextConfig config.json (5.23 field names and defaults).
#include "zerodiff/models/clip/CLIPTextOptions.h"

#include "../ConfigJson.h"
#include "zerodiff/core/Error.h"

namespace zerodiff::models {

namespace {
constexpr const char* kClipClass = "CLIPTextModel";
// PretrainedConfig keys that carry no behaviour for the text model (transformers 4.x wrote many of them into
// nested configs; 5.x writes architectures, dtype, transformers_version). Any value is accepted.
constexpr const char* kGenericKeys[] = {
    "architectures", "transformers_version", "dtype", "torch_dtype", "output_hidden_states", "output_attentions",
    "return_dict", "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type",
    "torchscript", "use_bfloat16", "tie_word_embeddings", "pruned_heads", "is_decoder", "add_cross_attention",
    "tie_encoder_decoder", "cross_attention_hidden_size", "tokenizer_class", "prefix", "sep_token_id",
    "decoder_start_token_id", "task_specific_params", "finetuning_task", "max_length", "min_length", "do_sample",
    "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p",
    "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "bad_words_ids", "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "tf_legacy_loss", "use_cache",
    // CLIPTextConfig of transformers 4.x had `dropout` (unused by the text model).
    "dropout"};
}  // namespace

CLIPActivation parse_clip_activation(const std::string& name) {
  if (auto activation = lookup_enum<CLIPActivation>(name)) return *activation;
  std::string supported;
  for (const auto& entry : kCLIPActivationNames) supported += (supported.empty() ? "" : ", ") + std::string(entry.name);
  throw NotImplementedError(str(kClipClass, " config: key 'hidden_act' = \"", name,
                                "\" is not supported by zerodiff (supported: ", supported, ")"));
}

CLIPTextOptions CLIPTextOptions::from_json(const nlohmann::json& config) {
  detail::ConfigJsonReader r(config, kClipClass);
  CLIPTextOptions o;
  o.vocab_size(r.get_int("vocab_size", o.vocab_size()));
  o.hidden_size(r.get_int("hidden_size", o.hidden_size()));
  o.intermediate_size(r.get_int("intermediate_size", o.intermediate_size()));
  o.projection_dim(r.get_int("projection_dim", o.projection_dim()));
  o.num_hidden_layers(r.get_int("num_hidden_layers", o.num_hidden_layers()));
  o.num_attention_heads(r.get_int("num_attention_heads", o.num_attention_heads()));
  o.max_position_embeddings(r.get_int("max_position_embeddings", o.max_position_embeddings()));
  o.hidden_act(r.get_string("hidden_act", o.hidden_act()));
  o.layer_norm_eps(r.get_double("layer_norm_eps", o.layer_norm_eps()));
  o.attention_dropout(r.get_double("attention_dropout", o.attention_dropout()));
  o.initializer_range(r.get_double("initializer_range", o.initializer_range()));
  o.initializer_factor(r.get_double("initializer_factor", o.initializer_factor()));
  o.pad_token_id(r.get_int("pad_token_id", o.pad_token_id()));
  o.bos_token_id(r.get_int("bos_token_id", o.bos_token_id()));
  if (r.has("eos_token_id") && !config.at("eos_token_id").is_number_integer()) {
    r.unsupported("eos_token_id", str("= ", config.at("eos_token_id").dump(),
                                      " is not supported by zerodiff (supported: one integer)"));
  }
  o.eos_token_id(r.get_int("eos_token_id", o.eos_token_id()));
  const std::string model_type = r.get_string("model_type", "clip_text_model");
  if (model_type != "clip_text_model") {
    r.unsupported("model_type", str("= \"", model_type, "\" is not supported here (expected \"clip_text_model\")"));
  }
  for (const char* key : kGenericKeys) r.get_raw(key, nullptr);
  r.finish();
  o.validate();
  return o;
}

nlohmann::json CLIPTextOptions::to_json() const {
  return nlohmann::json{
      {"architectures", {"CLIPTextModel"}},
      {"attention_dropout", attention_dropout()},
      {"bos_token_id", bos_token_id()},
      {"eos_token_id", eos_token_id()},
      {"hidden_act", hidden_act()},
      {"hidden_size", hidden_size()},
      {"initializer_factor", initializer_factor()},
      {"initializer_range", initializer_range()},
      {"intermediate_size", intermediate_size()},
      {"layer_norm_eps", layer_norm_eps()},
      {"max_position_embeddings", max_position_embeddings()},
      {"model_type", "clip_text_model"},
      {"num_attention_heads", num_attention_heads()},
      {"num_hidden_layers", num_hidden_layers()},
      {"pad_token_id", pad_token_id()},
      {"projection_dim", projection_dim()},
      {"transformers_version", "5.23.0"},
      {"vocab_size", vocab_size()},
  };
}

void CLIPTextOptions::validate() const {
  const auto positive = [](const char* key, int64_t v) {
    if (v <= 0) throw ConfigError(str(kClipClass, " config: key '", key, "' must be > 0, got ", v));
  };
  positive("vocab_size", vocab_size());
  positive("hidden_size", hidden_size());
  positive("intermediate_size", intermediate_size());
  positive("num_hidden_layers", num_hidden_layers());
  positive("num_attention_heads", num_attention_heads());
  positive("max_position_embeddings", max_position_embeddings());
  if (hidden_size() % num_attention_heads() != 0) {
    throw ConfigError(str(kClipClass, " config: key 'hidden_size' (", hidden_size(),
                          ") must be a multiple of num_attention_heads (", num_attention_heads(), ")"));
  }
  if (!(layer_norm_eps() > 0)) {
    throw ConfigError(str(kClipClass, " config: key 'layer_norm_eps' must be > 0, got ", layer_norm_eps()));
  }
  if (attention_dropout() < 0 || attention_dropout() >= 1) {
    throw ConfigError(str(kClipClass, " config: key 'attention_dropout' must be in [0, 1), got ", attention_dropout()));
  }
  (void)parse_clip_activation(hidden_act());
}

}  // namespace zerodiff::models
