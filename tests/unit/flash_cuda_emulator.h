// tests/unit/flash_cuda_emulator.h — runs the CUDA flash-attention kernels (kernels/cuda/flash_attn/*_kernel.h) on
// the CPU, so that their index arithmetic, masking, synchronisation and fragment bookkeeping are tested on every
// build, GPU or not (tests/unit/test_flash_attention_emulated.cpp). Not a general CUDA emulator: it provides
// exactly the primitives flash_utils.h uses, with the semantics of the PTX ISA, and checks their contracts.
//
// Included by flash_utils.h when ZD_FLASH_EMULATOR names this file. Each CUDA thread of a CTA is a fiber
// (ucontext) on one OS thread; a fiber runs until it reaches a warp-collective operation (ldmatrix, mma,
// __shfl_xor_sync, __syncwarp) or __syncthreads, then yields. The scheduler completes the
// collective of a warp once its 32 lanes all wait at it (computing every lane's result from all lanes'
// operands), and releases the CTA barrier when every thread waits there. Warps run in bursts of random length
// in a seeded random order, so one warp can run far ahead of another between barriers, as on hardware.
//
// Checked (an EmuError names the problem): lanes of a warp at different collectives (divergence), a barrier
// that can never complete (deadlock), ldmatrix / cp.async addresses outside the CTA's dynamic shared memory or
// misaligned, cp.async reads outside the registered global buffers, and a thread that exits with copies in
// flight. cp.async copies land at a random moment between issue and the cp.async.wait_group that covers them
// (as on hardware), so a missing wait or barrier shows up as wrong or NaN results: shared memory starts filled
// with 0xFF bytes, a NaN in both 16-bit formats.
//
// Register layouts (PTX ISA, mma.m16n8k16 with 16-bit floating-point inputs and float32 accumulators;
// g = lane / 4, t = lane % 4): a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9],
// a3 = A[g+8][2t+8, 2t+9]; b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]; c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][..].
// ldmatrix: lane 8i + r gives the address of row r of matrix i; register i of lane l holds row l / 4, elements
// 2(l % 4), 2(l % 4) + 1 of matrix i (.trans: elements [2(l % 4)][l / 4] and [2(l % 4) + 1][l / 4]).
#pragma once

#include <math.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef __device__
#define __device__
#endif
#ifndef __global__
#define __global__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __shared__
#define __shared__
#endif
#ifndef __align__
#define __align__(n)
#endif

namespace zd_emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

class EmuError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Tags standing in for __half and __nv_bfloat16 as the kernels' element types.
struct Half {};
struct BFloat16 {};

