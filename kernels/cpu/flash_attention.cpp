// CPU kernel: fused flash attention, forward and backward (zerodiff/kernels/FlashAttention.h), following
// FlashAttention-2 (Dao 2023): Algorithm 1 (forward, online softmax over key blocks) and Algorithm 2 (backward,
// P recomputed per tile from the saved log-sum-exp, D_i = rowsum(dO ∘ O), dS = P ∘ (dP − D_i)).
// Reference: zerodiff::nn::attention_math (matmul, softmax, matmul); tests/unit/test_flash_attention.cpp
// compares both passes against it (and its autograd gradients).
//
// Design rules:
//  * Two kinds of work per tile. The GEMMs (S = Q Kᵀ and O += P V forward, five per tile backward) are plain
//    C = A·B (+C) calls to oneDNN's brgemm micro-kernels through at::native::cpublas::brgemm (fallbacks: the
//    bundled BLAS's sgemm_, then tile-level at::addmm_; see pick_backend). So that no GEMM needs a transposed
//    operand, Kᵀ (and in the backward pass Qᵀ and dOᵀ) of one head is packed into per-thread scratch once per
//    head, and the backward pass works on transposed tiles (keys × queries) and accumulates dQᵀ. The softmax
//    and elementwise parts (row max, exp, row sums, dS) are Highway code (foreach_target: compiled once per
//    SIMD target, dispatched at run time), one pass over a tile row each.
//  * Scores exist only as one (query block × key block) float32 tile per thread; memory is linear in N.
//  * GEMMs read float32 rows with unit stride along D and any row stride. float32 inputs with a unit-stride
//    last dim are used in place; anything else (bfloat16, a strided last dim) is widened / copied one head at
//    a time into per-thread scratch (once per head and thread, not once per tile, and never the whole tensor).
//  * Per-thread scratch is allocated with at::empty once per parallel chunk (so allocator statistics see it):
//    O(D · N) floats per thread for the packed head plus a few tiles.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/flash_attention.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <cmath>
#include <cstdint>
#include <limits>

HWY_BEFORE_NAMESPACE();
namespace zerodiff::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Tile rows are in our own scratch buffers, padded by at least one vector, so the masked tail loads and stores
// below never leave the allocation even on targets whose MaskedLoad reads the whole vector.

// One online-softmax step of Algorithm 1 on a [rows × cols] tile of raw scores s = Q_i K_jᵀ (row stride ld):
//   m_new = max(m, scale · rowmax(s)); alpha = exp(m − m_new); s = exp(scale · s − m_new);
//   l = alpha · l + rowsum(s); m = m_new.
// m and l are in scaled units. alpha[r] (0 on the first block, where m = −inf) rescales the output accumulator.
void SoftmaxTileForward(float* HWY_RESTRICT s, int64_t rows, int64_t cols, int64_t ld, float scale,
                        float* HWY_RESTRICT m, float* HWY_RESTRICT l, float* HWY_RESTRICT alpha) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t full = cols - cols % lanes;
  const auto tail = hn::FirstN(d, static_cast<size_t>(cols - full));
  const auto neg_inf = hn::Set(d, -std::numeric_limits<float>::infinity());
  const auto vs = hn::Set(d, scale);
  for (int64_t r = 0; r < rows; ++r) {
    float* HWY_RESTRICT row = s + r * ld;
    auto vmax0 = neg_inf, vmax1 = neg_inf;
    int64_t c = 0;
    for (; c + 2 * lanes <= full; c += 2 * lanes) {
      vmax0 = hn::Max(vmax0, hn::Mul(hn::LoadU(d, row + c), vs));
      vmax1 = hn::Max(vmax1, hn::Mul(hn::LoadU(d, row + c + lanes), vs));
    }
    for (; c < full; c += lanes) vmax0 = hn::Max(vmax0, hn::Mul(hn::LoadU(d, row + c), vs));
    if (full < cols) {
      vmax1 = hn::Max(vmax1, hn::IfThenElse(tail, hn::Mul(hn::MaskedLoad(tail, d, row + full), vs), neg_inf));
    }
    const float row_max = hn::GetLane(hn::MaxOfLanes(d, hn::Max(vmax0, vmax1)));
    const float m_old = m[r];
    const float m_new = m_old > row_max ? m_old : row_max;
    const float a = m_old == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(m_old - m_new);
    const auto vm = hn::Set(d, m_new);
    auto sum0 = hn::Zero(d), sum1 = hn::Zero(d);
    c = 0;
    for (; c + 2 * lanes <= full; c += 2 * lanes) {
      const auto e0 = hn::Exp(d, hn::MulSub(hn::LoadU(d, row + c), vs, vm));
      const auto e1 = hn::Exp(d, hn::MulSub(hn::LoadU(d, row + c + lanes), vs, vm));
      hn::StoreU(e0, d, row + c);
      hn::StoreU(e1, d, row + c + lanes);
      sum0 = hn::Add(sum0, e0);
      sum1 = hn::Add(sum1, e1);
    }
    for (; c < full; c += lanes) {
      const auto e = hn::Exp(d, hn::MulSub(hn::LoadU(d, row + c), vs, vm));
      hn::StoreU(e, d, row + c);
      sum0 = hn::Add(sum0, e);
    }
    if (full < cols) {
      const auto e = hn::IfThenElseZero(tail, hn::Exp(d, hn::MulSub(hn::MaskedLoad(tail, d, row + full), vs, vm)));
      hn::BlendedStore(e, tail, d, row + full);
      sum1 = hn::Add(sum1, e);
    }
    l[r] = l[r] * a + hn::GetLane(hn::SumOfLanes(d, hn::Add(sum0, sum1)));
    m[r] = m_new;
    alpha[r] = a;
  }
}

