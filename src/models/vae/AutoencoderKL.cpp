#include "zerodiff/models/vae/AutoencoderKL.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/Diffusers.h"

namespace zerodiff::models {

AutoencoderKLImpl::AutoencoderKLImpl(AutoencoderKLOptions options_) : options(std::move(options_)) { reset(); }

void AutoencoderKLImpl::reset() {
  options.validate();
  const int64_t latent = options.latent_channels();
  encoder = register_module("encoder", Encoder(EncoderOptions()
                                                   .in_channels(options.in_channels())
                                                   .out_channels(latent)
                                                   .block_out_channels(options.block_out_channels())
                                                   .layers_per_block(options.layers_per_block())
                                                   .norm_num_groups(options.norm_num_groups())
                                                   .double_z(true)
                                                   .mid_block_add_attention(options.mid_block_add_attention())
                                                   .attention_backend(options.attention_backend())));
  decoder = register_module("decoder", Decoder(DecoderOptions()
                                                   .in_channels(latent)
                                                   .out_channels(options.out_channels())
                                                   .block_out_channels(options.block_out_channels())
                                                   .layers_per_block(options.layers_per_block())
                                                   .norm_num_groups(options.norm_num_groups())
                                                   .mid_block_add_attention(options.mid_block_add_attention())
                                                   .attention_backend(options.attention_backend())));
  quant_conv = nullptr;
  post_quant_conv = nullptr;
  if (options.use_quant_conv()) {
    quant_conv = register_module("quant_conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(2 * latent, 2 * latent, 1)));
  }
  if (options.use_post_quant_conv()) {
    post_quant_conv = register_module("post_quant_conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(latent, latent, 1)));
  }
}

DiagonalGaussianDistribution AutoencoderKLImpl::encode(const at::Tensor& x) {
  ZD_CHECK(x.defined() && x.dim() == 4 && x.size(1) == options.in_channels(), "AutoencoderKL::encode: x must be [B, ",
           options.in_channels(), ", H, W], got ", x.defined() ? x.sizes().vec() : std::vector<int64_t>{});
  at::Tensor h = encoder->forward(x);
  if (quant_conv) h = quant_conv->forward(h);
  return DiagonalGaussianDistribution(h);
}

at::Tensor AutoencoderKLImpl::decode(const at::Tensor& z) {
  ZD_CHECK(z.defined() && z.dim() == 4 && z.size(1) == options.latent_channels(),
           "AutoencoderKL::decode: z must be [B, ", options.latent_channels(), ", h, w], got ",
           z.defined() ? z.sizes().vec() : std::vector<int64_t>{});
  at::Tensor h = post_quant_conv ? post_quant_conv->forward(z) : z;
  return decoder->forward(h);
}

at::Tensor AutoencoderKLImpl::forward(const at::Tensor& x, bool sample_posterior,
                                      std::optional<at::Generator> generator) {
  DiagonalGaussianDistribution posterior = encode(x);
  at::Tensor z = sample_posterior ? posterior.sample(std::move(generator)) : posterior.mode();
  return decode(z);
}

at::Tensor AutoencoderKLImpl::scale_latents(const at::Tensor& z) const {
  if (options.shift_factor()) return (z - *options.shift_factor()) * options.scaling_factor();
  return z * options.scaling_factor();
}

at::Tensor AutoencoderKLImpl::unscale_latents(const at::Tensor& z) const {
  at::Tensor out = z / options.scaling_factor();
  if (options.shift_factor()) out = out + *options.shift_factor();
  return out;
}

at::Tensor AutoencoderKLImpl::to_latents(const at::Tensor& x, std::optional<at::Generator> generator, bool sample) {
  DiagonalGaussianDistribution posterior = encode(x);
  return scale_latents(sample ? posterior.sample(std::move(generator)) : posterior.mode());
}

at::Tensor AutoencoderKLImpl::from_latents(const at::Tensor& z) { return decode(unscale_latents(z)); }

std::vector<nn::Unit> AutoencoderKLImpl::units() const {
  std::vector<nn::Unit> units;
  units.push_back({"encoder.conv_in", encoder->conv_in.ptr(), "encoder.conv_in"});
  for (size_t i = 0; i < encoder->down_blocks->size(); ++i) {
    const std::string name = "encoder.down_blocks." + std::to_string(i);
    units.push_back({name, encoder->down_blocks->ptr(i), name});
  }
  units.push_back({"encoder.mid_block", encoder->mid_block.ptr(), "encoder.mid_block"});
  auto encoder_head = std::make_shared<torch::nn::Module>("EncoderHead");
  encoder_head->register_module("conv_norm_out", encoder->conv_norm_out.ptr());
  encoder_head->register_module("conv_out", encoder->conv_out.ptr());
  units.push_back({"encoder.head", encoder_head, "encoder"});
  if (quant_conv) units.push_back({"quant_conv", quant_conv.ptr(), "quant_conv"});
  if (post_quant_conv) units.push_back({"post_quant_conv", post_quant_conv.ptr(), "post_quant_conv"});
  units.push_back({"decoder.conv_in", decoder->conv_in.ptr(), "decoder.conv_in"});
  units.push_back({"decoder.mid_block", decoder->mid_block.ptr(), "decoder.mid_block"});
  for (size_t i = 0; i < decoder->up_blocks->size(); ++i) {
    const std::string name = "decoder.up_blocks." + std::to_string(i);
    units.push_back({name, decoder->up_blocks->ptr(i), name});
  }
  auto decoder_head = std::make_shared<torch::nn::Module>("DecoderHead");
  decoder_head->register_module("conv_norm_out", decoder->conv_norm_out.ptr());
  decoder_head->register_module("conv_out", decoder->conv_out.ptr());
  units.push_back({"decoder.head", decoder_head, "decoder"});
  return units;
}

AutoencoderKL vae_from_pretrained(const std::string& dir, const std::string& variant) {
  const nlohmann::json config = io::read_config_json(dir);
  AutoencoderKLOptions options;
  const std::string where = dir + "/config.json: ";
  try {
    options = AutoencoderKLOptions::from_json(config);
  } catch (const NotImplementedError& e) {
    throw NotImplementedError(where + e.what());
  } catch (const ConfigError& e) {
    throw ConfigError(where + e.what());
  }
  AutoencoderKL model(options);
  const io::TensorMap weights = io::load_weights(dir, io::kDiffusersWeightsName, variant);
  io::load_state_dict(*model, weights, /*strict=*/true, dir);
  return model;
}

void save_pretrained(const AutoencoderKL& model, const std::string& dir) {
  io::save_pretrained(*model, dir, model->options.to_json());
}

}  // namespace zerodiff::models
