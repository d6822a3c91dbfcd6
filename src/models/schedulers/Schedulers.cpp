// DDPM, DDIM and Euler discrete schedulers. Reference: diffusers 0.42 schedulers/scheduling_ddpm.py,
// scheduling_ddim.py, scheduling_euler_discrete.py. Scalar arithmetic on alphas_cumprod entries is done in
// float (float32), as the reference does on 0-d float32 tensors; index arithmetic mirrors numpy, including
// np.round's round-half-to-even (std::nearbyint) and np.linspace's exact end point.
#include "zerodiff/models/schedulers/Schedulers.h"

#include <ATen/ATen.h>

#include <cfenv>
#include <cmath>

#include "zerodiff/core/Error.h"

namespace zerodiff::models {

namespace {

const char* const kKnownKeys[] = {
    "_class_name", "_diffusers_version", "num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
    "trained_betas", "prediction_type", "variance_type", "clip_sample", "clip_sample_range", "set_alpha_to_one",
    "steps_offset", "timestep_spacing", "rescale_betas_zero_snr", "thresholding", "interpolation_type",
    "use_karras_sigmas", "final_sigmas_type", "timestep_type", "dynamic_thresholding_ratio", "sample_max_value",
    "skip_prk_steps", "use_exponential_sigmas", "use_beta_sigmas", "sigma_min", "sigma_max"};

template <class T>
void get(const nlohmann::json& j, const char* key, T& out) {
  if (!j.contains(key) || j[key].is_null()) return;
  try {
    out = j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    throw ConfigError(zerodiff::str("scheduler config: key '", key, "' has the wrong type (", j[key].dump(), ")"));
  }
}

double np_round(double x) {
  // np.round: round half to even, which is nearbyint under the default rounding mode.
  return std::nearbyint(x);
}

// numpy.linspace(start, stop, num) in float64, end point included exactly.
std::vector<double> np_linspace(double start, double stop, int64_t num) {
  std::vector<double> out(static_cast<size_t>(num));
  if (num == 1) {
    out[0] = start;
    return out;
  }
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (int64_t i = 0; i < num; ++i) out[static_cast<size_t>(i)] = static_cast<double>(i) * step + start;
  out.back() = stop;
  return out;
}

void check_steps(int64_t n, int64_t train_steps) {
  ZD_CHECK(n >= 1 && n <= train_steps, "set_timesteps: num_inference_steps must be in [1, ",
           train_steps, "] (num_train_timesteps), got ", n);
}

float at_index(const at::Tensor& t, int64_t i) { return t[i].item<float>(); }

// Broadcasts a per-sample coefficient [B] to [B, 1, 1, ...] like `sample`.
at::Tensor expand_like(at::Tensor coef, const at::Tensor& like) {
  coef = coef.flatten();
  while (coef.dim() < like.dim()) coef = coef.unsqueeze(-1);
  return coef;
}

}  // namespace

// ------------------------------------------------------------------ config

namespace {

// A mode field of scheduler_config.json: absent or null keeps `out`; a name outside the mode's table throws
// ConfigError "<where>: <key> '<name>' is not one of a, b, c" when the class uses the field (`used`), and keeps
// `out` otherwise (diffusers' configs carry other classes' fields; a value only they know is not an error).
template <class E>
void get_mode(const nlohmann::json& j, const char* key, E& out, const std::string& where, bool used = true) {
  std::string name(name_of(out));
  get(j, key, name);
  const auto parsed = lookup_enum<E>(name);
  if (!parsed && !used) return;
  ZD_CHECK_T(ConfigError, parsed.has_value(), where, ": ", key, " '", name, "' is not one of ", enum_list<E>());
  out = *parsed;
}

}  // namespace

SchedulerConfig SchedulerConfig::defaults_for(SchedulerKind kind) {
  SchedulerConfig c;
  c.class_name = kind;
  switch (kind) {
    case SchedulerKind::ddim:
      c.set_alpha_to_one = true;
      c.clip_sample = true;
      c.timestep_spacing = TimestepSpacing::leading;
      break;
    case SchedulerKind::euler_discrete:
      c.timestep_spacing = TimestepSpacing::linspace;
      c.clip_sample = false;
      break;
    case SchedulerKind::ddpm:
      break;
  }
  return c;
}

SchedulerConfig SchedulerConfig::defaults_for(const std::string& class_name) {
  const auto kind = lookup_enum<SchedulerKind>(class_name);
  if (!kind || name_of(*kind) != class_name) {  // the class names only (ddim, euler, ddpm are flag spellings)
    throw NotImplementedError(zerodiff::str("scheduler '", class_name, "' is not supported (",
                                            enum_list<SchedulerKind>(), ")"));
  }
  return defaults_for(*kind);
}

SchedulerConfig SchedulerConfig::from_json(const nlohmann::json& j) {
  ZD_CHECK_T(ConfigError, j.is_object(), "scheduler config: expected a JSON object");
  std::string cls = "DDPMScheduler";
  get(j, "_class_name", cls);
  SchedulerConfig c = defaults_for(cls);
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* k : kKnownKeys) known = known || it.key() == k;
    if (!known) {
      throw NotImplementedError(zerodiff::str("scheduler config: key '", it.key(), "' (", it.value().dump(),
                                              ") is not supported by zerodiff's ", cls));
    }
  }
  get(j, "num_train_timesteps", c.num_train_timesteps);
  get(j, "beta_start", c.beta_start);
  get(j, "beta_end", c.beta_end);
  get(j, "trained_betas", c.trained_betas);
  get_mode(j, "beta_schedule", c.beta_schedule, "scheduler config", /*used=*/c.trained_betas.empty());
  get_mode(j, "prediction_type", c.prediction_type, "scheduler config");
  {
    std::string variance(name_of(c.variance_type));
    get(j, "variance_type", variance);
    const auto parsed = lookup_enum<VarianceType>(variance);
    if (!parsed && c.class_name == SchedulerKind::ddpm) {  // only DDPM uses it
      throw NotImplementedError(zerodiff::str("DDPMScheduler: variance_type '", variance, "' is not supported (",
                                              enum_list<VarianceType>(), ")"));
    }
    if (parsed) c.variance_type = *parsed;
  }
  get(j, "clip_sample", c.clip_sample);
  get(j, "clip_sample_range", c.clip_sample_range);
  get(j, "set_alpha_to_one", c.set_alpha_to_one);
  get(j, "steps_offset", c.steps_offset);
  get_mode(j, "timestep_spacing", c.timestep_spacing, "scheduler config");
  get(j, "rescale_betas_zero_snr", c.rescale_betas_zero_snr);
  get(j, "thresholding", c.thresholding);
  get(j, "interpolation_type", c.interpolation_type);
  get(j, "use_karras_sigmas", c.use_karras_sigmas);
  get_mode(j, "final_sigmas_type", c.final_sigmas_type, cls, /*used=*/c.class_name == SchedulerKind::euler_discrete);
  get(j, "timestep_type", c.timestep_type);
  for (const char* flag : {"use_exponential_sigmas", "use_beta_sigmas"}) {
    bool on = false;
    get(j, flag, on);
    if (on) throw NotImplementedError(zerodiff::str("scheduler config: ", flag, "=true is not supported"));
  }
  return c;
}

