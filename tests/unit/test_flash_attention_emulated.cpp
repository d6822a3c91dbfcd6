// The CUDA flash-attention kernels (kernels/cuda/flash_attn/flash_{fwd,bwd}_kernel.h) executed on the CPU by
// tests/unit/flash_cuda_emulator.h — the very kernel source, with the PTX primitives (mma.sync, ldmatrix,
// cp.async, shuffles, barriers) emulated per the PTX ISA — against a float64 reference on the same rounded
// inputs. This runs on every build, GPU or not; tests/gpu/test_flash_attention_cuda.cpp runs the compiled kernels.
//
// What it covers: every head-dim bucket (64, 128, 256) with D = 17, 40, 64, 80, 128, 160, 256; float16 and
// bfloat16; query and key tails; q, k, v and dout contiguous, transposed from [B, N, H, D] (16-byte cp.async
// path), with padded rows or a misaligned start (element-wise path); the backward split over query blocks (dK and
// dV through float32 atomics); block indices of a B·H = 65,536 grid. Every input and output buffer is surrounded
// by NaN guards and input padding is NaN, so a read outside the data or an output element left unwritten shows up
// as NaN; shared memory starts as NaN and asynchronous copies land at random moments before their wait.
// Tolerance: max |ours − ref| / max |ref| < 2e-2 per tensor (as the bfloat16 CPU test), lse 1e-4.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define ZD_EMU_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZD_EMU_UNDER_ASAN 1
#endif
#endif

// The emulator replaces flash_utils.h's PTX primitives; the path is relative to flash_utils.h.
#define ZD_FLASH_EMULATOR "../../../tests/unit/flash_cuda_emulator.h"
#include "../../kernels/cuda/flash_attn/flash_bwd_kernel.h"
#include "../../kernels/cuda/flash_attn/flash_fwd_kernel.h"

