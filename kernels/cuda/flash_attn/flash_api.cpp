// kernels/cuda/flash_attn/flash_api.cpp — the CUDA flash-attention entry points of zerodiff/kernels/FlashAttention.h:
// checks every tensor (defined, CUDA, one device, rank, shape, dtype) and names the one at fault, fills the plain
// FlashParams of flash.h (pointers, strides in elements, sizes, scale) and calls the instantiation of the
// (dtype, head-dim bucket) at hand. Reference for the tests: zerodiff::nn::attention_math.
//
// Design rules: compiled by the host C++ compiler like the rest of the library (ATen and autograd never enter an
// nvcc translation unit; the .cu files see only flash.h), and only in builds with CUDA kernels —
// flash_api_nocuda.cpp stands in otherwise. Inputs are read through their strides; only a strided last dim is
// copied (contiguous()). Outputs are allocated contiguous. Everything runs on the current stream of q's device.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "flash.h"
#include "kernels/common/flash_attention_shared.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/FlashAttention.h"

namespace zerodiff::kernels {
namespace {

namespace fl = cuda::flash;

static_assert(fl::head_dim_bucket(1) == flash_attention_cuda_head_dim_bucket(1) &&
                  fl::head_dim_bucket(64) == flash_attention_cuda_head_dim_bucket(64) &&
                  fl::head_dim_bucket(65) == flash_attention_cuda_head_dim_bucket(65) &&
                  fl::head_dim_bucket(128) == flash_attention_cuda_head_dim_bucket(128) &&
                  fl::head_dim_bucket(129) == flash_attention_cuda_head_dim_bucket(129) &&
                  fl::head_dim_bucket(256) == flash_attention_cuda_head_dim_bucket(256),
              "the public bucket function and the kernels' must agree");

// Shape / dtype / device checks shared by both passes (kernels/common), plus the kernels' 32-bit size limits and
// the architecture. Returns the dtype (float16 or bfloat16).
at::ScalarType check_qkv(const char* fn, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         double scale) {
  const at::ScalarType dt = flash_shared::check_qkv(fn, q, k, v, scale, c10::DeviceType::CUDA,
                                                    {at::kHalf, at::kBFloat16}, "float16 or bfloat16");
  ZD_CHECK(q.size(2) < INT_MAX && k.size(2) < INT_MAX && q.size(0) * q.size(1) < INT_MAX, fn,
           ": sizes beyond the kernels' 32-bit limits (Nq, Nkv and B·H below 2^31): q ", q.sizes(), ", k ",
           k.sizes());
  const cudaDeviceProp* props = at::cuda::getDeviceProperties(q.device().index());
  ZD_CHECK(props->major >= 8, fn, ": needs a GPU of compute capability 8.0 or newer, ", q.device(), " (",
           props->name, ") is ", props->major, ".", props->minor);
  return dt;
}

// The kernels read rows with unit stride along D; a strided last dim is copied (documented in the header).
at::Tensor unit_last(const at::Tensor& t) { return t.size(3) == 1 || t.stride(3) == 1 ? t : t.contiguous(); }

// 16-byte vector access: aligned start, and D and every stride that is used (size > 1) multiples of 8 elements.
bool vec16(const at::Tensor& t) {
  if (t.size(3) % 8 != 0) return false;
  if (reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 != 0) return false;
  for (int i = 0; i < 3; ++i) {
    if (t.size(i) > 1 && t.stride(i) % 8 != 0) return false;
  }
  return true;
}

void strides(const at::Tensor& t, int64_t& batch, int64_t& head, int64_t& row) {
  batch = t.stride(0);
  head = t.stride(1);
  row = t.stride(2);
}

// The fields both passes share: q, k, v, sizes, scale, dtype, stream.
fl::FlashParams base_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::ScalarType dt,
                            double scale) {
  fl::FlashParams p;
  p.q = q.const_data_ptr();
  p.k = k.const_data_ptr();
  p.v = v.const_data_ptr();
  strides(q, p.q_batch_stride, p.q_head_stride, p.q_row_stride);
  strides(k, p.k_batch_stride, p.k_head_stride, p.k_row_stride);
  strides(v, p.v_batch_stride, p.v_head_stride, p.v_row_stride);
  p.q_vec = vec16(q);
  p.k_vec = vec16(k);
  p.v_vec = vec16(v);
  p.batch = static_cast<int>(q.size(0));
  p.heads = static_cast<int>(q.size(1));
  p.seqlen_q = static_cast<int>(q.size(2));
  p.seqlen_k = static_cast<int>(k.size(2));
  p.head_dim = static_cast<int>(q.size(3));
  p.scale = static_cast<float>(scale);
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);  // log2(e)
  p.dtype = dt == at::kBFloat16 ? fl::FlashDtype::kBFloat16 : fl::FlashDtype::kFloat16;
  p.stream = at::cuda::getCurrentCUDAStream(q.device().index()).stream();
  return p;
}