nlohmann::json SchedulerConfig::to_json() const {
  nlohmann::json j = {{"_class_name", std::string(name_of(class_name))},
                      {"num_train_timesteps", num_train_timesteps},
                      {"beta_start", beta_start},
                      {"beta_end", beta_end},
                      {"beta_schedule", std::string(name_of(beta_schedule))},
                      {"trained_betas", nullptr},
                      {"prediction_type", std::string(name_of(prediction_type))},
                      {"steps_offset", steps_offset},
                      {"timestep_spacing", std::string(name_of(timestep_spacing))},
                      {"rescale_betas_zero_snr", rescale_betas_zero_snr}};
  if (!trained_betas.empty()) j["trained_betas"] = trained_betas;
  if (class_name == SchedulerKind::ddpm || class_name == SchedulerKind::ddim) {
    j["clip_sample"] = clip_sample;
    j["clip_sample_range"] = clip_sample_range;
    j["thresholding"] = thresholding;
  }
  if (class_name == SchedulerKind::ddpm) j["variance_type"] = std::string(name_of(variance_type));
  if (class_name == SchedulerKind::ddim) j["set_alpha_to_one"] = set_alpha_to_one;
  if (class_name == SchedulerKind::euler_discrete) {
    j["interpolation_type"] = interpolation_type;
    j["use_karras_sigmas"] = use_karras_sigmas;
    j["final_sigmas_type"] = std::string(name_of(final_sigmas_type));
    j["timestep_type"] = timestep_type;
  }
  return j;
}

