// zerodiff/models/schedulers/NoiseScheduler.h — the noise-scheduler interface and the beta schedules
// shared by DDPM, DDIM and Euler discrete. Numerics follow diffusers 0.42 (schedulers/scheduling_ddpm.py,
// scheduling_ddim.py, scheduling_euler_discrete.py): betas, alphas_cumprod and sigmas in float32 exactly as
// the reference computes them, so that trained models and samplers behave identically.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "zerodiff/core/Enum.h"

namespace zerodiff::models {

/// What the denoiser predicts (diffusers' prediction_type): the noise, the velocity v = alpha_t * noise -
/// sigma_t * x0 (Salimans & Ho 2022), or x0 itself.
enum class PredictionType { epsilon, v_prediction, sample };
inline constexpr EnumName<PredictionType> kPredictionTypeNames[] = {{PredictionType::epsilon, "epsilon"},
                                                                    {PredictionType::v_prediction, "v_prediction"},
                                                                    {PredictionType::sample, "sample"}};
constexpr std::span<const EnumName<PredictionType>> enum_names(PredictionType) { return kPredictionTypeNames; }

/// The scheduler classes zerodiff implements, named as diffusers' "_class_name" (aliases: ddpm, ddim, euler).
enum class SchedulerKind { ddpm, ddim, euler_discrete };
inline constexpr EnumName<SchedulerKind> kSchedulerKindNames[] = {
    {SchedulerKind::ddpm, "DDPMScheduler"}, {SchedulerKind::ddim, "DDIMScheduler"},
    {SchedulerKind::euler_discrete, "EulerDiscreteScheduler"}, {SchedulerKind::ddpm, "ddpm"},
    {SchedulerKind::ddim, "ddim"}, {SchedulerKind::euler_discrete, "euler"}};
constexpr std::span<const EnumName<SchedulerKind>> enum_names(SchedulerKind) { return kSchedulerKindNames; }

/// How betas are laid out over the training timesteps (diffusers' beta_schedule; trained_betas overrides it).
enum class BetaSchedule { linear, scaled_linear, squaredcos_cap_v2 };
inline constexpr EnumName<BetaSchedule> kBetaScheduleNames[] = {{BetaSchedule::linear, "linear"},
                                                                {BetaSchedule::scaled_linear, "scaled_linear"},
                                                                {BetaSchedule::squaredcos_cap_v2, "squaredcos_cap_v2"}};
constexpr std::span<const EnumName<BetaSchedule>> enum_names(BetaSchedule) { return kBetaScheduleNames; }

/// How set_timesteps spaces the inference timesteps (diffusers' timestep_spacing; Lin et al. 2023, Table 2).
enum class TimestepSpacing { leading, trailing, linspace };
inline constexpr EnumName<TimestepSpacing> kTimestepSpacingNames[] = {{TimestepSpacing::leading, "leading"},
                                                                      {TimestepSpacing::trailing, "trailing"},
                                                                      {TimestepSpacing::linspace, "linspace"}};
constexpr std::span<const EnumName<TimestepSpacing>> enum_names(TimestepSpacing) { return kTimestepSpacingNames; }

/// DDPM's posterior variance (diffusers' variance_type; the learned kinds are not supported).
enum class VarianceType { fixed_small, fixed_small_log, fixed_large };
inline constexpr EnumName<VarianceType> kVarianceTypeNames[] = {{VarianceType::fixed_small, "fixed_small"},
                                                                {VarianceType::fixed_small_log, "fixed_small_log"},
                                                                {VarianceType::fixed_large, "fixed_large"}};
constexpr std::span<const EnumName<VarianceType>> enum_names(VarianceType) { return kVarianceTypeNames; }

/// Euler's last sigma: 0, or the training schedule's smallest (diffusers' final_sigmas_type).
enum class FinalSigmasType { zero, sigma_min };
inline constexpr EnumName<FinalSigmasType> kFinalSigmasTypeNames[] = {{FinalSigmasType::zero, "zero"},
                                                                      {FinalSigmasType::sigma_min, "sigma_min"}};
constexpr std::span<const EnumName<FinalSigmasType>> enum_names(FinalSigmasType) { return kFinalSigmasTypeNames; }

/// Every scheduler_config.json field zerodiff's schedulers read. Defaults are DDPM's; `defaults_for`
/// gives each class's own defaults. Values outside the supported set throw from the constructors.
struct SchedulerConfig {
  SchedulerKind class_name = SchedulerKind::ddpm;  ///< "_class_name"
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::linear;
  std::vector<double> trained_betas;          ///< overrides beta_schedule when non-empty
  PredictionType prediction_type = PredictionType::epsilon;
  VarianceType variance_type = VarianceType::fixed_small;  ///< DDPM
  bool clip_sample = true;                    ///< DDPM/DDIM: clamp the predicted x0
  double clip_sample_range = 1.0;
  bool set_alpha_to_one = true;               ///< DDIM: alpha_cumprod used past the last step
  int64_t steps_offset = 0;
  TimestepSpacing timestep_spacing = TimestepSpacing::leading;
  bool rescale_betas_zero_snr = false;        ///< Lin et al. 2023, "Common Diffusion Noise Schedules ..."
  bool thresholding = false;                  ///< dynamic thresholding (unsupported: throws when true)
  std::string interpolation_type = "linear";  ///< Euler: sigma interpolation (linear only)
  bool use_karras_sigmas = false;             ///< Euler (unsupported: throws when true)
  FinalSigmasType final_sigmas_type = FinalSigmasType::zero;  ///< Euler
  std::string timestep_type = "discrete";     ///< Euler (discrete only)

