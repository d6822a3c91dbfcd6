// zerodiff/core/BuildInfo.h — what this build of zerodiff is made of, for `--version` and logs.
#pragma once

#include <string>

namespace zerodiff {

/// One line describing the build, e.g.
///   zerodiff 0.1.0 | torch 2.11.0 | CUDA on (archs 80;90, nvcc 13.0.48) | SIMD AVX2 | Release, GNU 12.2.0
/// The SIMD level is the best Highway target this CPU supports (runtime dispatch), not a compile flag.
std::string build_info();

/// The zerodiff version, "MAJOR.MINOR.PATCH".
std::string version();

/// True when the CUDA kernels were compiled into this build (ZERODIFF_WITH_CUDA resolved ON).
bool built_with_cuda();

/// Best SIMD target Highway selects on this CPU at run time ("AVX2", "AVX3" = AVX-512, "NEON", ...).
std::string simd_level();

}  // namespace zerodiff