// ------------------------------------------------------------------ schedules

at::Tensor rescale_zero_terminal_snr(const at::Tensor& betas) {
  const at::Tensor alphas = 1.0 - betas;
  const at::Tensor alphas_cumprod = at::cumprod(alphas, 0);
  at::Tensor alphas_bar_sqrt = alphas_cumprod.sqrt();
  const at::Tensor a0 = alphas_bar_sqrt[0].clone();
  const at::Tensor aT = alphas_bar_sqrt[-1].clone();
  alphas_bar_sqrt = alphas_bar_sqrt - aT;
  alphas_bar_sqrt = alphas_bar_sqrt * (a0 / (a0 - aT));
  const at::Tensor alphas_bar = alphas_bar_sqrt.pow(2);
  at::Tensor rescaled = alphas_bar.slice(0, 1) / alphas_bar.slice(0, 0, -1);
  rescaled = at::cat({alphas_bar.slice(0, 0, 1), rescaled});
  return 1.0 - rescaled;
}

at::Tensor make_betas(const SchedulerConfig& c) {
  const int64_t T = c.num_train_timesteps;
  ZD_CHECK_T(ConfigError, T >= 1, "scheduler config: num_train_timesteps must be >= 1, got ", T);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor betas;
  if (!c.trained_betas.empty()) {
    betas = at::tensor(c.trained_betas, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);
  } else if (c.beta_schedule == BetaSchedule::linear) {
    betas = at::linspace(c.beta_start, c.beta_end, T, f32);
  } else if (c.beta_schedule == BetaSchedule::scaled_linear) {
    betas = at::linspace(std::sqrt(c.beta_start), std::sqrt(c.beta_end), T, f32).pow(2);
  } else {  // squaredcos_cap_v2
    // betas_for_alpha_bar(T, max_beta=0.999, alpha_transform_type="cosine"), in Python floats (double).
    auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2); };
    std::vector<double> b(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i) {
      const double t1 = static_cast<double>(i) / T, t2 = static_cast<double>(i + 1) / T;
      b[static_cast<size_t>(i)] = std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999);
    }
    betas = at::tensor(b, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);
  }
  ZD_CHECK_T(ConfigError, betas.numel() == T, "scheduler config: trained_betas has ", betas.numel(),
             " entries but num_train_timesteps is ", T);
  if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  return betas;
}

at::Tensor spaced_timesteps(TimestepSpacing spacing, int64_t T, int64_t n, int64_t steps_offset) {
  check_steps(n, T);
  std::vector<int64_t> ts;
  if (spacing == TimestepSpacing::linspace) {
    for (double v : np_linspace(0.0, static_cast<double>(T - 1), n)) ts.push_back(static_cast<int64_t>(np_round(v)));
    std::reverse(ts.begin(), ts.end());
  } else if (spacing == TimestepSpacing::leading) {
    const int64_t ratio = T / n;
    for (int64_t i = n - 1; i >= 0; --i) ts.push_back(i * ratio + steps_offset);
  } else {  // trailing
    // np.round(np.arange(T, 0, -T / n)).astype(int64) - 1
    const double ratio = static_cast<double>(T) / static_cast<double>(n);
    const auto count = static_cast<int64_t>(std::ceil((0.0 - T) / -ratio));
    for (int64_t i = 0; i < count; ++i) {
      ts.push_back(static_cast<int64_t>(np_round(static_cast<double>(T) + static_cast<double>(i) * -ratio)) - 1);
    }
  }
  return at::tensor(ts, at::TensorOptions().dtype(at::kLong));
}

// ------------------------------------------------------------------ base

