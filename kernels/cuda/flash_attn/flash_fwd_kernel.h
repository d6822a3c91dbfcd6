// kernels/cuda/flash_attn/flash_fwd_kernel.h — forward kernel (FlashAttention-2, Algorithm 1): one CTA computes
// kBlockM query rows of one (batch, head): out = softmax(scale · Q Kᵀ) V and lse = log Σ exp(scale · Q Kᵀ) per row.
// Reference: zerodiff::nn::attention_math; tests/gpu/test_flash_attention_cuda.cpp compares against a float32
// reference. Design note and tile sizes: flash.h.
//
// Warp w owns query rows 16w..16w+15 of the CTA's block, for all of S (registers, kBlockN columns), the softmax
// statistics (rows g and g + 8 of the quad layout: two per lane) and O (registers, kHeadDim columns). Shared
// memory: Q [kBlockM][kPitch], K [kBlockN][kPitch], V [kBlockN][kPitch], 16-bit, rows padded by 8 elements.
#pragma once

#include "flash.h"
#include "flash_utils.h"

namespace zerodiff::kernels::cuda::flash {

template <class T, int kHeadDim_>
struct FwdTraits {
  using Element = T;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = FwdConfig<kHeadDim>::kBlockM;
  static constexpr int kBlockN = FwdConfig<kHeadDim>::kBlockN;
  static constexpr int kNWarps = FwdConfig<kHeadDim>::kNWarps;
  static constexpr int kThreads = kNWarps * 32;
  static constexpr int kPitch = kHeadDim + 8;  // 16-byte rows shifted by 4 banks each: ldmatrix without conflicts
  static constexpr int kSmemQ = kBlockM * kPitch;  // elements
  static constexpr int kSmemKV = kBlockN * kPitch;
  static constexpr int kSmemBytes = (kSmemQ + 2 * kSmemKV) * 2;
  static_assert(kBlockM == 16 * kNWarps, "one 16-row MMA tile per warp");
  static_assert(kBlockN % 16 == 0 && kHeadDim % 16 == 0, "MMA tiles are 16 wide");
};

template <class Traits>
__device__ __forceinline__ void flash_fwd_block(const FlashParams& p) {
  using E = Elem<typename Traits::Element>;
  constexpr int kHD = Traits::kHeadDim, kBM = Traits::kBlockM, kBN = Traits::kBlockN, kP = Traits::kPitch;
  constexpr int kThreads = Traits::kThreads;
  constexpr int kST = kBN / 8;   // score n-tiles (8 keys each) per warp
  constexpr int kOT = kHD / 8;   // output n-tiles (8 columns each) per warp
  constexpr float kLn2 = 0.6931471805599453f;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>(smem_raw);
  uint16_t* sK = sQ + Traits::kSmemQ;
  uint16_t* sV = sK + Traits::kSmemKV;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane >> 2, t = lane & 3;
  const int nq = p.seqlen_q, nk = p.seqlen_k, d = p.head_dim;

  // blockIdx.x = bh · m_blocks + m_block: the query blocks of one head are neighbours (they share K and V in L2).
  const int m_blocks = (nq + kBM - 1) / kBM;
  const int m_block = static_cast<int>(blockIdx.x % static_cast<unsigned>(m_blocks));
  const int64_t bh = blockIdx.x / static_cast<unsigned>(m_blocks);
  const int b = static_cast<int>(bh / p.heads), h = static_cast<int>(bh % p.heads);
  const int m0 = m_block * kBM;

  const uint16_t* q = static_cast<const uint16_t*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const uint16_t* k = static_cast<const uint16_t*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const uint16_t* v = static_cast<const uint16_t*>(p.v) + b * p.v_batch_stride + h * p.v_head_stride;
  uint16_t* o = static_cast<uint16_t*>(p.o) + b * p.o_batch_stride + h * p.o_head_stride;

  // Prologue: group 0 = Q and K_0, group 1 = V_0.
  load_tile<kBM, kHD, kP, kThreads>(sQ, q, p.q_row_stride, m0, nq, d, p.q_vec, tid);
  load_tile<kBN, kHD, kP, kThreads>(sK, k, p.k_row_stride, 0, nk, d, p.k_vec, tid);
  cp_async_commit();
  load_tile<kBN, kHD, kP, kThreads>(sV, v, p.v_row_stride, 0, nk, d, p.v_vec, tid);
  cp_async_commit();

  // 16-column groups of the head dim that hold data (the rest is zero padding of the bucket: skipped).
  const int d_groups = (d + 15) / 16;
  const int wrow = warp * 16;
  float acc_o[kOT][4];
ZD_UNROLL
  for (int j = 0; j < kOT; ++j) acc_o[j][0] = acc_o[j][1] = acc_o[j][2] = acc_o[j][3] = 0.0f;
  // Running max (log2 units: scale · log2(e) · s) and this lane's part of the running sum, rows g and g + 8.
  float row_max[2] = {-kInfinity, -kInfinity};
  float row_sum[2] = {0.0f, 0.0f};

  const int n_blocks = (nk + kBN - 1) / kBN;
  for (int nb = 0; nb < n_blocks; ++nb) {
    const int n0 = nb * kBN;
    cp_async_wait<1>();  // Q and K_nb have landed (V_nb may still be in flight)
    __syncthreads();

    // S = Q K_nbᵀ for this warp's 16 rows × kBN keys.
    float s[kST][4];
ZD_UNROLL
    for (int j = 0; j < kST; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
ZD_UNROLL
    for (int ks = 0; ks < kHD / 16; ++ks) {
      if (ks < d_groups) {
        uint32_t a[4];
        load_a(a, sQ, kP, wrow, ks * 16, lane);
ZD_UNROLL
        for (int np = 0; np < kST / 2; ++np) {
          uint32_t bb[4];
          load_b_nk(bb, sK, kP, np * 16, ks * 16, lane);
          E::mma(s[2 * np], a, bb[0], bb[1]);
          E::mma(s[2 * np + 1], a, bb[2], bb[3]);
        }
      }
    }

    cp_async_wait<0>();  // V_nb has landed
    __syncthreads();     // ... and every warp is done with sK: fetch K_{nb+1} during softmax and P·V
    if (nb + 1 < n_blocks) load_tile<kBN, kHD, kP, kThreads>(sK, k, p.k_row_stride, n0 + kBN, nk, d, p.k_vec, tid);
    cp_async_commit();

    // Online softmax in log2 units. Keys >= nk (tail of the last block) get -inf after scaling.
    const bool tail = n0 + kBN > nk;
    float blk_max[2] = {-kInfinity, -kInfinity};
ZD_UNROLL
    for (int j = 0; j < kST; ++j) {
ZD_UNROLL
      for (int e = 0; e < 4; ++e) {
        float x = s[j][e] * p.scale_log2;
        if (tail && n0 + 8 * j + 2 * t + (e & 1) >= nk) x = -kInfinity;
        s[j][e] = x;
        blk_max[e >> 1] = fmaxf(blk_max[e >> 1], x);
      }
    }
    float sub[2];
ZD_UNROLL
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(row_max[r], quad_max(blk_max[r]));
      sub[r] = m_new == -kInfinity ? 0.0f : m_new;  // a row with no finite score yet: exp2(-inf) = 0
      const float alpha = exp2_approx(row_max[r] - sub[r]);  // 0 on the first block (row_max = -inf)
      row_max[r] = m_new;
      row_sum[r] *= alpha;
ZD_UNROLL
      for (int j = 0; j < kOT; ++j) {
        acc_o[j][2 * r] *= alpha;
        acc_o[j][2 * r + 1] *= alpha;
      }
    }
ZD_UNROLL
    for (int j = 0; j < kST; ++j) {
ZD_UNROLL
      for (int e = 0; e < 4; ++e) {
        const float pe = exp2_approx(s[j][e] - sub[e >> 1]);
        s[j][e] = pe;
        row_sum[e >> 1] += pe;
      }
    }

    // O += P V_nb. The accumulators of score tiles 2kk and 2kk + 1 are the A operand of key step kk.
ZD_UNROLL
    for (int kk = 0; kk < kBN / 16; ++kk) {
      const uint32_t a[4] = {E::pack(s[2 * kk][0], s[2 * kk][1]), E::pack(s[2 * kk][2], s[2 * kk][3]),
                             E::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]), E::pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
ZD_UNROLL
      for (int dp = 0; dp < kHD / 16; ++dp) {
        if (dp < d_groups) {
          uint32_t bb[4];
          load_b_kn(bb, sV, kP, kk * 16, dp * 16, lane);
          E::mma(acc_o[2 * dp], a, bb[0], bb[1]);
          E::mma(acc_o[2 * dp + 1], a, bb[2], bb[3]);
        }
      }
    }

    __syncthreads();  // every warp is done with sV: fetch V_{nb+1} during the next Q·Kᵀ
    if (nb + 1 < n_blocks) load_tile<kBN, kHD, kP, kThreads>(sV, v, p.v_row_stride, n0 + kBN, nk, d, p.v_vec, tid);
    cp_async_commit();
  }
  cp_async_wait<0>();  // only empty groups are left; nothing may be in flight when the CTA exits

