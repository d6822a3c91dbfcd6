#include "zerodiff/core/BuildInfo.h"

#include <hwy/targets.h>
#include <torch/headeronly/version.h>

#include "zerodiff/core/BuildConfig.h"
#include "zerodiff/core/Error.h"

namespace zerodiff {

std::string version() { return ZERODIFF_VERSION_STRING; }

bool built_with_cuda() { return ZERODIFF_CUDA != 0; }

std::string simd_level() {
  const int64_t targets = hwy::SupportedTargets();
  // Highway orders targets so that better ones have lower bits; the lowest set bit is the best.
  const int64_t best = targets & -targets;
  return best ? hwy::TargetName(best) : "scalar";
}

std::string build_info() {
  std::string cuda = built_with_cuda()
                         ? str("CUDA on (archs ", ZERODIFF_CUDA_ARCHS, ", nvcc ", ZERODIFF_NVCC_VERSION, ")")
                         : std::string("CUDA off");
  return str("zerodiff ", version(), " | torch ", TORCH_VERSION_MAJOR, ".", TORCH_VERSION_MINOR, ".",
             TORCH_VERSION_PATCH, " | ", cuda, " | SIMD ", simd_level(), " | ", ZERODIFF_BUILD_TYPE, ", ",
             ZERODIFF_COMPILER);
}

}  // namespace zerodiff