NoiseScheduler::NoiseScheduler(SchedulerConfig config) : config_(std::move(config)) {
  if (config_.thresholding) {
    throw NotImplementedError("scheduler config: thresholding=true (dynamic thresholding) is not supported");
  }
  betas_ = make_betas(config_);
  alphas_cumprod_ = at::cumprod(1.0 - betas_, 0);
  timesteps_ = at::arange(config_.num_train_timesteps - 1, -1, -1, at::TensorOptions().dtype(at::kLong));
}

std::unique_ptr<NoiseScheduler> NoiseScheduler::create(const SchedulerConfig& config) {
  switch (config.class_name) {
    case SchedulerKind::ddpm: return std::make_unique<DDPMScheduler>(config);
    case SchedulerKind::ddim: return std::make_unique<DDIMScheduler>(config);
    case SchedulerKind::euler_discrete: return std::make_unique<EulerDiscreteScheduler>(config);
  }
  ZD_THROW("NoiseScheduler::create: invalid SchedulerKind ", static_cast<int>(config.class_name));
}

at::Tensor NoiseScheduler::add_noise(const at::Tensor& original, const at::Tensor& noise,
                                     const at::Tensor& timesteps) const {
  ZD_CHECK(original.sizes() == noise.sizes(), "add_noise: sample ", original.sizes(), " and noise ", noise.sizes(),
           " differ in shape");
  const at::Tensor ac = alphas_cumprod_.to(original.device(), original.scalar_type());
  const at::Tensor t = timesteps.to(original.device(), at::kLong);
  const at::Tensor a = ac.index_select(0, t.flatten());
  const at::Tensor sqrt_alpha = expand_like(a.pow(0.5), original);
  const at::Tensor sqrt_one_minus = expand_like((1.0 - a).pow(0.5), original);
  return sqrt_alpha * original + sqrt_one_minus * noise;
}

at::Tensor NoiseScheduler::get_velocity(const at::Tensor& sample, const at::Tensor& noise,
                                        const at::Tensor& timesteps) const {
  ZD_CHECK(sample.sizes() == noise.sizes(), "get_velocity: sample ", sample.sizes(), " and noise ", noise.sizes(),
           " differ in shape");
  const at::Tensor ac = alphas_cumprod_.to(sample.device(), sample.scalar_type());
  const at::Tensor a = ac.index_select(0, timesteps.to(sample.device(), at::kLong).flatten());
  return expand_like(a.pow(0.5), sample) * noise - expand_like((1.0 - a).pow(0.5), sample) * sample;
}

at::Tensor NoiseScheduler::draw_noise(const at::Tensor& like, const SchedulerStepOptions& options) {
  if (options.variance_noise.defined()) {
    ZD_CHECK(options.variance_noise.sizes() == like.sizes(), "step: variance_noise has shape ",
             options.variance_noise.sizes(), " but the sample has ", like.sizes());
    return options.variance_noise.to(like.device(), like.scalar_type());
  }
  if (options.generator) return at::randn(like.sizes(), *options.generator, like.options());
  return at::randn(like.sizes(), like.options());
}

at::Tensor NoiseScheduler::predict_original(const at::Tensor& model_output, const at::Tensor& sample,
                                            float alpha_prod_t) const {
  const float beta_prod_t = 1.0f - alpha_prod_t;
  const PredictionType p = config_.prediction_type;
  if (p == PredictionType::epsilon) {
    return (sample - std::pow(beta_prod_t, 0.5f) * model_output) / std::pow(alpha_prod_t, 0.5f);
  }
  if (p == PredictionType::sample) return model_output;
  return std::pow(alpha_prod_t, 0.5f) * sample - std::pow(beta_prod_t, 0.5f) * model_output;  // v_prediction
}

// ------------------------------------------------------------------ DDPM

DDPMScheduler::DDPMScheduler(SchedulerConfig config) : NoiseScheduler(std::move(config)) {
}

void DDPMScheduler::set_timesteps(int64_t n) {
  timesteps_ = spaced_timesteps(config_.timestep_spacing, config_.num_train_timesteps, n, config_.steps_offset);
  num_inference_steps_ = n;
}