// The backward pass works on transposed tiles (key rows × query columns), so that every GEMM of Algorithm 2 is
// a plain C = A·B. lse and di are per query, i.e. per column; both are padded scratch copies.

// Step 1: Pᵀ = exp(scale · Sᵀ − lse) in place on a [rows × cols] tile of raw transposed scores K_j Q_iᵀ.
void ProbsTileT(float* HWY_RESTRICT st, int64_t rows, int64_t cols, int64_t ld, float scale,
                const float* HWY_RESTRICT lse) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t full = cols - cols % lanes;
  const auto tail = hn::FirstN(d, static_cast<size_t>(cols - full));
  const auto vs = hn::Set(d, scale);
  for (int64_t r = 0; r < rows; ++r) {
    float* HWY_RESTRICT row = st + r * ld;
    int64_t c = 0;
    for (; c < full; c += lanes) {
      hn::StoreU(hn::Exp(d, hn::MulSub(hn::LoadU(d, row + c), vs, hn::LoadU(d, lse + c))), d, row + c);
    }
    if (full < cols) {
      const auto x = hn::MulSub(hn::MaskedLoad(tail, d, row + full), vs, hn::LoadU(d, lse + full));
      hn::BlendedStore(hn::Exp(d, x), tail, d, row + full);
    }
  }
}

// Step 2: dSᵀ = scale · Pᵀ ∘ (dPᵀ − D) in place on the dPᵀ tile (both [rows × cols], row stride ld; D per
// column). The softmax scale of ∂S/∂(q kᵀ) is folded in here, so the dK and dQ GEMMs need no alpha.
void GradScoresTileT(float* HWY_RESTRICT dpt, const float* HWY_RESTRICT pt, int64_t rows, int64_t cols, int64_t ld,
                     float scale, const float* HWY_RESTRICT di) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t full = cols - cols % lanes;
  const auto tail = hn::FirstN(d, static_cast<size_t>(cols - full));
  const auto vs = hn::Set(d, scale);
  for (int64_t r = 0; r < rows; ++r) {
    float* HWY_RESTRICT drow = dpt + r * ld;
    const float* HWY_RESTRICT prow = pt + r * ld;
    int64_t c = 0;
    for (; c < full; c += lanes) {
      const auto g = hn::Sub(hn::LoadU(d, drow + c), hn::LoadU(d, di + c));
      hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(d, prow + c), vs), g), d, drow + c);
    }
    if (full < cols) {
      const auto g = hn::Sub(hn::MaskedLoad(tail, d, drow + full), hn::LoadU(d, di + full));
      hn::BlendedStore(hn::Mul(hn::Mul(hn::MaskedLoad(tail, d, prow + full), vs), g), tail, d, drow + full);
    }
  }
}

