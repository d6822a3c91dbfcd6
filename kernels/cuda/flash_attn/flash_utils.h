// kernels/cuda/flash_attn/flash_utils.h — device helpers of the flash-attention kernels: tensor-core MMA
// (mma.sync.m16n8k16), ldmatrix, cp.async, packing, exp2, and tile copies between global and shared memory.
//
// Register layouts used throughout (PTX ISA, "Matrix fragments for mma.m16n8k16 with floating point type");
// lane = threadIdx.x % 32, g = lane / 4 (group), t = lane % 4 (thread in group):
//   A (16 × 16, row-major), 4 × b32 of two 16-bit values:  a0 = A[g][2t, 2t+1]      a1 = A[g+8][2t, 2t+1]
//                                                          a2 = A[g][2t+8, 2t+9]    a3 = A[g+8][2t+8, 2t+9]
//   B (16 × 8, "col"), 2 × b32:                            b0 = B[2t, 2t+1][g]       b1 = B[2t+8, 2t+9][g]
//   C (16 × 8, float32), 4 floats:                         c0, c1 = C[g][2t, 2t+1]   c2, c3 = C[g+8][2t, 2t+1]
// So the accumulators of two adjacent n-tiles (columns 0..7 and 8..15) are, packed to 16 bits, the A operand of a
// 16 × 16 k-step: a0 = pack(c0, c1) and a1 = pack(c2, c3) of the first tile, a2, a3 likewise of the second.
//
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses (16 bytes each) of 8 × 8 matrix i; register i of a lane then
// holds row g, columns 2t, 2t+1 of matrix i — with .trans, column g, rows 2t, 2t+1 (the transposed matrix).
// The operand loads below are written once here and used by both kernels:
//   load_a:      A fragment of rows r0..r0+15, columns c0..c0+15 of a row-major tile
//   load_b_nk:   B fragments of two n-tiles for B[k][n] = X[n][k], X row-major [n][k] (e.g. Kᵀ from K)
//   load_b_kn:   B fragments of two n-tiles for B[k][n] = X[k][n], X row-major [k][n] (e.g. V), via .trans
//   load_a_t:    A fragment for A[m][k] = X[k][m], X row-major [k][m] (dS from a stored dSᵀ), via .trans
#pragma once

#include <cstdint>
#include <cstring>

// `#pragma unroll` for nvcc, nothing for a host compiler (the CPU emulation of the kernels).
#if defined(__CUDACC__)
#define ZD_UNROLL _Pragma("unroll")
#else
#define ZD_UNROLL
#endif

namespace zerodiff::kernels::cuda::flash {
template <class T>
struct Elem;  // per element type: pack(lo, hi), to_float(bits), mma(c, a, b0, b1)
}  // namespace zerodiff::kernels::cuda::flash

#if defined(ZD_FLASH_EMULATOR)
// CPU execution of the kernels for tests/unit/test_flash_attention_emulated.cpp: the header named by
// ZD_FLASH_EMULATOR provides every primitive of the #else branch (and threadIdx, __syncthreads, ...) on fibers.
#include ZD_FLASH_EMULATOR
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace zerodiff::kernels::cuda::flash {

// ------------------------------------------------------------------ element types

template <>
struct Elem<__half> {
  // Two floats rounded to float16 in one b32 register, `lo` in the low half (the lower column index).
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &h, sizeof(u));
    return u;
  }
  static __device__ __forceinline__ float to_float(uint16_t bits) {
    __half h;
    memcpy(&h, &bits, sizeof(bits));
    return __half2float(h);
  }
  // C += A B for one m16n8k16 tile.
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &h, sizeof(u));
    return u;
  }
  static __device__ __forceinline__ float to_float(uint16_t bits) {
    // bfloat16 is the upper half of a float32.
    return __uint_as_float(static_cast<uint32_t>(bits) << 16);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// ------------------------------------------------------------------ scalar helpers

// 2^x (ex2.approx.ftz: about 2 ulp; 2^-inf = 0).
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// 16 bytes from `src` to `dst`, both 16-byte aligned (a vector load and store).
__device__ __forceinline__ void copy16(void* dst, const void* src) {
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ------------------------------------------------------------------ asynchronous copies (sm_80+)

// 16 bytes global → shared; bytes src_bytes..15 are zero-filled (src_bytes = 0: no global read).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes)
               : "memory");
}
// 4 bytes global → shared, zero-filled when src_bytes = 0.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes)
               : "memory");
}
// Closes the group of cp.async issued since the last commit (an empty group when there were none).
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most kPending of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// ------------------------------------------------------------------ ldmatrix

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
// Two 8 × 8 matrices; lanes 0..15 give the row addresses (lanes 16..31 pass valid, unused addresses).
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p))
               : "memory");
}

}  // namespace zerodiff::kernels::cuda::flash
#endif  // ZD_FLASH_EMULATOR