int64_t DDPMScheduler::previous_timestep(int64_t t) const {
  if (num_inference_steps_ == 0) return t - 1;
  const auto* ts = timesteps_.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < timesteps_.numel(); ++i) {
    if (ts[i] == t) return i + 1 < timesteps_.numel() ? ts[i + 1] : -1;
  }
  ZD_THROW("DDPMScheduler.step: timestep ", t, " is not one of the inference timesteps ", timesteps_.sizes());
}

SchedulerStepOutput DDPMScheduler::step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                                        const SchedulerStepOptions& options) {
  const auto t = static_cast<int64_t>(timestep);
  ZD_CHECK(t >= 0 && t < config_.num_train_timesteps, "DDPMScheduler.step: timestep ", timestep, " out of [0, ",
           config_.num_train_timesteps, ")");
  const int64_t prev_t = previous_timestep(t);
  const float alpha_prod_t = at_index(alphas_cumprod_, t);
  const float alpha_prod_t_prev = prev_t >= 0 ? at_index(alphas_cumprod_, prev_t) : 1.0f;
  const float beta_prod_t = 1.0f - alpha_prod_t;
  const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
  const float current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
  const float current_beta_t = 1.0f - current_alpha_t;

  at::Tensor x0 = predict_original(model_output, sample, alpha_prod_t);
  if (config_.clip_sample) x0 = x0.clamp(-config_.clip_sample_range, config_.clip_sample_range);
  const float x0_coeff = (std::pow(alpha_prod_t_prev, 0.5f) * current_beta_t) / beta_prod_t;
  const float sample_coeff = std::pow(current_alpha_t, 0.5f) * beta_prod_t_prev / beta_prod_t;
  at::Tensor prev = x0_coeff * x0 + sample_coeff * sample;

  if (t > 0) {
    const at::Tensor noise = draw_noise(model_output, options);
    float variance = std::max(beta_prod_t_prev / beta_prod_t * current_beta_t, 1e-20f);
    float scale = 0;
    if (config_.variance_type == VarianceType::fixed_small) {
      scale = std::pow(variance, 0.5f);
    } else if (config_.variance_type == VarianceType::fixed_small_log) {
      scale = std::exp(0.5f * std::log(variance));
    } else {  // fixed_large
      scale = std::pow(current_beta_t, 0.5f);
    }
    prev = prev + scale * noise;
  }
  return {prev, x0};
}

// ------------------------------------------------------------------ DDIM

DDIMScheduler::DDIMScheduler(SchedulerConfig config) : NoiseScheduler(std::move(config)) {
  final_alpha_cumprod_ = config_.set_alpha_to_one ? 1.0f : at_index(alphas_cumprod_, 0);
}

void DDIMScheduler::set_timesteps(int64_t n) {
  timesteps_ = spaced_timesteps(config_.timestep_spacing, config_.num_train_timesteps, n, config_.steps_offset);
  num_inference_steps_ = n;
}

SchedulerStepOutput DDIMScheduler::step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                                        const SchedulerStepOptions& options) {
  ZD_CHECK(num_inference_steps_ > 0, "DDIMScheduler.step: call set_timesteps first");
  const auto t = static_cast<int64_t>(timestep);
  ZD_CHECK(t >= 0 && t < config_.num_train_timesteps, "DDIMScheduler.step: timestep ", timestep, " out of [0, ",
           config_.num_train_timesteps, ")");
  const int64_t prev_t = t - config_.num_train_timesteps / num_inference_steps_;
  const float alpha_prod_t = at_index(alphas_cumprod_, t);
  const float alpha_prod_t_prev = prev_t >= 0 ? at_index(alphas_cumprod_, prev_t) : final_alpha_cumprod_;
  const float beta_prod_t = 1.0f - alpha_prod_t;

  at::Tensor x0, eps;
  const PredictionType p = config_.prediction_type;
  if (p == PredictionType::epsilon) {
    x0 = (sample - std::pow(beta_prod_t, 0.5f) * model_output) / std::pow(alpha_prod_t, 0.5f);
    eps = model_output;
  } else if (p == PredictionType::sample) {
    x0 = model_output;
    eps = (sample - std::pow(alpha_prod_t, 0.5f) * x0) / std::pow(beta_prod_t, 0.5f);
  } else {
    x0 = std::pow(alpha_prod_t, 0.5f) * sample - std::pow(beta_prod_t, 0.5f) * model_output;
    eps = std::pow(alpha_prod_t, 0.5f) * model_output + std::pow(beta_prod_t, 0.5f) * sample;
  }
  if (config_.clip_sample) x0 = x0.clamp(-config_.clip_sample_range, config_.clip_sample_range);

  const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
  const float variance = (beta_prod_t_prev / beta_prod_t) * (1.0f - alpha_prod_t / alpha_prod_t_prev);
  const float std_dev_t = static_cast<float>(options.eta) * std::pow(variance, 0.5f);
  if (options.use_clipped_model_output) {
    eps = (sample - std::pow(alpha_prod_t, 0.5f) * x0) / std::pow(beta_prod_t, 0.5f);
  }
  const at::Tensor direction = std::pow(1.0f - alpha_prod_t_prev - std_dev_t * std_dev_t, 0.5f) * eps;
  at::Tensor prev = std::pow(alpha_prod_t_prev, 0.5f) * x0 + direction;
  if (options.eta > 0) prev = prev + std_dev_t * draw_noise(model_output, options);
  return {prev, x0};
}