// out[r] = Σ_c a[r, c] · b[r, c] for `rows` rows of `cols` floats (row strides lda, ldb): D_i = rowsum(dO ∘ O).
// These rows may be the caller's tensors, so the tail is scalar (no read past a row's end).
void RowDots(const float* HWY_RESTRICT a, int64_t lda, const float* HWY_RESTRICT b, int64_t ldb, int64_t rows,
             int64_t cols, float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = 0; r < rows; ++r) {
    const float* HWY_RESTRICT ar = a + r * lda;
    const float* HWY_RESTRICT br = b + r * ldb;
    auto acc = hn::Zero(d);
    int64_t c = 0;
    for (; c + lanes <= cols; c += lanes) acc = hn::MulAdd(hn::LoadU(d, ar + c), hn::LoadU(d, br + c), acc);
    float sum = hn::GetLane(hn::SumOfLanes(d, acc));
    for (; c < cols; ++c) sum += ar[c] * br[c];
    out[r] = sum;
  }
}

const char* FlashTargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace zerodiff::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <exception>

#include "kernels/common/flash_attention_shared.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/FlashAttention.h"

// The Fortran BLAS entry point of the BLAS linked into LibTorch (MKL on x86-64 wheels, OpenBLAS on aarch64).
// Weak: a LibTorch built without BLAS leaves it null and the kernels fall back to at::addmm_ on tile views.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));

namespace zerodiff::kernels {

HWY_EXPORT(SoftmaxTileForward);
HWY_EXPORT(ProbsTileT);
HWY_EXPORT(GradScoresTileT);
HWY_EXPORT(RowDots);
HWY_EXPORT(FlashTargetName);  // Highway's per-target namespaces are shared by every kernel: names are unique

namespace {

// Tile sizes. Forward: a 128 × 512 score tile (256 KiB) stays in L2 with the 128 × D accumulator while Q_i is
// reused over every key block. Backward: transposed tiles of 256 keys × 128 queries (Pᵀ and dPᵀ/dSᵀ, 128 KiB
// each) plus K_j, V_j, dK_j, dV_j; the head's packed Qᵀ, dOᵀ, dQᵀ stream through.
constexpr int64_t kFwdBlockQ = 128;
constexpr int64_t kFwdBlockK = 512;
constexpr int64_t kBwdBlockQ = 128;
constexpr int64_t kBwdBlockK = 256;
constexpr int64_t kPad = 64;  // floats after each scratch array (masked tail loads read at most one vector)

// Which library runs the tile GEMMs, chosen once.
enum class GemmBackend { brgemm, blas, aten };

// oneDNN's batch-reduce GEMM micro-kernels through ATen (at::native::cpublas::brgemm, exported by LibTorch):
// AVX-512 / AMX code generated for the CPU at hand. Measured 2.3–2.6× faster than MKL's sgemm at these tile
// shapes on an AMD EPYC (Zen 5), where MKL takes its generic path. A self-test on first use decides: if it
// throws or gets a small product wrong (a LibTorch without oneDNN's ukernel API, an unsupported CPU), the
// Fortran sgemm_ of the bundled BLAS is used, else tile-level at::addmm_. flash_attention_use_gemm_backend
// overrides the choice (tests run all three).
bool brgemm_works() {
  float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, -1, 2, 0.5f, -2, 3}, c[4] = {100, 100, 100, 100};
  try {
    at::native::cpublas::brgemm(2, 2, 3, 3, 2, 2, /*add_C=*/true, a, b, c, /*is_vnni=*/false);
    at::native::cpublas::brgemm_release(false);
  } catch (const std::exception&) {
    return false;
  }
  // c = 100 + A[2×3] · B[3×2] (small integers and halves: exact in float32)
  return c[0] == 100 + (1 * 1 + 2 * 2 + 3 * -2) && c[1] == 100 + (1 * -1 + 2 * 0.5f + 3 * 3) &&
         c[2] == 100 + (4 * 1 + 5 * 2 + 6 * -2) && c[3] == 100 + (4 * -1 + 5 * 0.5f + 6 * 3);
}

GemmBackend pick_backend() {
  if (brgemm_works()) return GemmBackend::brgemm;
  return sgemm_ != nullptr ? GemmBackend::blas : GemmBackend::aten;
}

std::atomic<GemmBackend>& backend_slot() {
  static std::atomic<GemmBackend> slot{pick_backend()};
  return slot;
}

GemmBackend backend() { return backend_slot().load(std::memory_order_relaxed); }

// Row-major C[M × N] = A[M × K] · B[K × N] (+ C when accumulate), leading dimensions lda, ldb, ldc, unit stride
// along rows (the brgemm contract: no transposes, no alpha).
void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
          int64_t ldc, bool accumulate) {
  const GemmBackend be = backend();
  if (be == GemmBackend::brgemm) {
    at::native::cpublas::brgemm(m, n, k, lda, ldb, ldc, accumulate, a, b, c, /*is_vnni=*/false);
    return;
  }
  if (be == GemmBackend::blas && std::max({m, n, k, lda, ldb, ldc}) <= INT_MAX) {
    // Row-major C = A B is column-major Cᵀ = Bᵀ Aᵀ, and a row-major X is a column-major Xᵀ.
    const int im = static_cast<int>(n), in = static_cast<int>(m), ik = static_cast<int>(k);
    const int ia = static_cast<int>(ldb), ib = static_cast<int>(lda), ic = static_cast<int>(ldc);
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    sgemm_("N", "N", &im, &in, &ik, &one, b, &ia, a, &ib, &beta, c, &ic);
    return;
  }
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  at::Tensor ct = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  ct.addmm_(at::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, opts),
            at::from_blob(const_cast<float*>(b), {k, n}, {ldb, 1}, opts), accumulate ? 1.0 : 0.0, 1.0);
}