// float32 → float16, round to nearest even (overflow → inf, subnormals kept).
inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<uint16_t>(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (ax < 0x38800000u) {                                               // below 2^-14: subnormal half
    float a;
    std::memcpy(&a, &ax, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  const uint32_t mant = ax & 0x7fffffu;
  uint32_t h = ((((ax >> 23) - 127u + 15u)) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}
inline float half_to_float(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const float s = (h & 0x8000) ? -1.0f : 1.0f;
  if (e == 0) return s * std::ldexp(static_cast<float>(m), -24);
  if (e == 31) return m ? NAN : s * INFINITY;
  return s * std::ldexp(static_cast<float>(1024 + m), e - 25);
}
inline uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}
inline float bf16_to_float(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

enum class Wait { none, warp, block };
enum class Op { none, syncwarp, shfl, ldsm_x4, ldsm_x4_trans, ldsm_x2, mma_f16, mma_bf16 };

inline const char* op_name(Op op) {
  switch (op) {
    case Op::none: return "none";
    case Op::syncwarp: return "__syncwarp";
    case Op::shfl: return "__shfl_xor_sync";
    case Op::ldsm_x4: return "ldmatrix.x4";
    case Op::ldsm_x4_trans: return "ldmatrix.x4.trans";
    case Op::ldsm_x2: return "ldmatrix.x2";
    case Op::mma_f16: return "mma.f16";
    case Op::mma_bf16: return "mma.bf16";
  }
  return "?";
}

struct Copy {
  unsigned char* dst;
  const unsigned char* src;
  int bytes, src_bytes, group;
};

struct Thread {
  ucontext_t ctx{};
  std::vector<char> stack;
  bool done = false;
  Wait wait = Wait::none;
  Op op = Op::none;
  // Operands and results of the pending collective.
  const void* addr = nullptr;
  float fin = 0.0f, fout = 0.0f;
  int xor_mask = 0;
  uint32_t a[4] = {}, b[2] = {}, r[4] = {};
  float c[4] = {};
  // cp.async state.
  std::vector<Copy> copies;
  int committed = 0;
};

struct Range {
  const unsigned char* begin;
  const unsigned char* end;
};

struct Emulator {
  ucontext_t main_ctx{};
  std::vector<Thread> threads;
  int current = -1;
  Dim3 block_idx, thread_idx;
  std::mt19937 rng{12345};
  unsigned char* smem = nullptr;  // the CTA's dynamic shared memory (the kernels' smem_raw)
  size_t smem_bytes = 0;
  std::vector<Range> globals;  // where cp.async may read
  std::function<void()> body;
  std::string error;
  long long collectives = 0;
};

inline Emulator& emu() {
  static Emulator e;
  return e;
}

// From a fiber: records the error and leaves for the scheduler for good (no exception crosses a fiber).
[[noreturn]] inline void fail(const std::string& msg) {
  Emulator& e = emu();
  if (e.error.empty()) e.error = msg;
  if (e.current >= 0) {
    Thread& t = e.threads[e.current];
    t.done = true;
    swapcontext(&t.ctx, &e.main_ctx);
  }
  throw EmuError(msg);
}

inline Thread& self() { return emu().threads[emu().current]; }

inline void yield(Wait w, Op op) {
  Emulator& e = emu();
  Thread& t = self();
  t.wait = w;
  t.op = op;
  swapcontext(&t.ctx, &e.main_ctx);
}

inline void check_smem(const void* p, size_t bytes, size_t align, const char* what) {
  const Emulator& e = emu();
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < e.smem || c + bytes > e.smem + e.smem_bytes) {
    fail(std::string(what) + ": shared address outside the CTA's " + std::to_string(e.smem_bytes) +
         " bytes (offset " + std::to_string(c - e.smem) + ")");
  }
  if (reinterpret_cast<uintptr_t>(c) % align != 0) fail(std::string(what) + ": misaligned shared address");
}

inline void land(Copy& c) {
  std::memcpy(c.dst, c.src, static_cast<size_t>(c.src_bytes));
  std::memset(c.dst + c.src_bytes, 0, static_cast<size_t>(c.bytes - c.src_bytes));
}

inline void cp_async(void* smem, const void* gmem, int bytes, int src_bytes) {
  check_smem(smem, static_cast<size_t>(bytes), static_cast<size_t>(bytes), "cp.async destination");
  if (src_bytes < 0 || src_bytes > bytes) fail("cp.async: src-size out of range");
  const auto* g = static_cast<const unsigned char*>(gmem);
  if (src_bytes > 0) {
    bool inside = false;
    for (const Range& r : emu().globals) inside |= g >= r.begin && g + src_bytes <= r.end;
    if (!inside) fail("cp.async: global source outside every input buffer");
    if (reinterpret_cast<uintptr_t>(g) % static_cast<uintptr_t>(bytes) != 0) fail("cp.async: misaligned source");
  }
  Thread& t = self();
  t.copies.push_back({static_cast<unsigned char*>(smem), g, bytes, src_bytes, t.committed});
}

inline void cp_async_wait(int pending) {
  Thread& t = self();
  std::vector<Copy> keep;
  for (Copy& c : t.copies) {
    if (c.group < t.committed - pending) {
      land(c);
    } else {
      keep.push_back(c);
    }
  }
  t.copies.swap(keep);
}

// ------------------------------------------------------------------ collectives, executed by the scheduler

inline uint16_t smem_u16(const void* row, int i) {
  uint16_t v;
  std::memcpy(&v, static_cast<const unsigned char*>(row) + 2 * i, 2);
  return v;
}

inline void run_ldmatrix(Thread* lanes, int nmat, bool trans) {
  for (int m = 0; m < nmat; ++m) {
    for (int r = 0; r < 8; ++r) check_smem(lanes[8 * m + r].addr, 16, 16, "ldmatrix row");
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int m = 0; m < nmat; ++m) {
      uint16_t lo, hi;
      if (!trans) {
        lo = smem_u16(lanes[8 * m + g].addr, 2 * t);
        hi = smem_u16(lanes[8 * m + g].addr, 2 * t + 1);
      } else {
        lo = smem_u16(lanes[8 * m + 2 * t].addr, g);
        hi = smem_u16(lanes[8 * m + 2 * t + 1].addr, g);
      }
      lanes[l].r[m] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
  }
}

inline void run_mma(Thread* lanes, bool bf16) {
  float A[16][16], B[16][8], C[16][8];
  auto f = [bf16](uint32_t bits) { return bf16 ? bf16_to_float(static_cast<uint16_t>(bits)) : half_to_float(static_cast<uint16_t>(bits)); };
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const Thread& x = lanes[l];
    A[g][2 * t] = f(x.a[0]), A[g][2 * t + 1] = f(x.a[0] >> 16);
    A[g + 8][2 * t] = f(x.a[1]), A[g + 8][2 * t + 1] = f(x.a[1] >> 16);
    A[g][2 * t + 8] = f(x.a[2]), A[g][2 * t + 9] = f(x.a[2] >> 16);
    A[g + 8][2 * t + 8] = f(x.a[3]), A[g + 8][2 * t + 9] = f(x.a[3] >> 16);
    B[2 * t][g] = f(x.b[0]), B[2 * t + 1][g] = f(x.b[0] >> 16);
    B[2 * t + 8][g] = f(x.b[1]), B[2 * t + 9][g] = f(x.b[1] >> 16);
    C[g][2 * t] = x.c[0], C[g][2 * t + 1] = x.c[1], C[g + 8][2 * t] = x.c[2], C[g + 8][2 * t + 1] = x.c[3];
  }
  float D[16][8];
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      float s = C[i][j];
      for (int k = 0; k < 16; ++k) s += A[i][k] * B[k][j];
      D[i][j] = s;
    }
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    Thread& x = lanes[l];
    x.c[0] = D[g][2 * t], x.c[1] = D[g][2 * t + 1], x.c[2] = D[g + 8][2 * t], x.c[3] = D[g + 8][2 * t + 1];
  }
}