namespace zerodiff::kernels::cuda::flash {

constexpr float kInfinity = __builtin_huge_valf();

// Reductions over the 4 lanes of a quad (the lanes holding one accumulator row).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// ------------------------------------------------------------------ operand loads (ldmatrix)

// A fragment (16 × 16) at rows r0.., columns c0.. of a row-major 16-bit tile with row pitch `pitch` elements.
// Matrix i = lane / 8: rows r0 + 8·(i & 1), columns c0 + 8·(i >> 1) → registers a0..a3 in the A layout above.
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const uint16_t* tile, int pitch, int r0, int c0, int lane) {
  const int row = r0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int col = c0 + (lane >> 4) * 8;
  ldmatrix_x4(a, tile + row * pitch + col);
}

// B fragments of the two n-tiles n0..n0+7 and n0+8..n0+15 at k-step k0..k0+15, for B[k][n] = X[n][k] with X
// stored row-major [n][k] (rows = n). Matrix i: X rows n0 + 8·(i >> 1), columns k0 + 8·(i & 1), so
// b[0], b[1] = (b0, b1) of tile n0 and b[2], b[3] = (b0, b1) of tile n0 + 8.
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const uint16_t* tile, int pitch, int n0, int k0,
                                          int lane) {
  const int row = n0 + (lane & 7) + (lane >> 4) * 8;
  const int col = k0 + ((lane >> 3) & 1) * 8;
  ldmatrix_x4(b, tile + row * pitch + col);
}

// One n-tile n0..n0+7 of the same (b[0], b[1] = b0, b1): matrices 0, 1 = X rows n0.., columns k0 and k0 + 8.
__device__ __forceinline__ void load_b_nk_x2(uint32_t (&b)[2], const uint16_t* tile, int pitch, int n0, int k0,
                                             int lane) {
  const int row = n0 + (lane & 7);
  const int col = k0 + ((lane >> 3) & 1) * 8;
  ldmatrix_x2(b, tile + row * pitch + col);
}

// B fragments of the two n-tiles n0.. and n0+8.. at k-step k0.., for B[k][n] = X[k][n] with X stored row-major
// [k][n] (rows = k). With .trans, matrix i = X rows k0 + 8·(i & 1), columns n0 + 8·(i >> 1) gives lane the values
// X[k0 + 8·(i & 1) + 2t, +1][n0 + 8·(i >> 1) + g]: b[0], b[1] of tile n0 and b[2], b[3] of tile n0 + 8.
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const uint16_t* tile, int pitch, int k0, int n0,
                                          int lane) {
  const int row = k0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int col = n0 + (lane >> 4) * 8;
  ldmatrix_x4_trans(b, tile + row * pitch + col);
}