// Releases the brgemm hardware context (AMX tiles) of this thread at the end of a parallel chunk.
void gemm_done() {
  if (backend() == GemmBackend::brgemm) at::native::cpublas::brgemm_release(false);
}

// A [B, H, N, D] input exactly as the caller passed it: float32 or bfloat16, any strides (in elements).
struct Src {
  const char* data = nullptr;
  bool bf16 = false;
  int64_t n = 0, d = 0, sb = 0, sh = 0, sn = 0, sd = 0;

  explicit Src(const at::Tensor& t)
      : data(static_cast<const char*>(t.const_data_ptr())),
        bf16(t.scalar_type() == at::kBFloat16),
        n(t.size(2)),
        d(t.size(3)),
        sb(t.stride(0)),
        sh(t.stride(1)),
        sn(t.size(2) <= 1 ? t.size(3) : t.stride(2)),
        sd(t.size(3) == 1 ? 1 : t.stride(3)) {}
  // float32 rows with unit stride along D and ld >= D: the GEMMs read them in place.
  bool direct() const { return !bf16 && sd == 1 && sn >= d; }
  const float* f32(int64_t b, int64_t h) const {
    return reinterpret_cast<const float*>(data) + b * sb + h * sh;
  }
  float get(int64_t base, int64_t r, int64_t c) const {
    const int64_t i = base + r * sn + c * sd;
    return bf16 ? static_cast<float>(reinterpret_cast<const c10::BFloat16*>(data)[i])
                : reinterpret_cast<const float*>(data)[i];
  }
};

// The rows of one head as the GEMMs read them: float32, unit stride along D, leading dimension ld.
struct HeadRows {
  const float* p = nullptr;
  int64_t ld = 0;
  const float* at(int64_t n) const { return p + n * ld; }
};

// Head (b, h) of `src` as float32 rows: in place when direct(), else converted (bfloat16 widened once per head
// and thread, not once per tile) into buf [N × D].
HeadRows load_head(const Src& src, int64_t b, int64_t h, float* buf) {
  if (src.direct()) return {src.f32(b, h), src.sn};
  const int64_t base = b * src.sb + h * src.sh;
  for (int64_t r = 0; r < src.n; ++r) {
    for (int64_t c = 0; c < src.d; ++c) buf[r * src.d + c] = src.get(base, r, c);
  }
  return {buf, src.d};
}

