#include "zerodiff/models/unet/UNet2DConditionModel.h"

#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/Diffusers.h"

namespace zerodiff::models {

UNet2DConditionModelImpl::UNet2DConditionModelImpl(UNet2DConditionOptions options_) : options(std::move(options_)) {
  reset();
}

void UNet2DConditionModelImpl::reset() {
  options.validate();
  const auto& boc = options.block_out_channels();
  const size_t n = boc.size();
  const int64_t time_embed_dim = options.time_embedding_dim().value_or(boc[0] * 4);
  const int64_t groups = options.norm_num_groups();
  const double eps = options.norm_eps();

  conv_in = register_module(
      "conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), boc[0], options.conv_in_kernel())
                                       .padding((options.conv_in_kernel() - 1) / 2)));
  time_proj = register_module("time_proj", Timesteps(TimestepsOptions(boc[0])
                                                         .flip_sin_to_cos(options.flip_sin_to_cos())
                                                         .downscale_freq_shift(options.freq_shift())));
  time_embedding =
      register_module("time_embedding", TimestepEmbedding(TimestepEmbeddingOptions(boc[0], time_embed_dim)));

  // diffusers creates down_blocks and up_blocks before mid_block; registering in the same order keeps
  // named_parameters() in diffusers' order.
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());

  // down
  int64_t output_channel = boc[0];
  for (size_t i = 0; i < n; ++i) {
    const int64_t input_channel = output_channel;
    output_channel = boc[i];
    const bool is_final = i == n - 1;
    if (options.down_block_types()[i] == kCrossAttnDownBlock2D) {
      down_blocks->push_back(CrossAttnDownBlock2D(
          CrossAttnDownBlock2DOptions(input_channel, output_channel, time_embed_dim)
              .dropout(options.dropout())
              .num_layers(options.layers_per_block_at(i))
              .transformer_layers_per_block({options.transformer_layers_at(i)})
              .resnet_eps(eps)
              .resnet_groups(groups)
              .num_attention_heads(options.heads_at(i))
              .cross_attention_dim(options.cross_attention_dim_at(i))
              .downsample_padding(options.downsample_padding())
              .add_downsample(!is_final)
              .use_linear_projection(options.use_linear_projection())
              .upcast_attention(options.upcast_attention())
              .attention_backend(options.attention_backend())));
    } else {
      down_blocks->push_back(DownBlock2D(DownBlock2DOptions(input_channel, output_channel, time_embed_dim)
                                             .dropout(options.dropout())
                                             .num_layers(options.layers_per_block_at(i))
                                             .resnet_eps(eps)
                                             .resnet_groups(groups)
                                             .add_downsample(!is_final)
                                             .downsample_padding(options.downsample_padding())));
    }
  }

  // mid
  mid_block = register_module(
      "mid_block", UNetMidBlock2DCrossAttn(UNetMidBlock2DCrossAttnOptions(boc[n - 1], time_embed_dim)
                                               .dropout(options.dropout())
                                               .transformer_layers_per_block({options.transformer_layers_at(n - 1)})
                                               .resnet_eps(eps)
                                               .resnet_groups(groups)
                                               .num_attention_heads(options.heads_at(n - 1))
                                               .output_scale_factor(options.mid_block_scale_factor())
                                               .cross_attention_dim(options.cross_attention_dim_at(n - 1))
                                               .use_linear_projection(options.use_linear_projection())
                                               .upcast_attention(options.upcast_attention())
                                               .attention_backend(options.attention_backend())));

  // up (per-block values reversed)
  num_upsamplers_ = 0;
  output_channel = boc[n - 1];
  for (size_t i = 0; i < n; ++i) {
    const size_t r = n - 1 - i;  // index of the mirrored down block
    const bool is_final = i == n - 1;
    const int64_t prev_output_channel = output_channel;
    output_channel = boc[r];
    const int64_t input_channel = boc[i + 1 < n ? n - 2 - i : 0];
    if (!is_final) ++num_upsamplers_;
    if (options.up_block_types()[i] == kCrossAttnUpBlock2D) {
      up_blocks->push_back(CrossAttnUpBlock2D(
          CrossAttnUpBlock2DOptions(input_channel, prev_output_channel, output_channel, time_embed_dim)
              .dropout(options.dropout())
              .num_layers(options.layers_per_block_at(r) + 1)
              .transformer_layers_per_block({options.transformer_layers_at(r)})
              .resnet_eps(eps)
              .resnet_groups(groups)
              .num_attention_heads(options.heads_at(r))
              .cross_attention_dim(options.cross_attention_dim_at(r))
              .add_upsample(!is_final)
              .use_linear_projection(options.use_linear_projection())
              .upcast_attention(options.upcast_attention())
              .attention_backend(options.attention_backend())));
    } else {
      up_blocks->push_back(
          UpBlock2D(UpBlock2DOptions(input_channel, prev_output_channel, output_channel, time_embed_dim)
                        .dropout(options.dropout())
                        .num_layers(options.layers_per_block_at(r) + 1)
                        .resnet_eps(eps)
                        .resnet_groups(groups)
                        .add_upsample(!is_final)));
    }
  }

  // out
  conv_norm_out = register_module(
      "conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, boc[0]).eps(eps).affine(true)));
  conv_out = register_module(
      "conv_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(boc[0], options.out_channels(), options.conv_out_kernel())
                                        .padding((options.conv_out_kernel() - 1) / 2)));
}