inline void run_collective(Thread* lanes, Op op, int warp) {
  ++emu().collectives;
  for (int l = 1; l < 32; ++l) {
    if (lanes[l].op != op) {
      throw EmuError("warp " + std::to_string(warp) + ": lane 0 at " + op_name(op) + ", lane " + std::to_string(l) +
                     " at " + op_name(lanes[l].op));
    }
  }
  switch (op) {
    case Op::syncwarp: break;
    case Op::shfl:
      for (int l = 0; l < 32; ++l) {
        if (lanes[l].xor_mask != lanes[0].xor_mask) throw EmuError("__shfl_xor_sync: lanes pass different masks");
        lanes[l].fout = lanes[l ^ lanes[0].xor_mask].fin;
      }
      break;
    case Op::ldsm_x4: run_ldmatrix(lanes, 4, false); break;
    case Op::ldsm_x4_trans: run_ldmatrix(lanes, 4, true); break;
    case Op::ldsm_x2: run_ldmatrix(lanes, 2, false); break;
    case Op::mma_f16: run_mma(lanes, false); break;
    case Op::mma_bf16: run_mma(lanes, true); break;
    case Op::none: throw EmuError("collective without an operation");
  }
  for (int l = 0; l < 32; ++l) lanes[l].wait = Wait::none;
}

inline void fiber_entry() {
  Emulator& e = emu();
  e.body();
  Thread& t = e.threads[e.current];
  t.done = true;
  if (!t.copies.empty()) fail("a thread exited with cp.async copies in flight");
  // uc_link returns to the scheduler
}

}  // namespace zd_emu

// The kernels' `extern __shared__ unsigned char smem_raw[]` (declared at block scope in this namespace).
namespace zerodiff::kernels::cuda::flash {
alignas(16) inline unsigned char smem_raw[256 * 1024];
}  // namespace zerodiff::kernels::cuda::flash

