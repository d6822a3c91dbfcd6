// kernels/cuda/flash_attn/flash.h — plain parameters, per-head-dim tile configuration and entry points of the CUDA
// flash-attention kernels (forward and backward, float16 and bfloat16, sm_80 and newer). No ATen type crosses
// this header: the API file (flash_api.cpp, host compiler) checks the tensors and fills FlashParams; the .cu
// instantiation files hold the device code.
//
// Design note
// ===========
// Follows FlashAttention-2 (Dao 2023): Algorithm 1 forward (online softmax over key blocks, log-sum-exp saved per
// query row as float32), Algorithm 2 backward (P recomputed from lse, D_i = rowsum(dO ∘ O) in a small pre-kernel,
// dS = P ∘ (dP − D_i)). Our own code, not derived from flash-attention's sources.
//
//  * Tensor cores: inline PTX mma.sync.m16n8k16 (float16 or bfloat16 inputs, float32 accumulators), operands
//    loaded from shared memory with ldmatrix (.trans where the operand is stored k-major). The score tile of a
//    warp stays in registers: an m16n8 accumulator pair has exactly the register layout of an m16k16 A operand,
//    so P (and dS) feed the next MMA without a trip through shared memory in the forward pass.
//  * Head-dim buckets: D is rounded up to 64, 128 or 256 (40 → 64, 80 → 128, 160 → 256, as FlashAttention-2
//    rounds). Columns D..bucket are zero-filled on load and never stored; the MMAs skip 16-column groups that are
//    entirely padding (D = 40 runs 3 of 4 k-steps), so padding costs shared memory, not tensor-core time.
//  * Forward (flash_fwd_kernel.h): one CTA = kBlockM = 64 query rows of one (batch, head), 4 warps, 16 rows per
//    warp. Loop over key blocks of kBlockN: S = Q Kᵀ (registers), online softmax in float32 with exp2 (scale
//    folded into log2 units), O += P V (registers), K and V loaded with cp.async, the next K block in flight
//    during softmax and P·V, the next V block during the next Q·Kᵀ. Shared memory per CTA (one buffer each of
//    Q, K, V, rows padded by 8 elements so ldmatrix is bank-conflict free):
//        bucket  64: kBlockN = 64, 27 KiB      bucket 128: kBlockN = 64, 51 KiB      bucket 256: kBlockN = 32, 66 KiB
//  * Backward (flash_bwd_kernel.h): one CTA = kBlockN keys of one (batch, head) and a range of query blocks
//    (a "split"; see below). Per query block of kBlockM rows: phase 1 computes Sᵀ = K Qᵀ and dPᵀ = V dOᵀ,
//    Pᵀ = exp(scale·Sᵀ − lse) and dSᵀ = Pᵀ ∘ (dPᵀ − D) in registers and writes Pᵀ, dSᵀ (16-bit) to shared memory;
//    phase 2 accumulates dV += Pᵀ dO and dK += dSᵀ Q in registers (each warp owns a 16-key × 64-column piece of
//    both for the whole CTA); phase 3 computes dQ_i = dS K (each warp a 16-query × 64-column piece) and adds it
//    with float32 atomics into a [B, H, Nq, D] float32 buffer (converted to the input dtype afterwards). The next
//    Q / dO / lse / D block is loaded (cp.async) during phase 3, so one buffer per operand suffices.
//        bucket  64: kBlockN = 64, kBlockM = 64, 4 warps, 55 KiB
//        bucket 128: kBlockN = 64, kBlockM = 64, 8 warps, 87 KiB
//        bucket 256: kBlockN = 32, kBlockM = 32, 8 warps, 71 KiB
//    Every configuration fits the 99 KiB per-block limit of sm_86 / sm_89 (consumer GPUs) as well as sm_80 / sm_90.
//  * dQ strategy: float32 atomicAdd into the accumulation buffer (no second pass). When B·H·(Nkv / kBlockN) CTAs
//    would not fill one wave of the GPU (cross-attention: 77 keys are 2 key blocks), the query blocks are split
//    over up to Nq / kBlockM CTAs per key block (bwd_splits); then dK and dV also go through float32 atomics into
//    accumulation buffers.
//  * Grids are one-dimensional: blockIdx.x enumerates (batch·head, split, block) with the block index fastest, so
//    B·H ≥ 65,536 launches (gridDim.x allows 2³¹ − 1 blocks; the API checks the product).
//  * Inputs are read through their batch / head / row strides (elements); the last dim must be unit-stride (the
//    API copies a tensor whose last dim is strided). 16-byte vector loads (cp.async) are used when the base
//    pointer is 16-byte aligned and D and every stride are multiples of 8 elements, element-wise loads otherwise.
//  * Limits: 1 ≤ D ≤ 256, Nkv ≥ 1, no mask / causal / dropout; Nq, Nkv < 2³¹; compute capability ≥ 8.0.
#pragma once