// dst[D × N] (row stride N) = the transpose of head (b, h) of `src`, as float32: Kᵀ, Qᵀ, dOᵀ of one head.
void load_head_transposed(const Src& src, int64_t b, int64_t h, float* dst) {
  constexpr int64_t kBlock = 32;  // 32 rows at a time: reads and writes stay within a few cache lines each
  const int64_t base = b * src.sb + h * src.sh, n = src.n;
  for (int64_t n0 = 0; n0 < n; n0 += kBlock) {
    const int64_t n1 = std::min(n, n0 + kBlock);
    for (int64_t c = 0; c < src.d; ++c) {
      float* out = dst + c * n;
      if (src.direct()) {
        const float* in = reinterpret_cast<const float*>(src.data) + base + c;
        for (int64_t r = n0; r < n1; ++r) out[r] = in[r * src.sn];
      } else {
        for (int64_t r = n0; r < n1; ++r) out[r] = src.get(base, r, c);
      }
    }
  }
}

// Writes `n` floats times `mul` to dst (float32 or bfloat16, round to nearest even as Tensor::to).
void store_row(const float* src, int64_t n, float mul, void* dst, bool bf16) {
  if (bf16) {
    auto* out = static_cast<c10::BFloat16*>(dst);
    for (int64_t i = 0; i < n; ++i) out[i] = c10::BFloat16(src[i] * mul);
  } else {
    auto* out = static_cast<float*>(dst);
    for (int64_t i = 0; i < n; ++i) out[i] = src[i] * mul;
  }
}

// Shape / dtype / device checks shared by both passes (kernels/common). Returns the dtype (float32 or bfloat16).
at::ScalarType check_qkv(const char* fn, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         double scale) {
  return flash_shared::check_qkv(fn, q, k, v, scale, c10::DeviceType::CPU, {at::kFloat, at::kBFloat16},
                                 "float32 or bfloat16");
}

}  // namespace

const char* flash_attention_simd_target() { return HWY_DYNAMIC_DISPATCH(FlashTargetName)(); }

const char* flash_attention_gemm_backend() {
  switch (backend()) {
    case GemmBackend::brgemm: return "oneDNN brgemm";
    case GemmBackend::blas: return "blas sgemm";
    case GemmBackend::aten: return "at::addmm";
  }
  return "?";
}

void flash_attention_use_gemm_backend(std::string_view name) {
  GemmBackend b = GemmBackend::aten;
  if (name == "brgemm") {
    ZD_CHECK(brgemm_works(), "flash_attention_use_gemm_backend: oneDNN brgemm is not usable on this machine");
    b = GemmBackend::brgemm;
  } else if (name == "blas") {
    ZD_CHECK(sgemm_ != nullptr, "flash_attention_use_gemm_backend: LibTorch exports no BLAS sgemm_");
    b = GemmBackend::blas;
  } else if (name == "auto") {
    b = pick_backend();
  } else {
    ZD_CHECK(name == "aten", "flash_attention_use_gemm_backend: expected brgemm, blas, aten or auto, got '", name,
             "'");
  }
  backend_slot().store(b);
}