  // Epilogue: O / l, and lse = max · ln 2 + ln l (natural log, as the CPU kernel and the backward pass use).
  float inv[2], lse[2];
ZD_UNROLL
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(row_sum[r]);
    inv[r] = l > 0.0f ? 1.0f / l : 0.0f;
    lse[r] = l > 0.0f ? row_max[r] * kLn2 + logf(l) : -kInfinity;
  }
  if (t == 0) {
ZD_UNROLL
    for (int r = 0; r < 2; ++r) {
      const int row = m0 + wrow + g + 8 * r;
      if (row < nq) p.lse[bh * nq + row] = lse[r];
    }
  }
  // Stage this warp's 16 output rows in its own rows of sQ (no other warp reads them), then store them with
  // 16-byte writes where allowed.
  uint16_t* sO = sQ + wrow * kP;
  __syncwarp();
ZD_UNROLL
  for (int j = 0; j < kOT; ++j) {
ZD_UNROLL
    for (int r = 0; r < 2; ++r) {
      *reinterpret_cast<uint32_t*>(sO + (g + 8 * r) * kP + 8 * j + 2 * t) =
          E::pack(acc_o[j][2 * r] * inv[r], acc_o[j][2 * r + 1] * inv[r]);
    }
  }
  __syncwarp();
  store_tile<16, kHD, kP, 32>(o, p.o_row_stride, sO, m0 + wrow, nq, d, p.o_vec, lane);
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads) flash_fwd_kernel(const FlashParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // mma.sync m16n8k16 with bfloat16, ldmatrix and cp.async need sm_80 (the API checks the device)
#else
  flash_fwd_block<Traits>(p);
#endif
}

}  // namespace zerodiff::kernels::cuda::flash