namespace zd_emu {

// Runs one CTA of `threads` threads (a multiple of 32) to completion. `body` is the kernel call; blockIdx is
// `block`; the CTA gets `smem_bytes` of dynamic shared memory, filled with 0xFF.
inline void run_block(const std::function<void()>& body, int threads, unsigned block, size_t smem_bytes) {
  Emulator& e = emu();
  if (threads % 32 != 0) throw EmuError("block size must be a multiple of 32");
  e.body = body;
  e.block_idx = Dim3{block, 0, 0};
  e.error.clear();
  if (smem_bytes > sizeof(zerodiff::kernels::cuda::flash::smem_raw)) throw EmuError("too much shared memory");
  e.smem = zerodiff::kernels::cuda::flash::smem_raw;
  std::memset(e.smem, 0xff, smem_bytes);
  e.smem_bytes = smem_bytes;
  e.threads.assign(static_cast<size_t>(threads), Thread{});
  for (Thread& t : e.threads) {
    t.stack.resize(128 * 1024);
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = t.stack.data();
    t.ctx.uc_stack.ss_size = t.stack.size();
    t.ctx.uc_link = &e.main_ctx;
    makecontext(&t.ctx, fiber_entry, 0);
  }
  const int warps = threads / 32;
  std::vector<int> ready, runnable;
  auto land_random_copy = [&e, threads] {
    if (e.rng() % 4 != 0) return;
    Thread& t = e.threads[e.rng() % static_cast<unsigned>(threads)];
    if (t.copies.empty()) return;
    const size_t k = e.rng() % t.copies.size();
    land(t.copies[k]);
    t.copies.erase(t.copies.begin() + static_cast<std::ptrdiff_t>(k));
  };
  // One step of warp w: run one of its runnable lanes until it yields, or complete the collective all 32 lanes
  // wait at. False when the warp cannot move (done, at __syncthreads, or partly at a collective).
  auto step = [&](int w) {
    Thread* lanes = &e.threads[static_cast<size_t>(w) * 32];
    runnable.clear();
    int at_warp = 0;
    for (int l = 0; l < 32; ++l) {
      if (lanes[l].done) continue;
      if (lanes[l].wait == Wait::none) runnable.push_back(w * 32 + l);
      at_warp += lanes[l].wait == Wait::warp;
    }
    if (!runnable.empty()) {
      const int i = runnable[e.rng() % runnable.size()];
      e.current = i;
      e.thread_idx = Dim3{static_cast<unsigned>(i), 0, 0};
      swapcontext(&e.main_ctx, &e.threads[static_cast<size_t>(i)].ctx);
      e.current = -1;
      if (!e.error.empty()) throw EmuError(e.error);
      return true;
    }
    if (at_warp == 32) {
      run_collective(lanes, lanes[0].op, w);
      return true;
    }
    if (at_warp > 0) {
      throw EmuError("warp " + std::to_string(w) + ": " + std::to_string(at_warp) +
                     " lanes wait at a warp collective while the others exited or wait at __syncthreads");
    }
    return false;
  };
  // Warps run in bursts of random length in random order, so that one warp can get far ahead of another
  // between two barriers (as on hardware): a missing __syncthreads or cp.async wait then shows.
  for (;;) {
    ready.clear();
    for (int w = 0; w < warps; ++w) {
      const Thread* lanes = &e.threads[static_cast<size_t>(w) * 32];
      bool movable = false;
      int at_warp = 0;
      for (int l = 0; l < 32; ++l) {
        movable |= !lanes[l].done && lanes[l].wait == Wait::none;
        at_warp += !lanes[l].done && lanes[l].wait == Wait::warp;
      }
      if (movable || at_warp == 32) ready.push_back(w);
    }
    if (!ready.empty()) {
      const int w = ready[e.rng() % ready.size()];
      const int burst = 1 + static_cast<int>(e.rng() % 2048);
      for (int i = 0; i < burst; ++i) {
        land_random_copy();
        if (!step(w)) break;
      }
      continue;
    }
    bool all_done = true, all_block = true, any_done = false;
    for (const Thread& t : e.threads) {
      all_done &= t.done;
      any_done |= t.done;
      all_block &= t.done || t.wait == Wait::block;
    }
    if (all_done) break;
    for (int w = 0; w < warps; ++w) step(w);  // reports a warp stuck half at a collective
    if (!all_block) throw EmuError("deadlock");
    if (any_done) throw EmuError("__syncthreads after some threads of the block exited");
    for (Thread& t : e.threads) t.wait = Wait::none;
  }
  e.threads.clear();
}

}  // namespace zd_emu

