#include "zerodiff/models/unet/UNet2DConditionOptions.h"

#include <cmath>

#include "../ConfigJson.h"
#include "zerodiff/core/Error.h"

namespace zerodiff::models {
namespace {

constexpr const char* kUNetClass = "UNet2DConditionModel";

int64_t at_block(const std::vector<int64_t>& values, size_t block) {
  return values.size() == 1 ? values[0] : values.at(block);
}

}  // namespace

UNet2DConditionOptions UNet2DConditionOptions::from_json(const nlohmann::json& config) {
  detail::ConfigJsonReader r(config, kUNetClass);
  UNet2DConditionOptions o;
  const nlohmann::json sample_size = r.get_raw("sample_size", nullptr);
  if (sample_size.is_number_integer()) {
    o.sample_size({sample_size.get<int64_t>()});
  } else if (sample_size.is_array() && sample_size.size() == 2 && sample_size[0].is_number_integer() &&
             sample_size[1].is_number_integer()) {
    o.sample_size({sample_size[0].get<int64_t>(), sample_size[1].get<int64_t>()});
  } else if (!sample_size.is_null()) {
    r.fail("sample_size", str("expects an integer, [height, width] or null, got ", sample_size.dump()));
  }
  o.in_channels(r.get_int("in_channels", o.in_channels()));
  o.out_channels(r.get_int("out_channels", o.out_channels()));
  o.center_input_sample(r.get_bool("center_input_sample", o.center_input_sample()));
  o.flip_sin_to_cos(r.get_bool("flip_sin_to_cos", o.flip_sin_to_cos()));
  o.freq_shift(r.get_double("freq_shift", o.freq_shift()));
  o.down_block_types(r.get_string_list("down_block_types", o.down_block_types()));
  if (config.contains("mid_block_type") && config["mid_block_type"].is_null()) {
    detail::config_key_unsupported(kUNetClass, "mid_block_type", "= null is not supported by zerodiff (supported: \"UNetMidBlock2DCrossAttn\")");
  }
  o.mid_block_type(r.get_choice("mid_block_type", {kUNetMidBlock2DCrossAttn}, o.mid_block_type()));
  o.up_block_types(r.get_string_list("up_block_types", o.up_block_types()));
  for (bool v : r.get_bool_or_bool_list("only_cross_attention", false)) {
    if (v) detail::config_key_unsupported(kUNetClass, "only_cross_attention", str("= ", config["only_cross_attention"].dump(),
                                                      " is not supported by zerodiff (supported: false)"));
  }
  o.block_out_channels(r.get_int_list("block_out_channels", o.block_out_channels()));
  o.layers_per_block(r.get_int_or_int_list("layers_per_block", o.layers_per_block()));
  o.downsample_padding(r.get_int("downsample_padding", o.downsample_padding()));
  o.mid_block_scale_factor(r.get_double("mid_block_scale_factor", o.mid_block_scale_factor()));
  o.dropout(r.get_double("dropout", o.dropout()));
  o.act_fn(r.get_choice("act_fn", {"silu", "swish"}, o.act_fn()));
  if (config.contains("norm_num_groups") && config["norm_num_groups"].is_null()) {
    detail::config_key_unsupported(kUNetClass, "norm_num_groups", "= null is not supported by zerodiff (an integer is required)");
  }
  o.norm_num_groups(r.get_int("norm_num_groups", o.norm_num_groups()));
  o.norm_eps(r.get_double("norm_eps", o.norm_eps()));
  o.cross_attention_dim(r.get_int_or_int_list("cross_attention_dim", o.cross_attention_dim()));
  {
    const nlohmann::json tl = r.get_raw("transformer_layers_per_block", nullptr);
    if (tl.is_array()) {
      for (const auto& e : tl) {
        if (e.is_array()) {
          detail::config_key_unsupported(kUNetClass, "transformer_layers_per_block",
                        str("= ", tl.dump(), " (nested lists, an asymmetric UNet) is not supported by zerodiff"));
        }
      }
    }
    o.transformer_layers_per_block(
        r.get_int_or_int_list("transformer_layers_per_block", o.transformer_layers_per_block()));
  }
  r.require_default("reverse_transformer_layers_per_block", nullptr);
  r.require_default("encoder_hid_dim", nullptr);
  r.require_default("encoder_hid_dim_type", nullptr);
  o.attention_head_dim(r.get_int_or_int_list("attention_head_dim", o.attention_head_dim()));
  r.require_default("num_attention_heads", nullptr,
                    "diffusers 0.42 rejects it as well; attention_head_dim is the number of heads");
  r.require_default("dual_cross_attention", false);
  o.use_linear_projection(r.get_bool("use_linear_projection", o.use_linear_projection()));
  r.require_default("class_embed_type", nullptr);
  r.require_default("addition_embed_type", nullptr);
  r.require_default("addition_time_embed_dim", nullptr);
  r.require_default("num_class_embeds", nullptr);
  o.upcast_attention(r.get_bool("upcast_attention", o.upcast_attention()));
  r.get_choice("resnet_time_scale_shift", {"default"}, "default");
  r.require_default("resnet_skip_time_act", false);
  r.require_default("resnet_out_scale_factor", 1.0);
  r.get_choice("time_embedding_type", {"positional"}, "positional");
  if (config.contains("time_embedding_dim") && config["time_embedding_dim"].is_null()) {
    r.get_raw("time_embedding_dim", nullptr);
  } else if (config.contains("time_embedding_dim")) {
    o.time_embedding_dim(r.get_int("time_embedding_dim", 0));
  }
  r.require_default("time_embedding_act_fn", nullptr);
  r.require_default("timestep_post_act", nullptr);
  r.require_default("time_cond_proj_dim", nullptr);
  o.conv_in_kernel(r.get_int("conv_in_kernel", o.conv_in_kernel()));
  o.conv_out_kernel(r.get_int("conv_out_kernel", o.conv_out_kernel()));
  r.require_default("projection_class_embeddings_input_dim", nullptr);
  r.get_choice("attention_type", {"default"}, "default");
  r.require_default("class_embeddings_concat", false);
  {
    const nlohmann::json v = r.get_raw("mid_block_only_cross_attention", nullptr);
    if (!(v.is_null() || (v.is_boolean() && !v.get<bool>()))) {
      detail::config_key_unsupported(kUNetClass, "mid_block_only_cross_attention",
                    str("= ", v.dump(), " is not supported by zerodiff (supported: null, false)"));
    }
  }
  r.require_default("cross_attention_norm", nullptr);
  r.require_default("addition_embed_type_num_heads", 64);
  r.finish();
  o.validate();
  return o;
}

nlohmann::json UNet2DConditionOptions::to_json() const {
  using detail::int_or_list;
  nlohmann::json j;
  j["_class_name"] = kUNetClass;
  j["_diffusers_version"] = "0.42.1";
  j["act_fn"] = act_fn();
  j["addition_embed_type"] = nullptr;
  j["addition_embed_type_num_heads"] = 64;
  j["addition_time_embed_dim"] = nullptr;
  j["attention_head_dim"] = int_or_list(attention_head_dim());
  j["attention_type"] = "default";
  j["block_out_channels"] = block_out_channels();
  j["center_input_sample"] = center_input_sample();
  j["class_embed_type"] = nullptr;
  j["class_embeddings_concat"] = false;
  j["conv_in_kernel"] = conv_in_kernel();
  j["conv_out_kernel"] = conv_out_kernel();
  j["cross_attention_dim"] = int_or_list(cross_attention_dim());
  j["cross_attention_norm"] = nullptr;
  j["down_block_types"] = down_block_types();
  j["downsample_padding"] = downsample_padding();
  j["dropout"] = dropout();
  j["dual_cross_attention"] = false;
  j["encoder_hid_dim"] = nullptr;
  j["encoder_hid_dim_type"] = nullptr;
  j["flip_sin_to_cos"] = flip_sin_to_cos();
  if (std::floor(freq_shift()) == freq_shift()) {
    j["freq_shift"] = static_cast<int64_t>(freq_shift());
  } else {
    j["freq_shift"] = freq_shift();
  }
  j["in_channels"] = in_channels();
  j["layers_per_block"] = int_or_list(layers_per_block());
  j["mid_block_only_cross_attention"] = nullptr;
  j["mid_block_scale_factor"] = mid_block_scale_factor();
  j["mid_block_type"] = mid_block_type();
  j["norm_eps"] = norm_eps();
  j["norm_num_groups"] = norm_num_groups();
  j["num_attention_heads"] = nullptr;
  j["num_class_embeds"] = nullptr;
  j["only_cross_attention"] = false;
  j["out_channels"] = out_channels();
  j["projection_class_embeddings_input_dim"] = nullptr;
  j["resnet_out_scale_factor"] = 1.0;
  j["resnet_skip_time_act"] = false;
  j["resnet_time_scale_shift"] = "default";
  j["reverse_transformer_layers_per_block"] = nullptr;
  if (sample_size().empty()) {
    j["sample_size"] = nullptr;
  } else {
    j["sample_size"] = int_or_list(sample_size());
  }
  j["time_cond_proj_dim"] = nullptr;
  j["time_embedding_act_fn"] = nullptr;
  j["time_embedding_dim"] = time_embedding_dim() ? nlohmann::json(*time_embedding_dim()) : nlohmann::json(nullptr);
  j["time_embedding_type"] = "positional";
  j["timestep_post_act"] = nullptr;
  j["transformer_layers_per_block"] = int_or_list(transformer_layers_per_block());
  j["up_block_types"] = up_block_types();
  j["upcast_attention"] = upcast_attention();
  j["use_linear_projection"] = use_linear_projection();
  return j;
}

void UNet2DConditionOptions::validate() const {
  const size_t n = down_block_types().size();
  if (n == 0) detail::config_key_error(kUNetClass, "down_block_types", "must not be empty");
  if (up_block_types().size() != n) {
    detail::config_key_error(kUNetClass, "up_block_types", str("has ", up_block_types().size(), " entries but down_block_types has ", n));
  }
  if (block_out_channels().size() != n) {
    detail::config_key_error(kUNetClass, "block_out_channels",
                 str("has ", block_out_channels().size(), " entries but down_block_types has ", n));
  }
  for (const auto& t : down_block_types()) {
    if (t != kCrossAttnDownBlock2D && t != kDownBlock2D) {
      detail::config_key_unsupported(kUNetClass, "down_block_types", str("entry \"", t, "\" is not supported by zerodiff (supported: \"",
                                            kCrossAttnDownBlock2D, "\", \"", kDownBlock2D, "\")"));
    }
  }
  for (const auto& t : up_block_types()) {
    if (t != kUpBlock2D && t != kCrossAttnUpBlock2D) {
      detail::config_key_unsupported(kUNetClass, "up_block_types", str("entry \"", t, "\" is not supported by zerodiff (supported: \"",
                                          kUpBlock2D, "\", \"", kCrossAttnUpBlock2D, "\")"));
    }
  }
  if (mid_block_type() != kUNetMidBlock2DCrossAttn) {
    detail::config_key_unsupported(kUNetClass, "mid_block_type", str("= \"", mid_block_type(), "\" is not supported by zerodiff (supported: \"",
                                        kUNetMidBlock2DCrossAttn, "\")"));
  }
  if (act_fn() != "silu" && act_fn() != "swish") {
    detail::config_key_unsupported(kUNetClass, "act_fn", str("= \"", act_fn(), "\" is not supported by zerodiff (supported: \"silu\", \"swish\")"));
  }
  auto check_per_block = [&](const std::vector<int64_t>& v, const char* key) {
    if (v.size() != 1 && v.size() != n) {
      detail::config_key_error(kUNetClass, key, str("has ", v.size(), " entries but down_block_types has ", n));
    }
    for (int64_t x : v) {
      if (x < 1) detail::config_key_error(kUNetClass, key, str("must be positive, got ", v));
    }
  };
  check_per_block(attention_head_dim(), "attention_head_dim");
  check_per_block(cross_attention_dim(), "cross_attention_dim");
  check_per_block(layers_per_block(), "layers_per_block");
  check_per_block(transformer_layers_per_block(), "transformer_layers_per_block");
  if (norm_num_groups() < 1) detail::config_key_error(kUNetClass, "norm_num_groups", str("must be positive, got ", norm_num_groups()));
  for (size_t i = 0; i < n; ++i) {
    const int64_t c = block_out_channels()[i];
    if (c < 1 || c % norm_num_groups() != 0) {
      detail::config_key_error(kUNetClass, "block_out_channels",
                   str("entry ", c, " must be a positive multiple of norm_num_groups ", norm_num_groups()));
    }
    if (c % heads_at(i) != 0) {
      detail::config_key_error(kUNetClass, "attention_head_dim",
                   str("(the number of heads) ", heads_at(i), " does not divide block_out_channels[", i, "] = ", c));
    }
  }
  if (conv_in_kernel() < 1 || conv_in_kernel() % 2 == 0) {
    detail::config_key_error(kUNetClass, "conv_in_kernel", str("must be a positive odd integer, got ", conv_in_kernel()));
  }
  if (conv_out_kernel() < 1 || conv_out_kernel() % 2 == 0) {
    detail::config_key_error(kUNetClass, "conv_out_kernel", str("must be a positive odd integer, got ", conv_out_kernel()));
  }
  if (in_channels() < 1) detail::config_key_error(kUNetClass, "in_channels", str("must be positive, got ", in_channels()));
  if (out_channels() < 1) detail::config_key_error(kUNetClass, "out_channels", str("must be positive, got ", out_channels()));
  if (downsample_padding() < 0) detail::config_key_error(kUNetClass, "downsample_padding", str("must be >= 0, got ", downsample_padding()));
  if (time_embedding_dim() && *time_embedding_dim() < 1) {
    detail::config_key_error(kUNetClass, "time_embedding_dim", str("must be positive, got ", *time_embedding_dim()));
  }
}

int64_t UNet2DConditionOptions::heads_at(size_t block) const { return at_block(attention_head_dim(), block); }
int64_t UNet2DConditionOptions::cross_attention_dim_at(size_t block) const {
  return at_block(cross_attention_dim(), block);
}
int64_t UNet2DConditionOptions::layers_per_block_at(size_t block) const { return at_block(layers_per_block(), block); }
int64_t UNet2DConditionOptions::transformer_layers_at(size_t block) const {
  return at_block(transformer_layers_per_block(), block);
}

}  // namespace zerodiff::models