// ------------------------------------------------------------------ Euler discrete

EulerDiscreteScheduler::EulerDiscreteScheduler(SchedulerConfig config) : NoiseScheduler(std::move(config)) {
  if (config_.use_karras_sigmas) throw NotImplementedError("EulerDiscreteScheduler: use_karras_sigmas=true is not supported");
  if (config_.interpolation_type != "linear") {
    throw NotImplementedError(zerodiff::str("EulerDiscreteScheduler: interpolation_type '", config_.interpolation_type,
                                            "' is not supported (linear)"));
  }
  if (config_.timestep_type != "discrete") {
    throw NotImplementedError(zerodiff::str("EulerDiscreteScheduler: timestep_type '", config_.timestep_type,
                                            "' is not supported (discrete)"));
  }
  if (config_.rescale_betas_zero_snr) {
    // Close to 0 without being 0 so the first sigma is not inf (FP16 smallest positive subnormal).
    alphas_cumprod_[-1] = std::pow(2.0, -24);
  }
  const at::Tensor sig = ((1.0 - alphas_cumprod_) / alphas_cumprod_).pow(0.5).flip(0);
  sigmas_ = at::cat({sig, at::zeros({1}, sig.options())});
  timesteps_ = at::tensor(np_linspace(0, static_cast<double>(config_.num_train_timesteps - 1), config_.num_train_timesteps),
                          at::TensorOptions().dtype(at::kDouble))
                   .to(at::kFloat)
                   .flip(0);
}

void EulerDiscreteScheduler::set_timesteps(int64_t n) {
  const int64_t T = config_.num_train_timesteps;
  check_steps(n, T);
  std::vector<float> ts;
  const TimestepSpacing spacing = config_.timestep_spacing;
  if (spacing == TimestepSpacing::linspace) {
    for (double v : np_linspace(0.0, static_cast<double>(T - 1), n)) ts.push_back(static_cast<float>(v));
    std::reverse(ts.begin(), ts.end());
  } else if (spacing == TimestepSpacing::leading) {
    const int64_t ratio = T / n;
    for (int64_t i = n - 1; i >= 0; --i) ts.push_back(static_cast<float>(i * ratio) + static_cast<float>(config_.steps_offset));
  } else {  // trailing
    const double ratio = static_cast<double>(T) / static_cast<double>(n);
    const auto count = static_cast<int64_t>(std::ceil(static_cast<double>(T) / ratio));
    for (int64_t i = 0; i < count; ++i) {
      ts.push_back(static_cast<float>(np_round(static_cast<double>(T) + static_cast<double>(i) * -ratio)) - 1.0f);
    }
  }
  // sigmas of the training schedule (float32), linearly interpolated at the timesteps in float64 (np.interp).
  const at::Tensor train_sigmas = ((1.0 - alphas_cumprod_) / alphas_cumprod_).pow(0.5).contiguous();
  const float* s = train_sigmas.const_data_ptr<float>();
  const int64_t len = train_sigmas.numel();
  std::vector<float> sig;
  for (float t : ts) {
    const double x = t;
    double v;
    if (x <= 0) {
      v = s[0];
    } else if (x >= static_cast<double>(len - 1)) {
      v = s[len - 1];
    } else {
      const auto j = static_cast<int64_t>(std::floor(x));
      const double slope = static_cast<double>(s[j + 1]) - static_cast<double>(s[j]);
      v = slope * (x - static_cast<double>(j)) + static_cast<double>(s[j]);
    }
    sig.push_back(static_cast<float>(v));
  }
  float last = 0.0f;
  if (config_.final_sigmas_type == FinalSigmasType::sigma_min) {
    last = std::pow((1.0f - at_index(alphas_cumprod_, 0)) / at_index(alphas_cumprod_, 0), 0.5f);
  }
  sig.push_back(last);
  sigmas_ = at::tensor(sig, at::TensorOptions().dtype(at::kFloat));
  timesteps_ = at::tensor(ts, at::TensorOptions().dtype(at::kFloat));
  num_inference_steps_ = n;
  step_index_.reset();
  begin_index_.reset();
}