at::Tensor UNet2DConditionModelImpl::forward(const at::Tensor& sample_in, const at::Tensor& timestep,
                                             const at::Tensor& encoder_hidden_states) {
  ZD_CHECK(sample_in.defined() && sample_in.dim() == 4 && sample_in.size(1) == options.in_channels(),
           "UNet2DConditionModel: sample must be [B, ", options.in_channels(), ", H, W], got ",
           sample_in.defined() ? sample_in.sizes().vec() : std::vector<int64_t>{});
  const int64_t batch = sample_in.size(0);
  ZD_CHECK(encoder_hidden_states.defined() && encoder_hidden_states.dim() == 3 &&
               encoder_hidden_states.size(0) == batch,
           "UNet2DConditionModel: encoder_hidden_states must be [", batch, ", S, D], got ",
           encoder_hidden_states.defined() ? encoder_hidden_states.sizes().vec() : std::vector<int64_t>{});
  ZD_CHECK(timestep.defined() && (timestep.dim() == 0 || (timestep.dim() == 1 && (timestep.size(0) == batch ||
                                                                                  timestep.size(0) == 1))),
           "UNet2DConditionModel: timestep must be 0-d, [1] or [", batch, "], got ",
           timestep.defined() ? timestep.sizes().vec() : std::vector<int64_t>{});

  // Sizes that are not a multiple of the overall upsampling factor need explicit upsample sizes.
  const int64_t up_factor = int64_t{1} << num_upsamplers_;
  const bool forward_upsample_size = sample_in.size(2) % up_factor != 0 || sample_in.size(3) % up_factor != 0;
  std::optional<std::vector<int64_t>> upsample_size;

  at::Tensor sample = sample_in;
  if (options.center_input_sample()) sample = 2 * sample - 1.0;

  // Each unit of units() runs between the hooks (zero3 gathers its parameters meanwhile).
  size_t unit = 0;
  auto enter = [&] {
    if (unit_hooks_) unit_hooks_->pre_forward(first_unit_ + unit);
  };
  auto leave = [&](const std::vector<at::Tensor>& outputs) {
    if (unit_hooks_) unit_hooks_->post_forward(first_unit_ + unit, outputs);
    ++unit;
  };

  // 1. time and 2. pre-process: unit "stem"
  enter();
  at::Tensor timesteps = timestep.dim() == 0 ? timestep.unsqueeze(0) : timestep;
  timesteps = timesteps.to(sample.device()).expand({batch});
  at::Tensor t_emb = time_proj->forward(timesteps).to(sample.scalar_type());
  at::Tensor emb = time_embedding->forward(t_emb);
  sample = conv_in->forward(sample);
  leave({emb, sample});

  // 3. down
  std::vector<at::Tensor> res_samples{sample};
  for (size_t i = 0; i < down_blocks->size(); ++i) {
    enter();
    std::pair<at::Tensor, std::vector<at::Tensor>> out;
    if (auto* cross = down_blocks->ptr(i)->as<CrossAttnDownBlock2DImpl>()) {
      out = cross->forward(sample, emb, encoder_hidden_states);
    } else {
      out = down_blocks->ptr(i)->as<DownBlock2DImpl>()->forward(sample, emb);
    }
    sample = std::move(out.first);
    res_samples.insert(res_samples.end(), out.second.begin(), out.second.end());
    std::vector<at::Tensor> outputs{sample};
    outputs.insert(outputs.end(), out.second.begin(), out.second.end());
    leave(outputs);
  }

  // 4. mid
  enter();
  sample = mid_block->forward(sample, emb, encoder_hidden_states);
  leave({sample});

  // 5. up
  for (size_t i = 0; i < up_blocks->size(); ++i) {
    enter();
    const bool is_final = i + 1 == up_blocks->size();
    auto* cross = up_blocks->ptr(i)->as<CrossAttnUpBlock2DImpl>();
    auto* plain = up_blocks->ptr(i)->as<UpBlock2DImpl>();
    const size_t n_res = cross ? cross->resnets->size() : plain->resnets->size();
    ZD_INTERNAL_ASSERT(res_samples.size() >= n_res);
    std::vector<at::Tensor> block_res(res_samples.end() - static_cast<std::ptrdiff_t>(n_res), res_samples.end());
    res_samples.resize(res_samples.size() - n_res);
    if (!is_final && forward_upsample_size) {
      upsample_size = std::vector<int64_t>{res_samples.back().size(2), res_samples.back().size(3)};
    }
    if (cross) {
      sample = cross->forward(sample, block_res, emb, encoder_hidden_states, upsample_size);
    } else {
      sample = plain->forward(sample, block_res, emb, upsample_size);
    }
    leave({sample});
  }

  // 6. post-process: unit "head"
  enter();
  sample = torch::silu(conv_norm_out->forward(sample));
  sample = conv_out->forward(sample);
  leave({sample});
  return sample;
}