  /// Defaults of diffusers' class `kind`.
  static SchedulerConfig defaults_for(SchedulerKind kind);
  /// Defaults of the class named `class_name` (kSchedulerKindNames); throws NotImplementedError "scheduler 'X' is
  /// not supported (DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler)" for any other name.
  static SchedulerConfig defaults_for(const std::string& class_name);
  /// Reads a scheduler_config.json object over the class's defaults. Unknown keys are ignored only
  /// when they are diffusers bookkeeping ("_diffusers_version") or fields of other schedulers; a field
  /// with the wrong JSON type throws ConfigError naming it; so does an unknown name of a mode (beta_schedule,
  /// prediction_type, timestep_spacing, final_sigmas_type: "is not one of ..."), and a variance_type zerodiff does
  /// not implement throws NotImplementedError.
  static SchedulerConfig from_json(const nlohmann::json& json);
  /// The config as diffusers writes it (with "_class_name").
  nlohmann::json to_json() const;
};

/// Betas [T] float32 for `config` (beta_schedule or trained_betas, then the zero-terminal-SNR rescale
/// when enabled). Throws ConfigError when trained_betas does not have num_train_timesteps entries.
at::Tensor make_betas(const SchedulerConfig& config);

/// Rescales betas [T] so the final timestep has zero SNR (Lin et al. 2023, Algorithm 1), float32.
at::Tensor rescale_zero_terminal_snr(const at::Tensor& betas);

/// Inference timesteps [n] int64 for `spacing` over `num_train_timesteps`, as diffusers' set_timesteps.
at::Tensor spaced_timesteps(TimestepSpacing spacing, int64_t num_train_timesteps, int64_t n,
                            int64_t steps_offset);

/// Output of NoiseScheduler::step.
struct SchedulerStepOutput {
  at::Tensor prev_sample;           ///< x_{t-1}, same shape/dtype as the sample
  at::Tensor pred_original_sample;  ///< predicted x_0
};

/// Per-call options of NoiseScheduler::step.
struct SchedulerStepOptions {
  std::optional<at::Generator> generator;  ///< for the stochastic terms (DDPM variance, DDIM eta > 0)
  at::Tensor variance_noise;               ///< explicit noise instead of the generator (same shape as sample)
  double eta = 0.0;                        ///< DDIM: 0 = deterministic DDIM, 1 = DDPM-like
  bool use_clipped_model_output = false;   ///< DDIM
};

/// A diffusers-style noise scheduler: training-side forward process (add_noise, get_velocity) and
/// sampling-side reverse steps.
class NoiseScheduler {
 public:
  virtual ~NoiseScheduler() = default;

  const SchedulerConfig& config() const { return config_; }
  /// [T] float32.
  const at::Tensor& betas() const { return betas_; }
  /// [T] float32, cumulative product of 1 - betas.
  const at::Tensor& alphas_cumprod() const { return alphas_cumprod_; }
  /// Inference timesteps after set_timesteps ([n], int64 for DDPM/DDIM, float32 for Euler); before it,
  /// the training timesteps T-1 ... 0.
  const at::Tensor& timesteps() const { return timesteps_; }
  /// Number of inference steps set (0 before set_timesteps).
  int64_t num_inference_steps() const { return num_inference_steps_; }

  /// Chooses `n` inference timesteps. Throws zerodiff::Error when n < 1 or n > num_train_timesteps.
  virtual void set_timesteps(int64_t n) = 0;
  /// Standard deviation of the initial noise for sampling (1 for DDPM/DDIM, sigma_max-based for Euler).
  virtual double init_noise_sigma() const { return 1.0; }
  /// Scales the denoiser input at `timestep` (identity except for Euler). sample [B, C, H, W].
  virtual at::Tensor scale_model_input(const at::Tensor& sample, double timestep) { return sample; }
  /// One reverse step from `timestep`. model_output and sample [B, C, H, W].
  virtual SchedulerStepOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                                   const SchedulerStepOptions& options = {}) = 0;

  /// Forward process q(x_t | x_0): sqrt(ac[t]) * original + sqrt(1 - ac[t]) * noise.
  /// original/noise [B, ...], timesteps [B] int64 in [0, T). Computed in the sample's dtype and device.
  at::Tensor add_noise(const at::Tensor& original, const at::Tensor& noise, const at::Tensor& timesteps) const;
  /// v-prediction target: sqrt(ac[t]) * noise - sqrt(1 - ac[t]) * sample (Salimans & Ho 2022).
  at::Tensor get_velocity(const at::Tensor& sample, const at::Tensor& noise, const at::Tensor& timesteps) const;

  /// Builds the scheduler named by config.class_name. Throws NotImplementedError for other classes.
  static std::unique_ptr<NoiseScheduler> create(const SchedulerConfig& config);

 protected:
  explicit NoiseScheduler(SchedulerConfig config);
  /// Draws noise like diffusers' randn_tensor (CPU generator -> same values as PyTorch).
  static at::Tensor draw_noise(const at::Tensor& like, const SchedulerStepOptions& options);
  /// x0 from the model output for the configured prediction type (DDPM/DDIM formulas).
  at::Tensor predict_original(const at::Tensor& model_output, const at::Tensor& sample, float alpha_prod_t) const;

  SchedulerConfig config_;
  at::Tensor betas_, alphas_cumprod_, timesteps_;
  int64_t num_inference_steps_ = 0;
};

}  // namespace zerodiff::models