// ------------------------------------------------------------------ CUDA built-ins the kernels use

#define threadIdx (::zd_emu::emu().thread_idx)
#define blockIdx (::zd_emu::emu().block_idx)

inline void __syncthreads() { zd_emu::yield(zd_emu::Wait::block, zd_emu::Op::none); }
inline void __syncwarp(unsigned = 0xffffffffu) { zd_emu::yield(zd_emu::Wait::warp, zd_emu::Op::syncwarp); }
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  if (mask != 0xffffffffu) zd_emu::fail("__shfl_xor_sync: only full-warp masks are emulated");
  zd_emu::Thread& t = zd_emu::self();
  t.fin = v;
  t.xor_mask = lane_mask;
  zd_emu::yield(zd_emu::Wait::warp, zd_emu::Op::shfl);
  return zd_emu::self().fout;
}
inline float atomicAdd(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}
[[noreturn]] inline void __trap() { zd_emu::fail("__trap"); }

// ------------------------------------------------------------------ the primitives of flash_utils.h

namespace zerodiff::kernels::cuda::flash {

template <>
struct Elem<zd_emu::Half> {
  static uint32_t pack(float lo, float hi) {
    return zd_emu::float_to_half(lo) | (static_cast<uint32_t>(zd_emu::float_to_half(hi)) << 16);
  }
  static float to_float(uint16_t bits) { return zd_emu::half_to_float(bits); }
  static void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    zd_emu::Thread& t = zd_emu::self();
    std::memcpy(t.a, a, sizeof(t.a));
    t.b[0] = b0, t.b[1] = b1;
    std::memcpy(t.c, c, sizeof(t.c));
    zd_emu::yield(zd_emu::Wait::warp, zd_emu::Op::mma_f16);
    std::memcpy(c, zd_emu::self().c, sizeof(t.c));
  }
};

template <>
struct Elem<zd_emu::BFloat16> {
  static uint32_t pack(float lo, float hi) {
    return zd_emu::float_to_bf16(lo) | (static_cast<uint32_t>(zd_emu::float_to_bf16(hi)) << 16);
  }
  static float to_float(uint16_t bits) { return zd_emu::bf16_to_float(bits); }
  static void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    zd_emu::Thread& t = zd_emu::self();
    std::memcpy(t.a, a, sizeof(t.a));
    t.b[0] = b0, t.b[1] = b1;
    std::memcpy(t.c, c, sizeof(t.c));
    zd_emu::yield(zd_emu::Wait::warp, zd_emu::Op::mma_bf16);
    std::memcpy(c, zd_emu::self().c, sizeof(t.c));
  }
};

inline float exp2_approx(float x) { return std::exp2(x); }
inline void copy16(void* dst, const void* src) { std::memcpy(dst, src, 16); }
inline void cp_async_16(void* smem, const void* gmem, int src_bytes) { zd_emu::cp_async(smem, gmem, 16, src_bytes); }
inline void cp_async_4(void* smem, const void* gmem, int src_bytes) { zd_emu::cp_async(smem, gmem, 4, src_bytes); }
inline void cp_async_commit() { ++zd_emu::self().committed; }
template <int kPending>
inline void cp_async_wait() {
  zd_emu::cp_async_wait(kPending);
}

inline void ldmatrix_common(uint32_t* r, int n, const void* p, zd_emu::Op op) {
  zd_emu::self().addr = p;
  zd_emu::yield(zd_emu::Wait::warp, op);
  for (int i = 0; i < n; ++i) r[i] = zd_emu::self().r[i];
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ldmatrix_common(r, 4, p, zd_emu::Op::ldsm_x4); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  ldmatrix_common(r, 4, p, zd_emu::Op::ldsm_x4_trans);
}
inline void ldmatrix_x2(uint32_t (&r)[2], const void* p) { ldmatrix_common(r, 2, p, zd_emu::Op::ldsm_x2); }

}  // namespace zerodiff::kernels::cuda::flash