namespace {

namespace fl = zerodiff::kernels::cuda::flash;

constexpr int64_t kGuard = 64;  // guard elements before and after every buffer
constexpr uint16_t kNaN16 = 0xffff;

enum class Layout {
  contiguous,   // [B, H, N, D]
  transposed,   // a [B, N, H, D] buffer viewed as [B, H, N, D] (rows strided by H·D)
  padded_rows,  // rows of D + 3 elements (element-wise loads: the row stride is not a multiple of 8)
  misaligned,   // contiguous, starting one element past a 16-byte boundary (element-wise loads)
};

const char* name(Layout l) {
  switch (l) {
    case Layout::contiguous: return "contiguous";
    case Layout::transposed: return "transposed";
    case Layout::padded_rows: return "padded_rows";
    case Layout::misaligned: return "misaligned";
  }
  return "?";
}

// A [B, H, N, D] 16-bit tensor inside a NaN-filled buffer (guards and padding are NaN).
struct Tensor16 {
  std::vector<uint16_t> store;
  int64_t offset = 0, B = 0, H = 0, N = 0, D = 0, sb = 0, sh = 0, sn = 0;
  int64_t index(int64_t b, int64_t h, int64_t n, int64_t d) const { return offset + b * sb + h * sh + n * sn + d; }
  uint16_t* data() { return store.data() + offset; }
  // 16-byte vector access allowed (the rule of flash_api.cpp).
  bool vec() const {
    if (D % 8 != 0) return false;
    if (reinterpret_cast<uintptr_t>(store.data() + offset) % 16 != 0) return false;
    return (B <= 1 || sb % 8 == 0) && (H <= 1 || sh % 8 == 0) && (N <= 1 || sn % 8 == 0);
  }
  bool guards_intact() const {
    for (int64_t i = 0; i < kGuard; ++i) {
      if (store[i] != kNaN16 || store[store.size() - 1 - i] != kNaN16) return false;
    }
    return true;
  }
};

Tensor16 make16(int64_t B, int64_t H, int64_t N, int64_t D, Layout layout) {
  Tensor16 t;
  t.B = B, t.H = H, t.N = N, t.D = D;
  int64_t size = B * H * N * D;
  switch (layout) {
    case Layout::contiguous:
    case Layout::misaligned:
      t.sb = H * N * D, t.sh = N * D, t.sn = D;
      break;
    case Layout::transposed:
      t.sb = N * H * D, t.sh = D, t.sn = H * D;
      break;
    case Layout::padded_rows:
      t.sb = H * N * (D + 3), t.sh = N * (D + 3), t.sn = D + 3;
      size = B * H * N * (D + 3);
      break;
  }
  t.offset = kGuard + (layout == Layout::misaligned ? 1 : 0);
  t.store.assign(static_cast<size_t>(2 * kGuard + size + 1), kNaN16);
  return t;
}

// A float32 buffer of n values with NaN guards.
struct TensorF {
  std::vector<float> store;
  float* data() { return store.data() + kGuard; }
  float at(int64_t i) const { return store[static_cast<size_t>(kGuard + i)]; }
  bool guards_intact() const {
    for (int64_t i = 0; i < kGuard; ++i) {
      if (!std::isnan(store[i]) || !std::isnan(store[store.size() - 1 - i])) return false;
    }
    return true;
  }
};

TensorF makef(int64_t n, float init) {
  TensorF t;
  t.store.assign(static_cast<size_t>(2 * kGuard + n), NAN);
  std::fill(t.store.begin() + kGuard, t.store.begin() + kGuard + n, init);
  return t;
}

struct Problem {
  int B, H, Nq, Nkv, D;
  bool bf16;
  Layout lq, lk, lv, ldo;
  int num_sms = 132;
  std::string describe() const {
    return "B=" + std::to_string(B) + " H=" + std::to_string(H) + " Nq=" + std::to_string(Nq) + " Nkv=" +
           std::to_string(Nkv) + " D=" + std::to_string(D) + (bf16 ? " bf16" : " fp16") + " q " + name(lq) + ", k " +
           name(lk) + ", v " + name(lv) + ", dout " + name(ldo) + ", " + std::to_string(num_sms) + " SMs";
  }
};

double to_double(uint16_t bits, bool bf16) {
  return bf16 ? zd_emu::bf16_to_float(bits) : zd_emu::half_to_float(bits);
}
uint16_t from_float(float x, bool bf16) { return bf16 ? zd_emu::float_to_bf16(x) : zd_emu::float_to_half(x); }

void fill_random(Tensor16& t, bool bf16, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  for (int64_t b = 0; b < t.B; ++b)
    for (int64_t h = 0; h < t.H; ++h)
      for (int64_t n = 0; n < t.N; ++n)
        for (int64_t d = 0; d < t.D; ++d) t.store[t.index(b, h, n, d)] = from_float(normal(rng), bf16);
}

void set_strides(const Tensor16& t, int64_t& sb, int64_t& sh, int64_t& sn) { sb = t.sb, sh = t.sh, sn = t.sn; }

// The inputs, outputs and parameters of one problem, as flash_api.cpp would set them up.
struct EmuRun {
  Problem pr;
  Tensor16 q, k, v, dout, out, dk, dv;
  TensorF lse, dsum, dq_accum, dk_accum, dv_accum;
  fl::FlashParams p;
  double scale;