std::tuple<at::Tensor, at::Tensor> flash_attention_forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                                               const at::Tensor& v, double scale) {
  const at::ScalarType dt = check_qkv("flash_attention_forward_cpu", q, k, v, scale);
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Nkv = k.size(2), D = q.size(3);
  at::Tensor out = at::empty({B, H, Nq, D}, q.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor lse = at::empty({B, H, Nq}, q.options().dtype(at::kFloat));
  if (out.numel() == 0) return {out, lse};
  const Src qs(q), ks(k), vs(v);
  const bool bf16 = dt == at::kBFloat16;
  const int64_t elem = bf16 ? 2 : 4;
  char* out_data = static_cast<char*>(out.data_ptr());
  float* lse_data = lse.data_ptr<float>();
  const float fscale = static_cast<float>(scale);
  const int64_t q_blocks = (Nq + kFwdBlockQ - 1) / kFwdBlockQ;
  const int64_t bk_max = std::min(kFwdBlockK, Nkv), bq_max = std::min(kFwdBlockQ, Nq);

  // Algorithm 1: one task per (b, h, query block); each owns its output rows, so there is nothing to reduce.
  // A thread gets consecutive tasks, so it loads a head (Kᵀ; Q and V unless usable in place) once for all the
  // query blocks it runs there.
  at::parallel_for(0, B * H * q_blocks, 1, [&](int64_t t0, int64_t t1) {
    // Scratch: Kᵀ of one head [D × Nkv], Q [Nq × D] and V [Nkv × D] of the head when they are not float32 rows
    // with unit stride along D, score tile [bq × bk], output accumulator [bq × D], m, l, alpha [bq].
    const int64_t kt_size = D * Nkv + kPad, s_size = bq_max * bk_max + kPad, acc_size = bq_max * D + kPad;
    const int64_t q_size = qs.direct() ? 0 : Nq * D, v_size = vs.direct() ? 0 : Nkv * D;
    at::Tensor scratch = at::empty({kt_size + q_size + v_size + s_size + acc_size + 3 * bq_max},
                                   at::TensorOptions().dtype(at::kFloat));
    float* kt = scratch.data_ptr<float>();
    float* q_buf = kt + kt_size;
    float* v_buf = q_buf + q_size;
    float* s = v_buf + v_size;
    float* acc = s + s_size;
    float* m = acc + acc_size;
    float* l = m + bq_max;
    float* alpha = l + bq_max;
    int64_t loaded_bh = -1;
    HeadRows qh, vh;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / q_blocks, i0 = (t % q_blocks) * kFwdBlockQ;
      const int64_t b = bh / H, h = bh % H, bq = std::min(kFwdBlockQ, Nq - i0);
      if (bh != loaded_bh) {
        load_head_transposed(ks, b, h, kt);
        qh = load_head(qs, b, h, q_buf);
        vh = load_head(vs, b, h, v_buf);
        loaded_bh = bh;
      }
      const float* qi = qh.at(i0);
      std::fill(m, m + bq, -std::numeric_limits<float>::infinity());
      std::fill(l, l + bq, 0.0f);
      for (int64_t j0 = 0; j0 < Nkv; j0 += kFwdBlockK) {
        const int64_t bk = std::min(kFwdBlockK, Nkv - j0);
        // S = Q_i K_jᵀ  [bq × bk] (scaled inside the softmax step)
        gemm(bq, bk, D, qi, qh.ld, kt + j0, Nkv, s, bk, false);
        HWY_DYNAMIC_DISPATCH(SoftmaxTileForward)(s, bq, bk, bk, fscale, m, l, alpha);
        if (j0 > 0) {
          for (int64_t r = 0; r < bq; ++r) {
            float* row = acc + r * D;
            const float a = alpha[r];
            for (int64_t c = 0; c < D; ++c) row[c] *= a;
          }
        }
        // O_i = diag(alpha) O_i + P V_j  [bq × D]
        gemm(bq, D, bk, s, bk, vh.at(j0), vh.ld, acc, D, j0 > 0);
      }
      const int64_t row0 = bh * Nq + i0;
      for (int64_t r = 0; r < bq; ++r) {
        store_row(acc + r * D, D, 1.0f / l[r], out_data + (row0 + r) * D * elem, bf16);
        lse_data[row0 + r] = m[r] + std::log(l[r]);
      }
    }
    gemm_done();
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attention_backward_cpu(const at::Tensor& dout,
                                                                            const at::Tensor& q, const at::Tensor& k,
                                                                            const at::Tensor& v, const at::Tensor& out,
                                                                            const at::Tensor& lse, double scale) {
  constexpr const char* fn = "flash_attention_backward_cpu";
  const at::ScalarType dt = check_qkv(fn, q, k, v, scale);
  flash_shared::check_backward_extras(fn, dout, q, out, lse, dt);

  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Nkv = k.size(2), D = q.size(3);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const bool bf16 = dt == at::kBFloat16;
  const int64_t elem = bf16 ? 2 : 4;
  const auto contiguous = at::MemoryFormat::Contiguous;
  at::Tensor dq = at::empty({B, H, Nq, D}, q.options().memory_format(contiguous));
  at::Tensor dk = at::empty({B, H, Nkv, D}, k.options().memory_format(contiguous));
  at::Tensor dv = at::empty({B, H, Nkv, D}, v.options().memory_format(contiguous));
  if (B * H == 0) return {dq, dk, dv};
  if (Nq == 0) return {dq, dk.zero_(), dv.zero_()};

  const Src qs(q), ks(k), vs(v), dos(dout), outs(out);
  const at::Tensor lsec = lse.contiguous();
  const float* lse_data = lsec.const_data_ptr<float>();
  const float fscale = static_cast<float>(scale);

  // Work split for dq (the one gradient that every key block adds into). Tasks are (b, h, key-block chunk);
  // a task owns dK_j and dV_j of its key blocks, so those need no synchronisation. When B·H >= threads (Stable
  // Diffusion: B·H >= 16) there is one chunk per head: the task owns all of that head's dq rows too, accumulates
  // them in its own dQᵀ buffer and writes them once. Only when B·H < threads are a head's key blocks split into
  // G chunks, each writing its own float32 dq partial ([G, B, H, Nq, D], at most `threads` copies of dq: still
  // linear in N), summed once at the end. Chosen over a second pass for dq (recomputing S, P, dP and dS per
  // tile: three more GEMM-sized steps, ~40 % more work) and over atomics or locks (contended float adds in the
  // innermost loop).
  const int64_t kv_blocks = (Nkv + kBwdBlockK - 1) / kBwdBlockK;
  const int64_t threads = at::get_num_threads();
  const int64_t G = B * H >= threads ? 1 : std::min(kv_blocks, (threads + B * H - 1) / (B * H));
  at::Tensor dq_parts = G > 1 ? at::empty({G, B, H, Nq, D}, f32) : at::Tensor();
  char* dq_data = static_cast<char*>(G > 1 ? dq_parts.data_ptr() : dq.data_ptr());
  const int64_t dq_elem = G > 1 ? 4 : elem;
  const bool dq_bf16 = G == 1 && bf16;
  char* dk_data = static_cast<char*>(dk.data_ptr());
  char* dv_data = static_cast<char*>(dv.data_ptr());
  const int64_t bk_max = std::min(kBwdBlockK, Nkv), bq_max = std::min(kBwdBlockQ, Nq);

  at::parallel_for(0, B * H * G, 1, [&](int64_t t0, int64_t t1) {
    // Scratch: Qᵀ, dOᵀ, dQᵀ of one head [D × Nq]; Kᵀ [D × Nkv]; Q, dO [Nq × D] and K, V [Nkv × D] of the head
    // when they are not float32 rows with unit stride along D; lse and D_i of the head [Nq]; Pᵀ and dPᵀ/dSᵀ
    // tiles [bk × bq]; dK_j, dV_j accumulators [bk × D].
    const int64_t hq = D * Nq + kPad, hk = D * Nkv + kPad, vec = Nq + kPad, tile = bk_max * bq_max + kPad,
                  kv = bk_max * D + kPad;
    const int64_t q_size = qs.direct() ? 0 : Nq * D, do_size = dos.direct() ? 0 : Nq * D;
    const int64_t k_size = ks.direct() ? 0 : Nkv * D, v_size = vs.direct() ? 0 : Nkv * D;
    at::Tensor scratch =
        at::empty({3 * hq + hk + q_size + do_size + k_size + v_size + 2 * vec + 2 * tile + 2 * kv}, f32);
    float* qt = scratch.data_ptr<float>();
    float* dot = qt + hq;
    float* dqt = dot + hq;
    float* kt = dqt + hq;
    float* q_buf = kt + hk;
    float* do_buf = q_buf + q_size;
    float* k_buf = do_buf + do_size;
    float* v_buf = k_buf + k_size;
    float* lse_h = v_buf + v_size;
    float* di = lse_h + vec;
    float* pt = di + vec;
    float* dpt = pt + tile;
    float* dk_acc = dpt + tile;
    float* dv_acc = dk_acc + kv;
    std::fill(lse_h + Nq, lse_h + vec, 0.0f);  // the padding is read (and masked off) by tail vectors
    std::fill(di + Nq, di + vec, 0.0f);
    int64_t loaded_bh = -1;
    HeadRows qh, doh, kh, vh;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / G, g = t % G, b = bh / H, h = bh % H;
      if (loaded_bh != bh) {
        load_head_transposed(qs, b, h, qt);
        load_head_transposed(dos, b, h, dot);
        load_head_transposed(ks, b, h, kt);
        qh = load_head(qs, b, h, q_buf);
        doh = load_head(dos, b, h, do_buf);
        kh = load_head(ks, b, h, k_buf);
        vh = load_head(vs, b, h, v_buf);
        std::copy(lse_data + bh * Nq, lse_data + (bh + 1) * Nq, lse_h);
        // D_i = rowsum(dO ∘ O) for every query row of this head (O borrows the dQᵀ buffer, cleared below)
        const HeadRows oh = load_head(outs, b, h, dqt);
        HWY_DYNAMIC_DISPATCH(RowDots)(doh.p, doh.ld, oh.p, oh.ld, Nq, D, di);
        loaded_bh = bh;
      }
      std::fill(dqt, dqt + D * Nq, 0.0f);
      const int64_t jb0 = g * kv_blocks / G, jb1 = (g + 1) * kv_blocks / G;
      for (int64_t jb = jb0; jb < jb1; ++jb) {
        const int64_t j0 = jb * kBwdBlockK, bk = std::min(kBwdBlockK, Nkv - j0);
        const float* kj = kh.at(j0);
        const float* vj = vh.at(j0);
        for (int64_t i0 = 0; i0 < Nq; i0 += kBwdBlockQ) {
          const int64_t bq = std::min(kBwdBlockQ, Nq - i0);
          const bool acc = i0 > 0;
          // Sᵀ = K_j Q_iᵀ, then Pᵀ = exp(scale · Sᵀ − lse_i)  [bk × bq]
          gemm(bk, bq, D, kj, kh.ld, qt + i0, Nq, pt, bq, false);
          HWY_DYNAMIC_DISPATCH(ProbsTileT)(pt, bk, bq, bq, fscale, lse_h + i0);
          // dV_j += Pᵀ dO_i  [bk × D]
          gemm(bk, D, bq, pt, bq, doh.at(i0), doh.ld, dv_acc, D, acc);
          // dPᵀ = V_j dO_iᵀ, then dSᵀ = scale · Pᵀ ∘ (dPᵀ − D_i)  [bk × bq]
          gemm(bk, bq, D, vj, vh.ld, dot + i0, Nq, dpt, bq, false);
          HWY_DYNAMIC_DISPATCH(GradScoresTileT)(dpt, pt, bk, bq, bq, fscale, di + i0);
          // dK_j += dSᵀ Q_i  [bk × D];  dQ_iᵀ += K_jᵀ dSᵀ  [D × bq]
          gemm(bk, D, bq, dpt, bq, qh.at(i0), qh.ld, dk_acc, D, acc);
          gemm(D, bq, bk, kt + j0, Nkv, dpt, bq, dqt + i0, Nq, true);
        }
        const int64_t row0 = bh * Nkv + j0;
        for (int64_t r = 0; r < bk; ++r) {
          store_row(dk_acc + r * D, D, 1.0f, dk_data + (row0 + r) * D * elem, bf16);
          store_row(dv_acc + r * D, D, 1.0f, dv_data + (row0 + r) * D * elem, bf16);
        }
      }
      // dq rows of this head (or this chunk's partial) from dQᵀ: O(Nq · D), once per task.
      char* dq_bh = dq_data + (g * B * H + bh) * Nq * D * dq_elem;
      float row[256];
      for (int64_t r = 0; r < Nq; ++r) {
        for (int64_t c = 0; c < D; ++c) row[c] = dqt[c * Nq + r];
        store_row(row, D, 1.0f, dq_bh + r * D * dq_elem, dq_bf16);
      }
    }
    gemm_done();
  });
  if (G > 1) dq.copy_(dq_parts.sum(0));
  return {dq, dk, dv};
}

at::Tensor flash_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  using Function = flash_shared::FlashAttentionFunction<&flash_attention_forward_cpu, &flash_attention_backward_cpu>;
  return Function::apply(q, k, v, scale);
}

}  // namespace zerodiff::kernels
#endif  // HWY_ONCE
