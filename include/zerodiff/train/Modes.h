// zerodiff/train/Modes.h — the run's modes as enums with one name table each (core/Enum.h): parsed once by the
// config reader (trainer.precision, trainer.accelerator, trainer.optimizer.implementation, task), listed by
// --print-config-reference and docs/configuration.md from the same table, and taken as typed options below.
// Names follow PyTorch Lightning (precision "32-true", "16-mixed", "bf16-mixed", "bf16-true"; accelerator).
#pragma once

#include <c10/core/ScalarType.h>

#include <span>

#include "zerodiff/core/Enum.h"

namespace zerodiff::train {

/// Numeric precision of a run (Lightning's names; TrainerConfig::precision documents each).
enum class Precision { fp32, fp16_mixed, bf16_mixed, bf16_true };
inline constexpr EnumName<Precision> kPrecisionNames[] = {{Precision::fp32, "32-true"},
                                                          {Precision::fp16_mixed, "16-mixed"},
                                                          {Precision::bf16_mixed, "bf16-mixed"},
                                                          {Precision::bf16_true, "bf16-true"}};
constexpr std::span<const EnumName<Precision>> enum_names(Precision) { return kPrecisionNames; }

/// The dtype the forward runs in under `precision` (autocast's target): float32, float16, or bfloat16 (both bf16
/// modes).
constexpr c10::ScalarType compute_dtype(Precision precision) {
  switch (precision) {
    case Precision::fp16_mixed: return c10::ScalarType::Half;
    case Precision::bf16_mixed:
    case Precision::bf16_true: return c10::ScalarType::BFloat16;
    case Precision::fp32: break;
  }
  return c10::ScalarType::Float;
}

/// The dtype of the weights AdamW updates: bfloat16 under bf16-true (no float32 master copy), float32 otherwise.
constexpr c10::ScalarType master_dtype(Precision precision) {
  return precision == Precision::bf16_true ? c10::ScalarType::BFloat16 : c10::ScalarType::Float;
}

/// Which AdamW implementation updates the weights (trainer.optimizer.implementation).
enum class AdamImplementation { automatic, torch, hybrid_adam };
inline constexpr EnumName<AdamImplementation> kAdamImplementationNames[] = {
    {AdamImplementation::automatic, "auto"}, {AdamImplementation::torch, "torch"},
    {AdamImplementation::hybrid_adam, "hybrid_adam"}};
constexpr std::span<const EnumName<AdamImplementation>> enum_names(AdamImplementation) {
  return kAdamImplementationNames;
}

/// The device family a run asks for (trainer.accelerator; zerodiff-sample --device): auto = CUDA when available.
enum class Accelerator { automatic, cpu, cuda };
inline constexpr EnumName<Accelerator> kAcceleratorNames[] = {
    {Accelerator::automatic, "auto"}, {Accelerator::cpu, "cpu"}, {Accelerator::cuda, "cuda"}};
constexpr std::span<const EnumName<Accelerator>> enum_names(Accelerator) { return kAcceleratorNames; }

/// What a run trains (the run config's `task`): a latent diffusion model, or its VAE.
enum class Task { text_to_image, autoencoder };
inline constexpr EnumName<Task> kTaskNames[] = {{Task::text_to_image, "text_to_image"},
                                                {Task::autoencoder, "autoencoder"}};
constexpr std::span<const EnumName<Task>> enum_names(Task) { return kTaskNames; }

}  // namespace zerodiff::train