#include <cstdint>

struct CUstream_st;  // cudaStream_t is CUstream_st* (driver_types.h); no CUDA header is needed here

namespace zerodiff::kernels::cuda::flash {

/// Element type of q, k, v, out, dout, dq, dk, dv (one for all).
enum class FlashDtype : int { kFloat16 = 0, kBFloat16 = 1 };

/// Everything a kernel needs, filled by flash_api.cpp. Strides are in elements; rows are unit-stride along D.
/// Backward-only fields are ignored by the forward pass.
struct FlashParams {
  // Inputs [B, H, Nq, D] (q, dout, out) and [B, H, Nkv, D] (k, v), any batch / head / row strides.
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;
  // Forward output / backward input: out [B, H, Nq, D].
  void* o = nullptr;
  int64_t o_batch_stride = 0, o_head_stride = 0, o_row_stride = 0;
  // Log-sum-exp of the scaled scores, float32 [B, H, Nq] contiguous (written forward, read backward).
  float* lse = nullptr;

  // Backward: dout [B, H, Nq, D] (any strides), gradients dq [B, H, Nq, D], dk, dv [B, H, Nkv, D].
  const void* dout = nullptr;
  int64_t do_batch_stride = 0, do_head_stride = 0, do_row_stride = 0;
  void* dq = nullptr;  // not written by the kernels: dq is converted from dq_accum by the API
  int64_t dq_batch_stride = 0, dq_head_stride = 0, dq_row_stride = 0;
  void* dk = nullptr;
  int64_t dk_batch_stride = 0, dk_head_stride = 0, dk_row_stride = 0;
  void* dv = nullptr;
  int64_t dv_batch_stride = 0, dv_head_stride = 0, dv_row_stride = 0;
  float* dq_accum = nullptr;  // float32 [B, H, Nq, D] contiguous, zeroed by the API; receives scale · dS K
  float* dk_accum = nullptr;  // float32 [B, H, Nkv, D] contiguous, zeroed; used only when splits > 1
  float* dv_accum = nullptr;  // float32 [B, H, Nkv, D] contiguous, zeroed; used only when splits > 1
  float* dsum = nullptr;      // float32 [B, H, Nq] contiguous: D_i = rowsum(dout ∘ out), written by the pre-kernel
  int splits = 1;             // query-block ranges per key block (backward grid = splits · key blocks · B · H)

  // Sizes.
  int batch = 0, heads = 0;
  int seqlen_q = 0, seqlen_k = 0;
  int head_dim = 0;  // D, 1..256 (the kernel's bucket is the next of 64, 128, 256)

  // Softmax scale applied to q kᵀ, and the same times log2(e) (the kernels use exp2).
  float scale = 1.0f;
  float scale_log2 = 1.0f;

  // 16-byte vector access allowed (pointer 16-byte aligned; D and batch / head / row strides multiples of 8).
  bool q_vec = false, k_vec = false, v_vec = false, o_vec = false, do_vec = false, dk_vec = false, dv_vec = false;