void EulerDiscreteScheduler::set_begin_index(int64_t index) {
  ZD_CHECK(index >= 0 && index < timesteps_.numel(), "EulerDiscreteScheduler.set_begin_index: ", index,
           " out of [0, ", timesteps_.numel(), ")");
  begin_index_ = index;
  step_index_.reset();
}

void EulerDiscreteScheduler::init_step_index(double timestep) {
  if (!step_index_) step_index_ = begin_index_ ? *begin_index_ : index_for_timestep(timestep);
}

double EulerDiscreteScheduler::init_noise_sigma() const {
  const float max_sigma = sigmas_.max().item<float>();
  if (config_.timestep_spacing != TimestepSpacing::leading) return max_sigma;  // linspace, trailing
  return std::pow(max_sigma * max_sigma + 1.0f, 0.5f);
}

int64_t EulerDiscreteScheduler::index_for_timestep(double timestep) const {
  std::vector<int64_t> hits;
  const at::Tensor ts = timesteps_.to(at::kDouble).contiguous();
  const double* p = ts.const_data_ptr<double>();
  for (int64_t i = 0; i < ts.numel(); ++i) {
    if (p[i] == static_cast<double>(static_cast<float>(timestep))) hits.push_back(i);
  }
  ZD_CHECK(!hits.empty(), "EulerDiscreteScheduler: timestep ", timestep, " is not one of the scheduler's timesteps");
  // As diffusers: with duplicates (image-to-image starting mid-schedule) the first step takes the second.
  return hits.size() > 1 ? hits[1] : hits[0];
}

at::Tensor EulerDiscreteScheduler::scale_model_input(const at::Tensor& sample, double timestep) {
  init_step_index(timestep);
  const float sigma = at_index(sigmas_, *step_index_);
  return sample / std::pow(sigma * sigma + 1.0f, 0.5f);
}

SchedulerStepOutput EulerDiscreteScheduler::step(const at::Tensor& model_output, double timestep,
                                                 const at::Tensor& sample, const SchedulerStepOptions& options) {
  init_step_index(timestep);
  ZD_CHECK(*step_index_ + 1 < sigmas_.numel(), "EulerDiscreteScheduler.step: past the last step (",
           num_inference_steps_, " steps)");
  const at::Tensor x = sample.to(at::kFloat);
  const float sigma = at_index(sigmas_, *step_index_);
  const float sigma_hat = sigma;  // s_churn = 0: gamma = 0
  at::Tensor x0;
  const PredictionType p = config_.prediction_type;
  if (p == PredictionType::epsilon) {
    x0 = x - sigma_hat * model_output;
  } else if (p == PredictionType::v_prediction) {
    x0 = model_output * (-sigma / std::pow(sigma * sigma + 1.0f, 0.5f)) + (x / (sigma * sigma + 1.0f));
  } else {
    x0 = model_output;
  }
  const at::Tensor derivative = (x - x0) / sigma_hat;
  const float dt = at_index(sigmas_, *step_index_ + 1) - sigma_hat;
  const at::Tensor prev = (x + derivative * dt).to(model_output.scalar_type());
  *step_index_ += 1;
  return {prev, x0};
}

}  // namespace zerodiff::models
