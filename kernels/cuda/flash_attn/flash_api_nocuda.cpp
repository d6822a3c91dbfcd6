// kernels/cuda/flash_attn/flash_api_nocuda.cpp — the CUDA flash-attention entry points of
// zerodiff/kernels/FlashAttention.h in a build without CUDA kernels (ZERODIFF_WITH_CUDA=OFF, or no nvcc at configure
// time): they exist, so that callers need no #if, and throw zerodiff::Error saying so. Compiled instead of
// flash_api.cpp and the .cu files (src/CMakeLists.txt).
#include <string>

#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/FlashAttention.h"

namespace zerodiff::kernels {
namespace {

constexpr const char* kWhy =
    "this zerodiff build was built without CUDA kernels (ZERODIFF_WITH_CUDA=OFF or no nvcc at configure time)";

[[noreturn]] void no_cuda(const char* fn) {
  throw Error(zerodiff::str(fn, ": ", kWhy, "; rebuild with CUDA, or use the CPU kernels or at::scaled_dot_product_attention"));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> flash_attention_forward_cuda(const at::Tensor&, const at::Tensor&,
                                                                const at::Tensor&, double) {
  no_cuda("flash_attention_forward_cuda");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attention_backward_cuda(const at::Tensor&, const at::Tensor&,
                                                                             const at::Tensor&, const at::Tensor&,
                                                                             const at::Tensor&, const at::Tensor&,
                                                                             double) {
  no_cuda("flash_attention_backward_cuda");
}

at::Tensor flash_attention_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, double) {
  no_cuda("flash_attention_cuda");
}

std::string flash_attention_cuda_unsupported(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  return kWhy;
}

}  // namespace zerodiff::kernels