// A fragment (16 × 16) at rows m0.., columns k0.. of A[m][k] = X[k][m], X stored row-major [k][m] (rows = k).
// With .trans, matrix i = X rows k0 + 8·(i >> 1), columns m0 + 8·(i & 1) gives lane X[k0 + 8·(i >> 1) + 2t, +1]
// [m0 + 8·(i & 1) + g] = A[m0 + 8·(i & 1) + g][k0 + 8·(i >> 1) + 2t, +1]: exactly a0..a3.
__device__ __forceinline__ void load_a_t(uint32_t (&a)[4], const uint16_t* tile, int pitch, int m0, int k0, int lane) {
  const int row = k0 + (lane & 7) + (lane >> 4) * 8;
  const int col = m0 + ((lane >> 3) & 1) * 8;
  ldmatrix_x4_trans(a, tile + row * pitch + col);
}

// ------------------------------------------------------------------ tiles between global and shared memory

// Rows row0..row0+kRows-1 of a [n × d] 16-bit matrix at `g` (row stride ld elements, unit column stride) into
// shared [kRows][kPitch]; rows >= n and columns >= d (up to kCols) are zero-filled. vec: 16-byte cp.async (the
// caller guarantees 16-byte alignment of every row start and d % 8 == 0); otherwise element-wise loads and
// stores (visible after the next __syncthreads, like the asynchronous copies after their wait).
template <int kRows, int kCols, int kPitch, int kThreads>
__device__ __forceinline__ void load_tile(uint16_t* smem, const uint16_t* g, int64_t ld, int row0, int n, int d,
                                          bool vec, int tid) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
  constexpr int kIters = (kChunks + kThreads - 1) / kThreads;
  if (vec) {
ZD_UNROLL
    for (int i = 0; i < kIters; ++i) {
      const int c = tid + i * kThreads;
      if (kChunks % kThreads != 0 && c >= kChunks) break;
      const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
      const bool ok = row0 + r < n && col < d;
      const uint16_t* src = ok ? g + static_cast<int64_t>(row0 + r) * ld + col : g;
      cp_async_16(smem + r * kPitch + col, src, ok ? 16 : 0);
    }
  } else {
    for (int i = 0; i < kIters; ++i) {
      const int c = tid + i * kThreads;
      if (c >= kChunks) break;
      const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
      const bool row_ok = row0 + r < n;
      const uint16_t* src = g + static_cast<int64_t>(row0 + r) * ld;
ZD_UNROLL
      for (int e = 0; e < 8; ++e) {
        smem[r * kPitch + col + e] = row_ok && col + e < d ? src[col + e] : uint16_t{0};
      }
    }
  }
}

// kRows float32 values g[row0..] into shared, zero past n (4-byte cp.async).
template <int kRows, int kThreads>
__device__ __forceinline__ void load_vec_f32(float* smem, const float* g, int row0, int n, int tid) {
  for (int i = tid; i < kRows; i += kThreads) {
    const bool ok = row0 + i < n;
    cp_async_4(smem + i, ok ? g + row0 + i : g, ok ? 4 : 0);
  }
}

// Shared [kRows][kPitch] → rows row0.. of a [n × d] 16-bit matrix at `g` (row stride ld); rows >= n and columns
// >= d are not written. vec: 16-byte stores (same alignment contract as load_tile).
template <int kRows, int kCols, int kPitch, int kThreads>
__device__ __forceinline__ void store_tile(uint16_t* g, int64_t ld, const uint16_t* smem, int row0, int n, int d,
                                           bool vec, int tid) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
  for (int c = tid; c < kChunks; c += kThreads) {
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    if (row0 + r >= n || col >= d) continue;
    uint16_t* dst = g + static_cast<int64_t>(row0 + r) * ld + col;
    const uint16_t* src = smem + r * kPitch + col;
    if (vec) {
      copy16(dst, src);
    } else {
      const int m = d - col < 8 ? d - col : 8;
      for (int e = 0; e < m; ++e) dst[e] = src[e];
    }
  }
}

}  // namespace zerodiff::kernels::cuda::flash