void UNet2DConditionModelImpl::enable_gradient_checkpointing(bool on) {
  gradient_checkpointing_ = on;
  auto set = [on](const std::shared_ptr<torch::nn::Module>& block) {
    if (auto* b = block->as<CrossAttnDownBlock2DImpl>()) b->gradient_checkpointing = on;
    if (auto* b = block->as<DownBlock2DImpl>()) b->gradient_checkpointing = on;
    if (auto* b = block->as<CrossAttnUpBlock2DImpl>()) b->gradient_checkpointing = on;
    if (auto* b = block->as<UpBlock2DImpl>()) b->gradient_checkpointing = on;
    if (auto* b = block->as<UNetMidBlock2DCrossAttnImpl>()) b->gradient_checkpointing = on;
  };
  for (size_t i = 0; i < down_blocks->size(); ++i) set(down_blocks->ptr(i));
  set(mid_block.ptr());
  for (size_t i = 0; i < up_blocks->size(); ++i) set(up_blocks->ptr(i));
}

std::vector<nn::Unit> UNet2DConditionModelImpl::units() const {
  std::vector<nn::Unit> units;
  auto stem = std::make_shared<torch::nn::Module>("UNetStem");
  stem->register_module("time_embedding", time_embedding.ptr());
  stem->register_module("conv_in", conv_in.ptr());
  units.push_back({"stem", stem, ""});
  for (size_t i = 0; i < down_blocks->size(); ++i) {
    const std::string name = "down_blocks." + std::to_string(i);
    units.push_back({name, down_blocks->ptr(i), name});
  }
  units.push_back({"mid_block", mid_block.ptr(), "mid_block"});
  for (size_t i = 0; i < up_blocks->size(); ++i) {
    const std::string name = "up_blocks." + std::to_string(i);
    units.push_back({name, up_blocks->ptr(i), name});
  }
  auto head = std::make_shared<torch::nn::Module>("UNetHead");
  head->register_module("conv_norm_out", conv_norm_out.ptr());
  head->register_module("conv_out", conv_out.ptr());
  units.push_back({"head", head, ""});
  return units;
}

UNet2DConditionModel unet_from_pretrained(const std::string& dir, const std::string& variant) {
  const nlohmann::json config = io::read_config_json(dir);
  UNet2DConditionOptions options;
  const std::string where = dir + "/config.json: ";
  try {
    options = UNet2DConditionOptions::from_json(config);
  } catch (const NotImplementedError& e) {
    throw NotImplementedError(where + e.what());
  } catch (const ConfigError& e) {
    throw ConfigError(where + e.what());
  }
  UNet2DConditionModel model(options);
  const io::TensorMap weights = io::load_weights(dir, io::kDiffusersWeightsName, variant);
  io::load_state_dict(*model, weights, /*strict=*/true, dir);
  return model;
}

void save_pretrained(const UNet2DConditionModel& model, const std::string& dir) {
  io::save_pretrained(*model, dir, model->options.to_json());
}

}  // namespace zerodiff::models
