// kernels/cuda/flash_attn/flash_bwd_kernel.h — backward kernels (FlashAttention-2, Algorithm 2).
//   flash_bwd_dsum_kernel:  D_i = rowsum(dO_i ∘ O_i) per query row (float32), one warp per row.
//   flash_bwd_kernel:       one CTA = kBlockN keys of one (batch, head) and the query blocks of its split;
//                           dK_j and dV_j in registers, dQ through float32 atomics.
// With S = Q Kᵀ (unscaled), P = exp(scale · S − lse), dP = dO Vᵀ and dS = P ∘ (dP − D):
//   dV = Pᵀ dO,   dK = scale · dSᵀ Q,   dQ = scale · dS K.
// Reference: zerodiff::nn::attention_math and its autograd gradients; tests/gpu/test_flash_attention_cuda.cpp.
// Design note and tile sizes: flash.h.
//
// The CTA works on transposed tiles (keys × queries), so that a warp owning 16 keys gets whole rows of Pᵀ and dSᵀ:
//   phase 1  Sᵀ = K Qᵀ, dPᵀ = V dOᵀ          warp: 16 keys × kQW queries (contraction over the head dim)
//            Pᵀ, dSᵀ → shared memory (16-bit)
//   phase 2  dV += Pᵀ dO, dK += dSᵀ Q        warp: 16 keys × kDW2 columns (contraction over the query block)
//   phase 3  dQ_i += scale · dS K            warp: 16 queries × kDW3 columns (contraction over the key block),
//            added into dq_accum with atomicAdd
// Shared memory (16-bit unless noted): K, V [kBlockN][kPitch]; Q, dO [kBlockM][kPitch]; Pᵀ, dSᵀ [kBlockN][kPitchS];
// lse, D [kBlockM] float32. The next query block's Q, dO, lse, D are fetched (cp.async) during phase 3, which only
// reads dSᵀ and K.
#pragma once

#include "flash.h"
#include "flash_utils.h"

