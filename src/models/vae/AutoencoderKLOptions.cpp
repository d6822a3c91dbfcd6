#include "zerodiff/models/vae/AutoencoderKLOptions.h"

#include "../ConfigJson.h"
#include "zerodiff/core/Error.h"

namespace zerodiff::models {
namespace {

constexpr const char* kVaeClass = "AutoencoderKL";

}  // namespace

AutoencoderKLOptions AutoencoderKLOptions::from_json(const nlohmann::json& config) {
  detail::ConfigJsonReader r(config, kVaeClass);
  AutoencoderKLOptions o;
  o.in_channels(r.get_int("in_channels", o.in_channels()));
  o.out_channels(r.get_int("out_channels", o.out_channels()));
  o.down_block_types(r.get_string_list("down_block_types", o.down_block_types()));
  o.up_block_types(r.get_string_list("up_block_types", o.up_block_types()));
  o.block_out_channels(r.get_int_list("block_out_channels", o.block_out_channels()));
  o.layers_per_block(r.get_int("layers_per_block", o.layers_per_block()));
  o.act_fn(r.get_choice("act_fn", {"silu", "swish"}, o.act_fn()));
  o.latent_channels(r.get_int("latent_channels", o.latent_channels()));
  o.norm_num_groups(r.get_int("norm_num_groups", o.norm_num_groups()));
  const nlohmann::json sample_size = r.get_raw("sample_size", nlohmann::json(32));
  if (sample_size.is_number_integer()) {
    o.sample_size({sample_size.get<int64_t>()});
  } else if (sample_size.is_array() && sample_size.size() == 2 && sample_size[0].is_number_integer() &&
             sample_size[1].is_number_integer()) {
    o.sample_size({sample_size[0].get<int64_t>(), sample_size[1].get<int64_t>()});
  } else {
    r.fail("sample_size", str("expects an integer or [height, width], got ", sample_size.dump()));
  }
  o.scaling_factor(r.get_double("scaling_factor", o.scaling_factor()));
  o.shift_factor(r.get_optional_double("shift_factor"));
  o.latents_mean(r.get_optional_double_list("latents_mean"));
  o.latents_std(r.get_optional_double_list("latents_std"));
  o.force_upcast(r.get_bool("force_upcast", o.force_upcast()));
  o.use_quant_conv(r.get_bool("use_quant_conv", o.use_quant_conv()));
  o.use_post_quant_conv(r.get_bool("use_post_quant_conv", o.use_post_quant_conv()));
  o.mid_block_add_attention(r.get_bool("mid_block_add_attention", o.mid_block_add_attention()));
  r.finish();
  o.validate();
  return o;
}

nlohmann::json AutoencoderKLOptions::to_json() const {
  nlohmann::json j;
  j["_class_name"] = kVaeClass;
  j["_diffusers_version"] = "0.42.1";
  j["act_fn"] = act_fn();
  j["block_out_channels"] = block_out_channels();
  j["down_block_types"] = down_block_types();
  j["force_upcast"] = force_upcast();
  j["in_channels"] = in_channels();
  j["latent_channels"] = latent_channels();
  j["latents_mean"] = latents_mean() ? nlohmann::json(*latents_mean()) : nlohmann::json(nullptr);
  j["latents_std"] = latents_std() ? nlohmann::json(*latents_std()) : nlohmann::json(nullptr);
  j["layers_per_block"] = layers_per_block();
  j["mid_block_add_attention"] = mid_block_add_attention();
  j["norm_num_groups"] = norm_num_groups();
  j["out_channels"] = out_channels();
  j["sample_size"] = detail::int_or_list(sample_size());
  j["scaling_factor"] = scaling_factor();
  j["shift_factor"] = shift_factor() ? nlohmann::json(*shift_factor()) : nlohmann::json(nullptr);
  j["up_block_types"] = up_block_types();
  j["use_post_quant_conv"] = use_post_quant_conv();
  j["use_quant_conv"] = use_quant_conv();
  return j;
}

void AutoencoderKLOptions::validate() const {
  const size_t n = block_out_channels().size();
  if (n == 0) detail::config_key_error(kVaeClass, "block_out_channels", "must not be empty");
  if (down_block_types().size() != n) {
    detail::config_key_error(kVaeClass, "down_block_types",
                 str("has ", down_block_types().size(), " entries but block_out_channels has ", n));
  }
  if (up_block_types().size() != n) {
    detail::config_key_error(kVaeClass, "up_block_types", str("has ", up_block_types().size(), " entries but block_out_channels has ", n));
  }
  for (const auto& t : down_block_types()) {
    if (t != kDownEncoderBlock2D) {
      detail::config_key_unsupported(kVaeClass, "down_block_types",
                    str("entry \"", t, "\" is not supported by zerodiff (supported: \"", kDownEncoderBlock2D, "\")"));
    }
  }
  for (const auto& t : up_block_types()) {
    if (t != kUpDecoderBlock2D) {
      detail::config_key_unsupported(kVaeClass, "up_block_types",
                    str("entry \"", t, "\" is not supported by zerodiff (supported: \"", kUpDecoderBlock2D, "\")"));
    }
  }
  if (act_fn() != "silu" && act_fn() != "swish") {
    detail::config_key_unsupported(kVaeClass, "act_fn", str("= \"", act_fn(), "\" is not supported by zerodiff (supported: \"silu\", \"swish\")"));
  }
  if (norm_num_groups() < 1) detail::config_key_error(kVaeClass, "norm_num_groups", str("must be positive, got ", norm_num_groups()));
  for (int64_t c : block_out_channels()) {
    if (c < 1 || c % norm_num_groups() != 0) {
      detail::config_key_error(kVaeClass, "block_out_channels",
                   str("entry ", c, " must be a positive multiple of norm_num_groups ", norm_num_groups()));
    }
  }
  if (layers_per_block() < 1) detail::config_key_error(kVaeClass, "layers_per_block", str("must be positive, got ", layers_per_block()));
  if (latent_channels() < 1) detail::config_key_error(kVaeClass, "latent_channels", str("must be positive, got ", latent_channels()));
  if (in_channels() < 1) detail::config_key_error(kVaeClass, "in_channels", str("must be positive, got ", in_channels()));
  if (out_channels() < 1) detail::config_key_error(kVaeClass, "out_channels", str("must be positive, got ", out_channels()));
  if (scaling_factor() == 0.0) detail::config_key_error(kVaeClass, "scaling_factor", "must not be 0");
}

}  // namespace zerodiff::models