  explicit EmuRun(const Problem& problem, unsigned seed = 1) : pr(problem) {
    std::mt19937 rng(seed);
    q = make16(pr.B, pr.H, pr.Nq, pr.D, pr.lq);
    k = make16(pr.B, pr.H, pr.Nkv, pr.D, pr.lk);
    v = make16(pr.B, pr.H, pr.Nkv, pr.D, pr.lv);
    dout = make16(pr.B, pr.H, pr.Nq, pr.D, pr.ldo);
    for (Tensor16* t : {&q, &k, &v, &dout}) fill_random(*t, pr.bf16, rng);
    out = make16(pr.B, pr.H, pr.Nq, pr.D, Layout::contiguous);
    dk = make16(pr.B, pr.H, pr.Nkv, pr.D, Layout::contiguous);
    dv = make16(pr.B, pr.H, pr.Nkv, pr.D, Layout::contiguous);
    const int64_t bh = static_cast<int64_t>(pr.B) * pr.H;
    lse = makef(bh * pr.Nq, NAN);
    dsum = makef(bh * pr.Nq, NAN);
    dq_accum = makef(bh * pr.Nq * pr.D, 0.0f);
    dk_accum = makef(bh * pr.Nkv * pr.D, 0.0f);
    dv_accum = makef(bh * pr.Nkv * pr.D, 0.0f);
    scale = 1.0 / std::sqrt(static_cast<double>(pr.D));

    p.q = q.data(), p.k = k.data(), p.v = v.data(), p.o = out.data(), p.dout = dout.data();
    set_strides(q, p.q_batch_stride, p.q_head_stride, p.q_row_stride);
    set_strides(k, p.k_batch_stride, p.k_head_stride, p.k_row_stride);
    set_strides(v, p.v_batch_stride, p.v_head_stride, p.v_row_stride);
    set_strides(out, p.o_batch_stride, p.o_head_stride, p.o_row_stride);
    set_strides(dout, p.do_batch_stride, p.do_head_stride, p.do_row_stride);
    set_strides(dk, p.dk_batch_stride, p.dk_head_stride, p.dk_row_stride);
    set_strides(dv, p.dv_batch_stride, p.dv_head_stride, p.dv_row_stride);
    p.dk = dk.data(), p.dv = dv.data();
    p.lse = lse.data(), p.dsum = dsum.data(), p.dq_accum = dq_accum.data();
    p.dk_accum = dk_accum.data(), p.dv_accum = dv_accum.data();
    p.batch = pr.B, p.heads = pr.H, p.seqlen_q = pr.Nq, p.seqlen_k = pr.Nkv, p.head_dim = pr.D;
    p.scale = static_cast<float>(scale);
    p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
    p.q_vec = q.vec(), p.k_vec = k.vec(), p.v_vec = v.vec(), p.o_vec = out.vec(), p.do_vec = dout.vec();
    p.dk_vec = dk.vec(), p.dv_vec = dv.vec();
    p.dtype = pr.bf16 ? fl::FlashDtype::kBFloat16 : fl::FlashDtype::kFloat16;
    const int bwd_bn = fl::bwd_block_n(pr.D), bwd_bm = fl::bwd_block_m(pr.D);
    p.splits = fl::bwd_splits((pr.Nkv + bwd_bn - 1) / bwd_bn, bh, (pr.Nq + bwd_bm - 1) / bwd_bm, pr.num_sms);
  }