namespace zerodiff::kernels::cuda::flash {

template <class T, int kHeadDim_>
struct BwdTraits {
  using Element = T;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = BwdConfig<kHeadDim>::kBlockM;  // queries per iteration
  static constexpr int kBlockN = BwdConfig<kHeadDim>::kBlockN;  // keys per CTA
  static constexpr int kNWarps = BwdConfig<kHeadDim>::kNWarps;
  static constexpr int kThreads = kNWarps * 32;
  static constexpr int kPitch = kHeadDim + 8;  // row pitch of K, V, Q, dO (elements)
  static constexpr int kPitchS = kBlockM + 8;  // row pitch of Pᵀ, dSᵀ (elements)
  // Warp roles. Phases 1 and 2: warp w takes key rows 16·(w % kKeyTiles); phase 1 splits the queries and phase 2
  // the head dim over w / kKeyTiles. Phase 3: query rows 16·(w % kQTiles3), columns by w / kQTiles3.
  static constexpr int kKeyTiles = kBlockN / 16;
  static constexpr int kQW = kBlockM / (kNWarps / kKeyTiles);      // queries per warp in phase 1
  static constexpr int kDW2 = kHeadDim / (kNWarps / kKeyTiles);    // dK / dV columns per warp
  static constexpr int kQTiles3 = kBlockM / 16;
  static constexpr int kDW3 = kHeadDim / (kNWarps / kQTiles3);     // dQ columns per warp
  // Shared memory, in 16-bit elements, then two float32 vectors.
  static constexpr int kSmemKV = kBlockN * kPitch;
  static constexpr int kSmemQ = kBlockM * kPitch;
  static constexpr int kSmemS = kBlockN * kPitchS;
  static constexpr int kSmemBytes = (2 * kSmemKV + 2 * kSmemQ + 2 * kSmemS) * 2 + 2 * kBlockM * 4;
  static_assert(kNWarps % kKeyTiles == 0 && kNWarps % kQTiles3 == 0, "warps must tile the key and query blocks");
  static_assert(kQW == 8 || kQW % 16 == 0, "phase 1 loads B fragments of one (8) or two (16) query tiles");
  static_assert(kDW2 % 16 == 0 && kDW3 % 16 == 0 && kHeadDim % 16 == 0, "column ranges are whole 16-wide k-steps");
  static_assert(kBlockM % 16 == 0 && kBlockN % 16 == 0, "MMA tiles are 16 wide");
  static_assert(kBlockM >= kBlockN, "the epilogue stages dK and dV in the Q and dO buffers");
};

// D_i = Σ_c dO[i][c] · O[i][c] for every query row i of every (batch, head): p.dsum [B·H·Nq], float32.
// Blocks of 8 warps, one row per warp (lanes stride the head dim).
template <class Traits>
__global__ void __launch_bounds__(256) flash_bwd_dsum_kernel(const FlashParams p) {
  using E = Elem<typename Traits::Element>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 8 + warp;
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads * p.seqlen_q;
  if (row >= rows) return;  // whole warps only
  const int64_t bh = row / p.seqlen_q;
  const int i = static_cast<int>(row % p.seqlen_q);
  const int b = static_cast<int>(bh / p.heads), h = static_cast<int>(bh % p.heads);
  const uint16_t* dor = static_cast<const uint16_t*>(p.dout) + b * p.do_batch_stride + h * p.do_head_stride +
                        i * p.do_row_stride;
  const uint16_t* orow =
      static_cast<const uint16_t*>(p.o) + b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride;
  float acc = 0.0f;
  for (int c = lane; c < p.head_dim; c += 32) acc += E::to_float(dor[c]) * E::to_float(orow[c]);
ZD_UNROLL
  for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  if (lane == 0) p.dsum[row] = acc;
}

template <class Traits>
__device__ __forceinline__ void flash_bwd_block(const FlashParams& p) {
  using E = Elem<typename Traits::Element>;
  constexpr int kHD = Traits::kHeadDim, kBM = Traits::kBlockM, kBN = Traits::kBlockN;
  constexpr int kP = Traits::kPitch, kPS = Traits::kPitchS, kThreads = Traits::kThreads;
  constexpr int kKeyTiles = Traits::kKeyTiles, kQW = Traits::kQW, kDW2 = Traits::kDW2;
  constexpr int kQTiles3 = Traits::kQTiles3, kDW3 = Traits::kDW3;
  constexpr float kLog2e = 1.4426950408889634f;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint16_t* sK = reinterpret_cast<uint16_t*>(smem_raw);
  uint16_t* sV = sK + Traits::kSmemKV;
  uint16_t* sQ = sV + Traits::kSmemKV;
  uint16_t* sdO = sQ + Traits::kSmemQ;
  uint16_t* sP = sdO + Traits::kSmemQ;   // Pᵀ [kBlockN][kPitchS]
  uint16_t* sdS = sP + Traits::kSmemS;   // dSᵀ [kBlockN][kPitchS]
  float* sLse = reinterpret_cast<float*>(sdS + Traits::kSmemS);
  float* sDsum = sLse + kBM;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane >> 2, t = lane & 3;
  const int nq = p.seqlen_q, nk = p.seqlen_k, d = p.head_dim;

  // blockIdx.x = (bh · splits + split) · n_blocks + n_block.
  const int n_blocks = (nk + kBN - 1) / kBN;
  const int m_blocks = (nq + kBM - 1) / kBM;
  const int n_block = static_cast<int>(blockIdx.x % static_cast<unsigned>(n_blocks));
  const int64_t rest = blockIdx.x / static_cast<unsigned>(n_blocks);
  const int split = static_cast<int>(rest % p.splits);
  const int64_t bh = rest / p.splits;
  const int b = static_cast<int>(bh / p.heads), h = static_cast<int>(bh % p.heads);
  const int mb_begin = static_cast<int>(static_cast<int64_t>(split) * m_blocks / p.splits);
  const int mb_end = static_cast<int>(static_cast<int64_t>(split + 1) * m_blocks / p.splits);
  const int n0 = n_block * kBN;

  const uint16_t* q = static_cast<const uint16_t*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const uint16_t* k = static_cast<const uint16_t*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const uint16_t* v = static_cast<const uint16_t*>(p.v) + b * p.v_batch_stride + h * p.v_head_stride;
  const uint16_t* dout = static_cast<const uint16_t*>(p.dout) + b * p.do_batch_stride + h * p.do_head_stride;
  const float* lse = p.lse + bh * nq;
  const float* dsum = p.dsum + bh * nq;
  float* dq_acc = p.dq_accum + bh * nq * d;

  // Warp roles (see BwdTraits).
  const int kr = (warp % kKeyTiles) * 16;   // key rows, phases 1 and 2
  const int qc = (warp / kKeyTiles) * kQW;  // query columns, phase 1
  const int dc2 = (warp / kKeyTiles) * kDW2;  // dK / dV columns, phase 2
  const int qr3 = (warp % kQTiles3) * 16;     // query rows, phase 3
  const int dc3 = (warp / kQTiles3) * kDW3;   // dQ columns, phase 3
  const int d_groups = (d + 15) / 16;         // 16-column groups of the head dim holding data

  auto load_query_block = [&](int m0) {
    load_tile<kBM, kHD, kP, kThreads>(sQ, q, p.q_row_stride, m0, nq, d, p.q_vec, tid);
    load_tile<kBM, kHD, kP, kThreads>(sdO, dout, p.do_row_stride, m0, nq, d, p.do_vec, tid);
    load_vec_f32<kBM, kThreads>(sLse, lse, m0, nq, tid);
    load_vec_f32<kBM, kThreads>(sDsum, dsum, m0, nq, tid);
  };

  // Prologue: K_j, V_j and the first query block in one group.
  load_tile<kBN, kHD, kP, kThreads>(sK, k, p.k_row_stride, n0, nk, d, p.k_vec, tid);
  load_tile<kBN, kHD, kP, kThreads>(sV, v, p.v_row_stride, n0, nk, d, p.v_vec, tid);
  if (mb_begin < mb_end) load_query_block(mb_begin * kBM);
  cp_async_commit();

  float acc_dk[kDW2 / 8][4], acc_dv[kDW2 / 8][4];
ZD_UNROLL
  for (int j = 0; j < kDW2 / 8; ++j) {
ZD_UNROLL
    for (int e = 0; e < 4; ++e) acc_dk[j][e] = acc_dv[j][e] = 0.0f;
  }

  for (int mb = mb_begin; mb < mb_end; ++mb) {
    const int m0 = mb * kBM;
    cp_async_wait<0>();  // this query block (and in the first iteration K_j, V_j) has landed
    __syncthreads();     // ... for every thread; and every warp is done with the previous phase 3 (sdS)

    // ---- phase 1: Sᵀ = K Qᵀ and dPᵀ = V dOᵀ, 16 keys × kQW queries per warp.
    float s[kQW / 8][4], dp[kQW / 8][4];
ZD_UNROLL
    for (int j = 0; j < kQW / 8; ++j) {
ZD_UNROLL
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;
    }
ZD_UNROLL
    for (int ks = 0; ks < kHD / 16; ++ks) {
      if (ks < d_groups) {
        uint32_t ak[4], av[4];
        load_a(ak, sK, kP, kr, ks * 16, lane);
        load_a(av, sV, kP, kr, ks * 16, lane);
        if constexpr (kQW % 16 == 0) {
ZD_UNROLL
          for (int np = 0; np < kQW / 16; ++np) {
            uint32_t bq[4], bd[4];
            load_b_nk(bq, sQ, kP, qc + np * 16, ks * 16, lane);
            E::mma(s[2 * np], ak, bq[0], bq[1]);
            E::mma(s[2 * np + 1], ak, bq[2], bq[3]);
            load_b_nk(bd, sdO, kP, qc + np * 16, ks * 16, lane);
            E::mma(dp[2 * np], av, bd[0], bd[1]);
            E::mma(dp[2 * np + 1], av, bd[2], bd[3]);
          }
        } else {
          uint32_t bq[2], bd[2];
          load_b_nk_x2(bq, sQ, kP, qc, ks * 16, lane);
          E::mma(s[0], ak, bq[0], bq[1]);
          load_b_nk_x2(bd, sdO, kP, qc, ks * 16, lane);
          E::mma(dp[0], av, bd[0], bd[1]);
        }
      }
    }
    // Pᵀ = exp2(scale·log2(e) · Sᵀ − lse·log2(e)) and dSᵀ = Pᵀ ∘ (dPᵀ − D), both 0 outside the keys and queries
    // that exist. Accumulator element e of tile j: key row kr + g + 8·(e >> 1), query column qc + 8j + 2t + (e & 1).
    const int key_lim = nk - n0 - kr;  // row i of the warp's 16 is a key iff i < key_lim
    const int q_lim = nq - m0 - qc;    // column c of the warp's kQW is a query iff c < q_lim
ZD_UNROLL
    for (int j = 0; j < kQW / 8; ++j) {
ZD_UNROLL
      for (int c = 0; c < 2; ++c) {
        const int col = 8 * j + 2 * t + c;
        const float lse_l2 = sLse[qc + col] * kLog2e;
        const float di = sDsum[qc + col];
ZD_UNROLL
        for (int r = 0; r < 2; ++r) {
          const int e = 2 * r + c;
          const bool ok = g + 8 * r < key_lim && col < q_lim;
          const float pe = ok ? exp2_approx(s[j][e] * p.scale_log2 - lse_l2) : 0.0f;
          s[j][e] = pe;
          dp[j][e] = pe * (dp[j][e] - di);
        }
      }
    }
ZD_UNROLL
    for (int j = 0; j < kQW / 8; ++j) {
ZD_UNROLL
      for (int r = 0; r < 2; ++r) {
        const int off = (kr + g + 8 * r) * kPS + qc + 8 * j + 2 * t;
        *reinterpret_cast<uint32_t*>(sP + off) = E::pack(s[j][2 * r], s[j][2 * r + 1]);
        *reinterpret_cast<uint32_t*>(sdS + off) = E::pack(dp[j][2 * r], dp[j][2 * r + 1]);
      }
    }
    __syncthreads();

    // ---- phase 2: dV += Pᵀ dO and dK += dSᵀ Q, 16 keys × kDW2 columns per warp, k-steps over the query block.
ZD_UNROLL
    for (int kk = 0; kk < kBM / 16; ++kk) {
      uint32_t ap[4], ads[4];
      load_a(ap, sP, kPS, kr, kk * 16, lane);
      load_a(ads, sdS, kPS, kr, kk * 16, lane);
ZD_UNROLL
      for (int np = 0; np < kDW2 / 16; ++np) {
        if (dc2 / 16 + np < d_groups) {
          uint32_t bo[4], bq[4];
          load_b_kn(bo, sdO, kP, kk * 16, dc2 + np * 16, lane);
          E::mma(acc_dv[2 * np], ap, bo[0], bo[1]);
          E::mma(acc_dv[2 * np + 1], ap, bo[2], bo[3]);
          load_b_kn(bq, sQ, kP, kk * 16, dc2 + np * 16, lane);
          E::mma(acc_dk[2 * np], ads, bq[0], bq[1]);
          E::mma(acc_dk[2 * np + 1], ads, bq[2], bq[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with sQ, sdO, sP, sLse, sDsum: fetch the next query block now

    if (mb + 1 < mb_end) load_query_block(m0 + kBM);
    cp_async_commit();

    // ---- phase 3: dQ_i += scale · dS K_j, 16 queries × kDW3 columns per warp, k-steps over the key block.
    if (dc3 / 16 < d_groups) {
      float acc_dq[kDW3 / 8][4];
ZD_UNROLL
      for (int j = 0; j < kDW3 / 8; ++j) {
ZD_UNROLL
        for (int e = 0; e < 4; ++e) acc_dq[j][e] = 0.0f;
      }
ZD_UNROLL
      for (int kk = 0; kk < kBN / 16; ++kk) {
        uint32_t a[4];
        load_a_t(a, sdS, kPS, qr3, kk * 16, lane);  // dS [query][key] from the stored dSᵀ
ZD_UNROLL
        for (int np = 0; np < kDW3 / 16; ++np) {
          if (dc3 / 16 + np < d_groups) {
            uint32_t bk[4];
            load_b_kn(bk, sK, kP, kk * 16, dc3 + np * 16, lane);
            E::mma(acc_dq[2 * np], a, bk[0], bk[1]);
            E::mma(acc_dq[2 * np + 1], a, bk[2], bk[3]);
          }
        }
      }
ZD_UNROLL
      for (int j = 0; j < kDW3 / 8; ++j) {
ZD_UNROLL
        for (int e = 0; e < 4; ++e) {
          const int row = m0 + qr3 + g + 8 * (e >> 1);
          const int col = dc3 + 8 * j + 2 * t + (e & 1);
          if (row < nq && col < d) atomicAdd(dq_acc + static_cast<int64_t>(row) * d + col, acc_dq[j][e] * p.scale);
        }
      }
    }
  }
  cp_async_wait<0>();  // only an empty group can be left

  // ---- epilogue: dV_j and scale · dK_j.
  if (p.splits == 1) {
    // Stage in sQ (dV) and sdO (dK): no warp reads them after the last phase 2, and no copy into them is in flight.
    uint16_t* sdV = sQ;
    uint16_t* sdK = sdO;
ZD_UNROLL
    for (int j = 0; j < kDW2 / 8; ++j) {
ZD_UNROLL
      for (int r = 0; r < 2; ++r) {
        const int off = (kr + g + 8 * r) * kP + dc2 + 8 * j + 2 * t;
        *reinterpret_cast<uint32_t*>(sdV + off) = E::pack(acc_dv[j][2 * r], acc_dv[j][2 * r + 1]);
        *reinterpret_cast<uint32_t*>(sdK + off) = E::pack(acc_dk[j][2 * r] * p.scale, acc_dk[j][2 * r + 1] * p.scale);
      }
    }
    __syncthreads();
    uint16_t* dv = static_cast<uint16_t*>(p.dv) + b * p.dv_batch_stride + h * p.dv_head_stride;
    uint16_t* dk = static_cast<uint16_t*>(p.dk) + b * p.dk_batch_stride + h * p.dk_head_stride;
    store_tile<kBN, kHD, kP, kThreads>(dv, p.dv_row_stride, sdV, n0, nk, d, p.dv_vec, tid);
    store_tile<kBN, kHD, kP, kThreads>(dk, p.dk_row_stride, sdK, n0, nk, d, p.dk_vec, tid);
  } else {
    // Several CTAs (splits) share these keys: add into the float32 accumulators [B·H, Nkv, D].
    float* dk_acc = p.dk_accum + bh * nk * d;
    float* dv_acc = p.dv_accum + bh * nk * d;
ZD_UNROLL
    for (int j = 0; j < kDW2 / 8; ++j) {
ZD_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int key = n0 + kr + g + 8 * (e >> 1);
        const int col = dc2 + 8 * j + 2 * t + (e & 1);
        if (key < nk && col < d) {
          const int64_t i = static_cast<int64_t>(key) * d + col;
          atomicAdd(dv_acc + i, acc_dv[j][e]);
          atomicAdd(dk_acc + i, acc_dk[j][e] * p.scale);
        }
      }
    }
  }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads) flash_bwd_kernel(const FlashParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // mma.sync m16n8k16 with bfloat16, ldmatrix and cp.async need sm_80 (the API checks the device)
#else
  flash_bwd_block<Traits>(p);
#endif
}

}  // namespace zerodiff::kernels::cuda::flash
