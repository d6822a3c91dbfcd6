#include "zerodiff/kernels/NonFinite.h"

#include <ATen/ATen.h>

#include "zerodiff/core/BuildConfig.h"
#include "zerodiff/core/Error.h"

#if ZERODIFF_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../../kernels/cuda/nonfinite.h"
#endif

namespace zerodiff::kernels {

at::Tensor count_nonfinite(const at::Tensor& t) {
  ZD_CHECK(t.defined(), "count_nonfinite: undefined tensor");
  const auto dtype = t.scalar_type();
  ZD_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
           "count_nonfinite: expected a float32/float64/float16/bfloat16 tensor, got ", dtype);
  if (t.device().is_cpu()) {
    return at::scalar_tensor(count_nonfinite_cpu(t), at::TensorOptions().dtype(at::kLong));
  }
#if ZERODIFF_CUDA
  ZD_CHECK(t.device().is_cuda(), "count_nonfinite: unsupported device ", t.device());
  const c10::cuda::CUDAGuard guard(t.device());
  const at::Tensor c = t.contiguous();
  at::Tensor out = at::empty({}, c.options().dtype(at::kLong));
  cuda::NonFiniteParams p;
  p.data = c.const_data_ptr();
  p.n = c.numel();
  p.dtype = dtype == at::kFloat    ? cuda::NonFiniteDtype::kFloat32
            : dtype == at::kDouble ? cuda::NonFiniteDtype::kFloat64
            : dtype == at::kHalf   ? cuda::NonFiniteDtype::kFloat16
                                   : cuda::NonFiniteDtype::kBFloat16;
  p.out = reinterpret_cast<unsigned long long*>(out.data_ptr<int64_t>());
  p.stream = c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
  const cudaError_t err = cuda::count_nonfinite(p);
  ZD_CHECK(err == cudaSuccess, "count_nonfinite: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
#else
  throw NotImplementedError(zerodiff::str("count_nonfinite: tensor is on ", t.device(),
                                " but this zerodiff build has no CUDA kernels (ZERODIFF_WITH_CUDA=OFF "
                                "or no nvcc at build time)"));
#endif
}

}  // namespace zerodiff::kernels