  FlashDtype dtype = FlashDtype::kFloat16;
  CUstream_st* stream = nullptr;  // cudaStream_t
};

/// The head-dim bucket a kernel is compiled for: 64, 128 or 256 (d in 1..256).
constexpr int head_dim_bucket(int d) { return d <= 64 ? 64 : d <= 128 ? 128 : 256; }

/// Tile configuration per bucket, shared by the kernels, the launchers and the API (which sizes grids and
/// splits with it). See the design note above.
template <int kHeadDim>
struct FwdConfig;
template <>
struct FwdConfig<64> {
  static constexpr int kBlockM = 64, kBlockN = 64, kNWarps = 4;
};
template <>
struct FwdConfig<128> {
  static constexpr int kBlockM = 64, kBlockN = 64, kNWarps = 4;
};
template <>
struct FwdConfig<256> {
  static constexpr int kBlockM = 64, kBlockN = 32, kNWarps = 4;
};

template <int kHeadDim>
struct BwdConfig;
template <>
struct BwdConfig<64> {
  static constexpr int kBlockM = 64, kBlockN = 64, kNWarps = 4;
};
template <>
struct BwdConfig<128> {
  static constexpr int kBlockM = 64, kBlockN = 64, kNWarps = 8;
};
template <>
struct BwdConfig<256> {
  static constexpr int kBlockM = 32, kBlockN = 32, kNWarps = 8;
};

/// Query rows per forward CTA and keys / query rows per backward CTA iteration for head dim d (API side).
constexpr int fwd_block_m(int d) {
  return d <= 64 ? FwdConfig<64>::kBlockM : d <= 128 ? FwdConfig<128>::kBlockM : FwdConfig<256>::kBlockM;
}
constexpr int bwd_block_n(int d) {
  return d <= 64 ? BwdConfig<64>::kBlockN : d <= 128 ? BwdConfig<128>::kBlockN : BwdConfig<256>::kBlockN;
}
constexpr int bwd_block_m(int d) {
  return d <= 64 ? BwdConfig<64>::kBlockM : d <= 128 ? BwdConfig<128>::kBlockM : BwdConfig<256>::kBlockM;
}

/// Query-block ranges ("splits") per key block of the backward pass: 1 when the B·H·(key blocks) CTAs fill at
/// least one wave of the GPU's SMs, otherwise enough ranges for about two waves (at most one per query block).
/// Stable Diffusion (B·H = 16, 132 SMs): self-attention N = 4096 (1,024 CTAs) and N = 1024 (256) do not split,
/// N = 256 with D = 160 (128) splits in 3, cross-attention with 77 keys (2 or 3 key blocks per head) in 6 to 9.
constexpr int bwd_splits(int64_t key_blocks, int64_t batch_heads, int64_t query_blocks, int num_sms) {
  const int64_t base = key_blocks * batch_heads;
  if (base <= 0 || query_blocks <= 1 || base >= num_sms) return 1;
  const int64_t want = (2 * static_cast<int64_t>(num_sms) + base - 1) / base;
  return static_cast<int>(want < query_blocks ? want : query_blocks);
}

/// Forward pass: writes p.o and p.lse. One instantiation file per (dtype, bucket):
/// flash_fwd_hdim{64,128,256}_{fp16,bf16}_sm80.cu. Throws c10::Error (C10_CUDA_KERNEL_LAUNCH_CHECK) when a
/// launch fails.
template <FlashDtype kDtype, int kHeadDim>
void run_flash_fwd(const FlashParams& p);

/// Backward pass: the D_i pre-kernel (p.dsum), then the main kernel: atomics into p.dq_accum, and dK, dV into
/// p.dk / p.dv (splits == 1) or atomics into p.dk_accum / p.dv_accum (splits > 1). Throws c10::Error when a launch
/// fails.
template <FlashDtype kDtype, int kHeadDim>
void run_flash_bwd(const FlashParams& p);

// The instantiations that exist (defined in the .cu files listed above).
#define ZD_FLASH_DECLARE(kDtype, kHeadDim)                                \
  template <>                                                             \
  void run_flash_fwd<FlashDtype::kDtype, kHeadDim>(const FlashParams& p); \
  template <>                                                             \
  void run_flash_bwd<FlashDtype::kDtype, kHeadDim>(const FlashParams& p);
ZD_FLASH_DECLARE(kFloat16, 64)
ZD_FLASH_DECLARE(kFloat16, 128)
ZD_FLASH_DECLARE(kFloat16, 256)
ZD_FLASH_DECLARE(kBFloat16, 64)
ZD_FLASH_DECLARE(kBFloat16, 128)
ZD_FLASH_DECLARE(kBFloat16, 256)
#undef ZD_FLASH_DECLARE

}  // namespace zerodiff::kernels::cuda::flash