void check_grid(const char* fn, int64_t blocks, const at::Tensor& q, const at::Tensor& k) {
  ZD_CHECK(blocks <= INT_MAX, fn, ": ", blocks, " thread blocks exceed one launch's 2^31 - 1 (q ", q.sizes(), ", k ",
           k.sizes(), ")");
}

void run_fwd(const fl::FlashParams& p) {
  const bool bf16 = p.dtype == fl::FlashDtype::kBFloat16;
  switch (fl::head_dim_bucket(p.head_dim)) {
    case 64:
      return bf16 ? fl::run_flash_fwd<fl::FlashDtype::kBFloat16, 64>(p) : fl::run_flash_fwd<fl::FlashDtype::kFloat16, 64>(p);
    case 128:
      return bf16 ? fl::run_flash_fwd<fl::FlashDtype::kBFloat16, 128>(p)
                  : fl::run_flash_fwd<fl::FlashDtype::kFloat16, 128>(p);
    default:
      return bf16 ? fl::run_flash_fwd<fl::FlashDtype::kBFloat16, 256>(p)
                  : fl::run_flash_fwd<fl::FlashDtype::kFloat16, 256>(p);
  }
}

void run_bwd(const fl::FlashParams& p) {
  const bool bf16 = p.dtype == fl::FlashDtype::kBFloat16;
  switch (fl::head_dim_bucket(p.head_dim)) {
    case 64:
      return bf16 ? fl::run_flash_bwd<fl::FlashDtype::kBFloat16, 64>(p) : fl::run_flash_bwd<fl::FlashDtype::kFloat16, 64>(p);
    case 128:
      return bf16 ? fl::run_flash_bwd<fl::FlashDtype::kBFloat16, 128>(p)
                  : fl::run_flash_bwd<fl::FlashDtype::kFloat16, 128>(p);
    default:
      return bf16 ? fl::run_flash_bwd<fl::FlashDtype::kBFloat16, 256>(p)
                  : fl::run_flash_bwd<fl::FlashDtype::kFloat16, 256>(p);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> flash_attention_forward_cuda(const at::Tensor& q, const at::Tensor& k,
                                                                const at::Tensor& v, double scale) {
  constexpr const char* fn = "flash_attention_forward_cuda";
  const at::ScalarType dt = check_qkv(fn, q, k, v, scale);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), D = q.size(3);
  at::Tensor out = at::empty({B, H, Nq, D}, q.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor lse = at::empty({B, H, Nq}, q.options().dtype(at::kFloat));
  if (out.numel() == 0) return {out, lse};
  const int64_t bm = fl::fwd_block_m(static_cast<int>(D));
  check_grid(fn, (Nq + bm - 1) / bm * B * H, q, k);

  const at::Tensor qc = unit_last(q), kc = unit_last(k), vc = unit_last(v);
  fl::FlashParams p = base_params(qc, kc, vc, dt, scale);
  p.o = out.data_ptr();
  strides(out, p.o_batch_stride, p.o_head_stride, p.o_row_stride);
  p.o_vec = vec16(out);
  p.lse = lse.data_ptr<float>();
  run_fwd(p);
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attention_backward_cuda(const at::Tensor& dout,
                                                                             const at::Tensor& q, const at::Tensor& k,
                                                                             const at::Tensor& v, const at::Tensor& out,
                                                                             const at::Tensor& lse, double scale) {
  constexpr const char* fn = "flash_attention_backward_cuda";
  const at::ScalarType dt = check_qkv(fn, q, k, v, scale);
  flash_shared::check_backward_extras(fn, dout, q, out, lse, dt);

  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Nkv = k.size(2), D = q.size(3);
  const auto contiguous = at::MemoryFormat::Contiguous;
  at::Tensor dq = at::empty({B, H, Nq, D}, q.options().memory_format(contiguous));
  at::Tensor dk = at::empty({B, H, Nkv, D}, k.options().memory_format(contiguous));
  at::Tensor dv = at::empty({B, H, Nkv, D}, v.options().memory_format(contiguous));
  if (B * H == 0) return {dq, dk, dv};
  if (Nq == 0) return {dq, dk.zero_(), dv.zero_()};

  const int64_t bn = fl::bwd_block_n(static_cast<int>(D)), bm = fl::bwd_block_m(static_cast<int>(D));
  const int64_t n_blocks = (Nkv + bn - 1) / bn, m_blocks = (Nq + bm - 1) / bm;
  const int sms = at::cuda::getDeviceProperties(q.device().index())->multiProcessorCount;
  const int splits = fl::bwd_splits(n_blocks, B * H, m_blocks, sms);
  check_grid(fn, n_blocks * splits * B * H, q, k);
  check_grid(fn, (B * H * Nq + 7) / 8, q, k);

  const auto f32 = q.options().dtype(at::kFloat).memory_format(contiguous);
  at::Tensor dq_accum = at::zeros({B, H, Nq, D}, f32);
  at::Tensor dsum = at::empty({B, H, Nq}, f32);
  at::Tensor dk_accum, dv_accum;
  if (splits > 1) {
    dk_accum = at::zeros({B, H, Nkv, D}, f32);
    dv_accum = at::zeros({B, H, Nkv, D}, f32);
  }
  const at::Tensor qc = unit_last(q), kc = unit_last(k), vc = unit_last(v);
  const at::Tensor doc = unit_last(dout), oc = unit_last(out), lsec = lse.contiguous();

  fl::FlashParams p = base_params(qc, kc, vc, dt, scale);
  p.o = const_cast<void*>(oc.const_data_ptr());  // read only in the backward pass
  strides(oc, p.o_batch_stride, p.o_head_stride, p.o_row_stride);
  p.o_vec = vec16(oc);
  p.lse = const_cast<float*>(lsec.const_data_ptr<float>());  // read only
  p.dout = doc.const_data_ptr();
  strides(doc, p.do_batch_stride, p.do_head_stride, p.do_row_stride);
  p.do_vec = vec16(doc);
  p.dq = dq.data_ptr();
  strides(dq, p.dq_batch_stride, p.dq_head_stride, p.dq_row_stride);
  p.dk = dk.data_ptr();
  strides(dk, p.dk_batch_stride, p.dk_head_stride, p.dk_row_stride);
  p.dk_vec = vec16(dk);
  p.dv = dv.data_ptr();
  strides(dv, p.dv_batch_stride, p.dv_head_stride, p.dv_row_stride);
  p.dv_vec = vec16(dv);
  p.dq_accum = dq_accum.data_ptr<float>();
  p.dsum = dsum.data_ptr<float>();
  p.splits = splits;
  if (splits > 1) {
    p.dk_accum = dk_accum.data_ptr<float>();
    p.dv_accum = dv_accum.data_ptr<float>();
  }
  run_bwd(p);
  dq.copy_(dq_accum);
  if (splits > 1) {
    dk.copy_(dk_accum);
    dv.copy_(dv_accum);
  }
  return {dq, dk, dv};
}

at::Tensor flash_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  using Function = flash_shared::FlashAttentionFunction<&flash_attention_forward_cuda, &flash_attention_backward_cuda>;
  return Function::apply(q, k, v, scale);
}

std::string flash_attention_cuda_unsupported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (!q.defined() || !k.defined() || !v.defined() || q.dim() != 4 || k.dim() != 4 || v.dim() != 4) {
    return "it takes defined 4-d q, k and v [B, H, N, D]";
  }
  if (!q.device().is_cuda() || !k.device().is_cuda() || !v.device().is_cuda()) {
    return zerodiff::str("it needs CUDA tensors (q on ", q.device(), ", k on ", k.device(), ", v on ", v.device(),
                         ")");
  }
  const at::ScalarType dt = q.scalar_type();
  if (dt != at::kHalf && dt != at::kBFloat16) {
    return zerodiff::str("on CUDA it takes float16 or bfloat16 inputs (got ", dt, ")");
  }
  if (k.scalar_type() != dt || v.scalar_type() != dt) {
    return zerodiff::str("q, k and v have different dtypes (", dt, ", ", k.scalar_type(), ", ", v.scalar_type(),
                         ")");
  }
  if (v.size(3) != q.size(3)) {
    return zerodiff::str("value head dim ", v.size(3), " differs from the query head dim ", q.size(3));
  }
  if (q.size(3) < 1 || q.size(3) > 256) return zerodiff::str("head dim ", q.size(3), " is outside 1..256");
  if (k.size(2) == 0) return "there are no keys";
  const cudaDeviceProp* props = at::cuda::getDeviceProperties(q.device().index());
  if (props->major < 8) {
    return zerodiff::str("it needs compute capability 8.0 or newer (", q.device(), ", ", props->name, ", is ",
                         props->major, ".", props->minor, ")");
  }
  return {};
}

}  // namespace zerodiff::kernels