  // The buffers cp.async may read: exactly the four inputs and lse / D (checked by the emulator).
  void register_inputs() const {
    auto range = [](const auto& v) {
      return zd_emu::Range{reinterpret_cast<const unsigned char*>(v.data()),
                           reinterpret_cast<const unsigned char*>(v.data() + v.size())};
    };
    zd_emu::emu().globals = {range(q.store), range(k.store), range(v.store), range(dout.store), range(lse.store),
                             range(dsum.store)};
  }
};

// ------------------------------------------------------------------ launches, as the launch templates do them

// `only(bh)`: run the blocks of these heads only (the big-grid test); empty = all.
using HeadFilter = std::function<bool(int64_t)>;

template <class T, int kHD>
void forward_t(const fl::FlashParams& p, const HeadFilter& only) {
  using Traits = fl::FwdTraits<T, kHD>;
  const int64_t m_blocks = (p.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM;
  const int64_t grid = m_blocks * p.batch * p.heads;
  for (int64_t blk = 0; blk < grid; ++blk) {
    if (only && !only(blk / m_blocks)) continue;
    zd_emu::run_block([&] { fl::flash_fwd_kernel<Traits>(p); }, Traits::kThreads, static_cast<unsigned>(blk),
                      Traits::kSmemBytes);
  }
}

template <class T, int kHD>
void backward_t(const fl::FlashParams& p, const HeadFilter& only) {
  using Traits = fl::BwdTraits<T, kHD>;
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads * p.seqlen_q;
  for (int64_t blk = 0; blk < (rows + 7) / 8; ++blk) {
    if (only && !only(blk * 8 / p.seqlen_q) && !only(std::min(rows - 1, blk * 8 + 7) / p.seqlen_q)) continue;
    zd_emu::run_block([&] { fl::flash_bwd_dsum_kernel<Traits>(p); }, 256, static_cast<unsigned>(blk), 0);
  }
  const int64_t n_blocks = (p.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN;
  const int64_t grid = n_blocks * p.splits * p.batch * p.heads;
  for (int64_t blk = 0; blk < grid; ++blk) {
    if (only && !only(blk / n_blocks / p.splits)) continue;
    zd_emu::run_block([&] { fl::flash_bwd_kernel<Traits>(p); }, Traits::kThreads, static_cast<unsigned>(blk),
                      Traits::kSmemBytes);
  }
}

template <class T>
void dispatch(const fl::FlashParams& p, bool backward, const HeadFilter& only) {
  switch (fl::head_dim_bucket(p.head_dim)) {
    case 64: return backward ? backward_t<T, 64>(p, only) : forward_t<T, 64>(p, only);
    case 128: return backward ? backward_t<T, 128>(p, only) : forward_t<T, 128>(p, only);
    default: return backward ? backward_t<T, 256>(p, only) : forward_t<T, 256>(p, only);
  }
}

void launch(EmuRun& r, bool backward, const HeadFilter& only = {}) {
  r.register_inputs();
  if (r.pr.bf16) {
    dispatch<zd_emu::BFloat16>(r.p, backward, only);
  } else {
    dispatch<zd_emu::Half>(r.p, backward, only);
  }
  // What flash_api.cpp does after the backward kernels: with splits, dk and dv from their float32 accumulators
  // (dq is compared in float32, straight from dq_accum).
  if (backward) {
    const Problem& pr = r.pr;
    if (r.p.splits > 1) {
      for (int64_t i = 0; i < int64_t{pr.B} * pr.H * pr.Nkv * pr.D; ++i) {
        r.dk.data()[i] = from_float(r.dk_accum.at(i), pr.bf16);
        r.dv.data()[i] = from_float(r.dv_accum.at(i), pr.bf16);
      }
    }
  }
}

// ------------------------------------------------------------------ float64 reference and comparison

struct HeadRef {
  std::vector<double> out, lse, dq, dk, dv;  // [Nq, D], [Nq], [Nq, D], [Nkv, D], [Nkv, D]
};

HeadRef reference(const EmuRun& r, int64_t b, int64_t h) {
  const Problem& pr = r.pr;
  const int64_t nq = pr.Nq, nk = pr.Nkv, D = pr.D;
  auto val = [&](const Tensor16& t, int64_t n, int64_t d) { return to_double(t.store[t.index(b, h, n, d)], pr.bf16); };
  HeadRef ref;
  ref.out.assign(nq * D, 0.0), ref.lse.assign(nq, 0.0), ref.dq.assign(nq * D, 0.0);
  ref.dk.assign(nk * D, 0.0), ref.dv.assign(nk * D, 0.0);
  std::vector<double> P(nk), dP(nk);
  for (int64_t i = 0; i < nq; ++i) {
    double mx = -INFINITY;
    for (int64_t j = 0; j < nk; ++j) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += val(r.q, i, d) * val(r.k, j, d);
      P[j] = s * r.scale;
      mx = std::max(mx, P[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j < nk; ++j) sum += std::exp(P[j] - mx);
    ref.lse[i] = mx + std::log(sum);
    for (int64_t j = 0; j < nk; ++j) P[j] = std::exp(P[j] - ref.lse[i]);
    for (int64_t d = 0; d < D; ++d) {
      double o = 0;
      for (int64_t j = 0; j < nk; ++j) o += P[j] * val(r.v, j, d);
      ref.out[i * D + d] = o;
    }
    // dP = dO Vᵀ, dS = P ∘ (dP − Σ P ∘ dP), dQ = scale dS K, dK += scale dSᵀ Q, dV += Pᵀ dO.
    double di = 0;
    for (int64_t j = 0; j < nk; ++j) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += val(r.dout, i, d) * val(r.v, j, d);
      dP[j] = s;
      di += P[j] * s;
    }
    for (int64_t j = 0; j < nk; ++j) {
      const double ds = P[j] * (dP[j] - di);
      for (int64_t d = 0; d < D; ++d) {
        ref.dq[i * D + d] += r.scale * ds * val(r.k, j, d);
        ref.dk[j * D + d] += r.scale * ds * val(r.q, i, d);
        ref.dv[j * D + d] += P[j] * val(r.dout, i, d);
      }
    }
  }
  return ref;
}

struct MaxErr {
  double err = 0, scale = 0;
  bool nan = false;
  void add(double ours, double ref) {
    if (std::isnan(ours)) nan = true;
    err = std::max(err, std::abs(ours - ref));
    scale = std::max(scale, std::abs(ref));
  }
  double rel() const { return nan ? INFINITY : err / (scale > 0 ? scale : 1.0); }
};

// Compares the heads selected by `only` (all when empty) with the reference.
void check(EmuRun& r, bool backward, const HeadFilter& only = {}) {
  const Problem& pr = r.pr;
  SCOPED_TRACE(pr.describe());
  MaxErr e_out, e_lse, e_dq, e_dk, e_dv;
  const int64_t D = pr.D;
  for (int64_t b = 0; b < pr.B; ++b) {
    for (int64_t h = 0; h < pr.H; ++h) {
      const int64_t bh = b * pr.H + h;
      if (only && !only(bh)) continue;
      const HeadRef ref = reference(r, b, h);
      for (int64_t i = 0; i < pr.Nq; ++i) {
        e_lse.add(r.lse.at(bh * pr.Nq + i), ref.lse[i]);
        for (int64_t d = 0; d < D; ++d) {
          e_out.add(to_double(r.out.store[r.out.index(b, h, i, d)], pr.bf16), ref.out[i * D + d]);
          if (backward) e_dq.add(r.dq_accum.at((bh * pr.Nq + i) * D + d), ref.dq[i * D + d]);
        }
      }
      if (!backward) continue;
      for (int64_t j = 0; j < pr.Nkv; ++j) {
        for (int64_t d = 0; d < D; ++d) {
          e_dk.add(to_double(r.dk.store[r.dk.index(b, h, j, d)], pr.bf16), ref.dk[j * D + d]);
          e_dv.add(to_double(r.dv.store[r.dv.index(b, h, j, d)], pr.bf16), ref.dv[j * D + d]);
        }
      }
    }
  }
  std::printf("[flash-emu] %-100s out %.2e lse %.2e", pr.describe().c_str(), e_out.rel(), e_lse.rel());
  if (backward) std::printf(" dq %.2e dk %.2e dv %.2e (splits %d)", e_dq.rel(), e_dk.rel(), e_dv.rel(), r.p.splits);
  std::printf("\n");
  EXPECT_LT(e_out.rel(), 2e-2);
  EXPECT_LT(e_lse.rel(), 1e-4);
  if (backward) {
    EXPECT_LT(e_dq.rel(), 2e-2);
    EXPECT_LT(e_dk.rel(), 2e-2);
    EXPECT_LT(e_dv.rel(), 2e-2);
  }
  for (const Tensor16* t : {&r.q, &r.k, &r.v, &r.dout, &r.out, &r.dk, &r.dv}) EXPECT_TRUE(t->guards_intact());
  for (const TensorF* t : {&r.lse, &r.dsum, &r.dq_accum, &r.dk_accum, &r.dv_accum}) EXPECT_TRUE(t->guards_intact());
}

void run_case(const Problem& pr) {
  EmuRun r(pr);
  launch(r, false);
  launch(r, true);
  check(r, true);
}

bool skip_reason(std::string& why) {
#ifdef ZD_EMU_UNDER_ASAN
  why = "the fiber emulator (ucontext) is not ASan-aware";
  return true;
#else
  (void)why;
  return false;
#endif
}

#define ZD_EMU_SKIP_IF_NEEDED()              \
  do {                                       \
    std::string why_;                        \
    if (skip_reason(why_)) GTEST_SKIP() << why_; \
  } while (0)

using L = Layout;

}  // namespace

// The SM count steers the backward split (fl::bwd_splits): 1 SM never splits, so one CTA loops over every query
// block of its key block (prefetching the next one during phase 3); 132 SMs split small problems into one query
// block per CTA; 3 SMs give splits of one and of two query blocks.
TEST(FlashAttentionEmulated, Bucket64) {
  ZD_EMU_SKIP_IF_NEEDED();
  run_case({1, 2, 70, 77, 40, false, L::transposed, L::contiguous, L::padded_rows, L::misaligned});
  run_case({1, 2, 200, 77, 40, true, L::transposed, L::transposed, L::transposed, L::transposed, 1});
  run_case({2, 1, 1, 77, 64, true, L::contiguous, L::transposed, L::transposed, L::transposed});
  run_case({1, 1, 20, 33, 17, false, L::padded_rows, L::misaligned, L::contiguous, L::contiguous});
}

TEST(FlashAttentionEmulated, Bucket128) {
  ZD_EMU_SKIP_IF_NEEDED();
  run_case({1, 1, 130, 100, 80, false, L::padded_rows, L::transposed, L::transposed, L::contiguous});
  run_case({1, 1, 130, 100, 80, true, L::transposed, L::padded_rows, L::contiguous, L::transposed, 1});
  run_case({1, 2, 64, 64, 128, true, L::contiguous, L::contiguous, L::misaligned, L::transposed});
}

TEST(FlashAttentionEmulated, Bucket256) {
  ZD_EMU_SKIP_IF_NEEDED();
  run_case({1, 1, 40, 77, 160, true, L::transposed, L::transposed, L::transposed, L::padded_rows});
  run_case({1, 1, 100, 77, 160, false, L::transposed, L::contiguous, L::transposed, L::misaligned, 1});
  run_case({1, 1, 33, 40, 256, false, L::contiguous, L::padded_rows, L::contiguous, L::transposed});
}

// Few key blocks per head: the query blocks are split over CTAs and dK, dV go through float32 atomics.
TEST(FlashAttentionEmulated, BackwardSplitsQueryBlocks) {
  ZD_EMU_SKIP_IF_NEEDED();
  run_case({1, 1, 200, 77, 64, false, L::transposed, L::transposed, L::transposed, L::contiguous, 8});
  run_case({1, 1, 300, 77, 40, true, L::transposed, L::contiguous, L::contiguous, L::transposed, 3});
  run_case({1, 1, 100, 20, 160, true, L::contiguous, L::contiguous, L::contiguous, L::transposed, 8});
}

// The forward pass does not depend on how warps interleave (no atomics there): bitwise equal across schedules.
TEST(FlashAttentionEmulated, ForwardIsIndependentOfTheSchedule) {
  ZD_EMU_SKIP_IF_NEEDED();
  const Problem pr{1, 1, 70, 90, 80, true, L::transposed, L::contiguous, L::contiguous, L::contiguous};
  EmuRun a(pr), b(pr);
  zd_emu::emu().rng.seed(1);
  launch(a, false);
  zd_emu::emu().rng.seed(2);
  launch(b, false);
  EXPECT_EQ(a.out.store, b.out.store);
  EXPECT_EQ(std::memcmp(a.lse.store.data() + kGuard, b.lse.store.data() + kGuard, 70 * sizeof(float)), 0);
}

// B·H = 65,536: the flattened grid decodes (batch, head, block) for the first, a middle and the last head.
TEST(FlashAttentionEmulated, GridOfSixtyFiveThousandHeads) {
  ZD_EMU_SKIP_IF_NEEDED();
  EmuRun r({8192, 8, 20, 9, 16, false, L::transposed, L::contiguous, L::contiguous, L::transposed});
  const HeadFilter only = [](int64_t bh) { return bh == 0 || bh == 40001 || bh == 65535; };
  launch(r, false, only);
  launch(r, true, only);
  check(r, true, only);
}
