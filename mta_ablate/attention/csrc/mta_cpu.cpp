// MTA's maps on the CPU: the causal depthwise key-query convolution (forward, input gradient, kernel gradient), the
// softmax stage (pre-softmax head mix, causal softmax, post-softmax head mix) and its backward, and a lone head mix.
//
// Maps are (B, H, R, S) row-major blocks of a causal (T, S) map whose rows start at an absolute row `row0`.
// A block holds zeros in the future of every row (key s > row), and so do its outputs: those entries are
// neither read nor computed. For the convolution each (batch, head) map is padded once into a small buffer that
// stays in cache (zeros above row 0, beyond the map's rows, left and right of the keys and in the future), and every
// output row is then computed in chunks of VW keys held in registers while all c_q * c_k taps stream through them.
// The softmax stage works row by row on the C heads of a group at once, so each map is read and written once.
// Work is split with at::parallel_for, so the ops use torch.get_num_threads() cores; kernel and mix gradients are
// summed from fixed partial sums in a fixed order, so results do not depend on the thread count.

#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <cstring>
#include <memory>
#include <vector>

namespace {

// The vector registers the build targets (`-march=native`): AVX-512 (32 of 64 bytes) or AVX2 (16 of 32 bytes). Every
// vector below is one register, so on AVX2 GCC never splits one into pieces (which it may do lane by lane), and the
// register blocks are sized to fit the register file.
#ifdef __AVX512F__
constexpr int VBYTES = 64;
constexpr int64_t VW = 32;    // output keys per register chunk of the convolution (2 vectors of fp32)
constexpr int CONV_ROWS = 8;  // output rows per register block: 16 sums (measured against 4 and 6, a 6x11 kernel)
constexpr int GRAD_SUMS = 24;  // kernel-gradient sums held in registers per pass
#else
constexpr int VBYTES = 32;
constexpr int64_t VW = 16;
constexpr int CONV_ROWS = 6;  // 12 sums of the 16 registers
constexpr int GRAD_SUMS = 6;  // with c_q = 6 rows of the output gradient, one tap per pass (measured against 12, 18)
#endif

// One vector register of T (GCC vector extensions), loaded from any address.
template <typename T>
struct Lanes {
  typedef T V __attribute__((vector_size(VBYTES)));
  static constexpr int64_t N = VBYTES / sizeof(T);
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static void store(T* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }
};

// The vector {0, 1, 2, ...}, for masks by lane.
template <typename T>
inline typename Lanes<T>::V lane_index() {
  typename Lanes<T>::V v;
  for (int64_t i = 0; i < Lanes<T>::N; ++i) v[i] = T(i);
  return v;
}

// dst[0, n) = src[0, n) and dst[0, n) = 0 in whole vectors (the last one overlapping the one before it), no library
// call: the convolutions copy and clear many short rows, where a call to memmove or memset costs more than the work.
// The ranges must not overlap.
template <typename T>
inline void copy_short(const T* src, int64_t n, T* dst) {
  using L = Lanes<T>;
  if (n < L::N) {
    for (int64_t v = 0; v < n; ++v) dst[v] = src[v];
    return;
  }
  for (int64_t v = 0; v + L::N < n; v += L::N) L::store(dst + v, L::load(src + v));
  L::store(dst + n - L::N, L::load(src + n - L::N));
}

template <typename T>
inline void zero_short(T* dst, int64_t n) {
  using L = Lanes<T>;
  if (n < L::N) {
    for (int64_t v = 0; v < n; ++v) dst[v] = T(0);
    return;
  }
  for (int64_t v = 0; v + L::N < n; v += L::N) L::store(dst + v, typename L::V{});
  L::store(dst + n - L::N, typename L::V{});
}

// An uninitialised buffer of n values for one thread's work (a std::vector would zero it first, for nothing).
template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(new T[n]);
}

struct Geometry {
  int64_t rows;     // padded rows: out_rows + c_q - 1
  int64_t width;    // padded keys: S + c_k - 1 + VW (VW of slack so a chunk never reads past a row)
};

// Pad map `n` of `src` (rows from absolute `src_row0`) into `pad`: padded row p holds source row
// out_row0 + p + row_shift, padded key c holds source key c - col_shift; zero wherever that is outside the
// source block, before key 0, past key S-1 or in the future of its row.
template <typename T>
void pad_map(const T* src, int64_t src_rows, int64_t s, int64_t src_row0, int64_t out_row0, int64_t row_shift,
             int64_t col_shift, const Geometry& g, T* pad) {
  for (int64_t p = 0; p < g.rows; ++p) {
    const int64_t row = out_row0 + p + row_shift;  // absolute row
    T* out = pad + p * g.width;
    if (row < src_row0 || row >= src_row0 + src_rows || row < 0) {
      zero_short(out, g.width);
      continue;
    }
    const int64_t keys = std::min(s, row + 1);
    zero_short(out, col_shift);
    copy_short(src + (row - src_row0) * s, keys, out + col_shift);
    zero_short(out + col_shift + keys, g.width - col_shift - keys);
  }
}

// The sum of a vector's lanes as a tree of half-vector additions, a chain of log2(lanes) of them: a loop over the
// lanes would be a chain of one per lane, which a short row's work cannot hide.
template <typename V>
auto sum_lanes(const V& v) {
  constexpr int n = sizeof(V) / sizeof(v[0]);
  if constexpr (n == 1) {
    return v[0];
  } else {
    typedef std::remove_cv_t<std::remove_reference_t<decltype(v[0])>> T;
    typedef T H __attribute__((vector_size(sizeof(V) / 2)));
    H lo, hi;
    std::memcpy(&lo, &v, sizeof(H));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(H), sizeof(H));
    return sum_lanes(lo + hi);
  }
}

// Zero a block of vector sums one vector at a time (`= {}` on the array becomes a call to memset, and the sums a
// block of memory instead of registers).
template <typename V, int A, int B>
inline void clear(V (&acc)[A][B]) {
  for (int a = 0; a < A; ++a)
    for (int b = 0; b < B; ++b) acc[a][b] = V{};
}

// acc[k] (k < n_rows) = sum_{i, j} w[i, j] * pad[r + k + i, c0 + j + (NV vectors of keys)]: padded row p serves tap
// row p - k of output row r + k for every k, so one load feeds up to ROWS multiply-adds. With CQ (c_q) known at
// compile time and all ROWS rows present, both loops unroll and no tap is tested.
template <typename T, int CK, int CQ, int ROWS, int NV>
inline void correlate_chunk(const T* pad, int64_t width, const T* w, int64_t c_q, int64_t c_k, int64_t n_rows,
                            typename Lanes<T>::V (&acc)[ROWS][NV]) {
  using L = Lanes<T>;
  using V = typename L::V;
  auto tap_row = [&](int64_t p, int64_t k_lo, int64_t k_hi, auto all) {
    const T* row = pad + p * width;
    for (int64_t j = 0; j < (CK > 0 ? CK : c_k); ++j) {
      V x[NV];
      for (int v = 0; v < NV; ++v) x[v] = L::load(row + j + v * L::N);
#pragma GCC unroll 16
      for (int k = 0; k < ROWS; ++k) {
        if (!decltype(all)::value && (k < k_lo || k > k_hi)) continue;
        if (decltype(all)::value && (p - k < 0 || p - k >= CQ)) continue;  // resolved at compile time
        const T wv = w[(p - k) * c_k + j];
        for (int v = 0; v < NV; ++v) acc[k][v] += wv * x[v];
      }
    }
  };
  if constexpr (CQ > 0) {
    if (n_rows == ROWS) {
#pragma GCC unroll 16
      for (int p = 0; p < CQ + ROWS - 1; ++p) tap_row(p, 0, 0, std::true_type{});
      return;
    }
  }
  for (int64_t p = 0; p < c_q + n_rows - 1; ++p)
    tap_row(p, std::max<int64_t>(0, p - c_q + 1), std::min<int64_t>(n_rows - 1, p), std::false_type{});
}

// y[r, c] = sum_{i, j} w[i, j] * pad[r + i, c + j] for keys c <= out_row0 + r; zero after: ROWS output rows at a
// time in chunks of VW keys held in registers; a row block's last chunk is one vector wide when that covers its keys
// (less work computed past the diagonal).
template <typename T, int CK, int CQ>
void correlate_rows(const T* pad, const Geometry& g, const T* w, int64_t c_q, int64_t c_k, int64_t out_rows,
                    int64_t s, int64_t out_row0, T* y) {
  using L = Lanes<T>;
  using V = typename L::V;
  constexpr int ROWS = CONV_ROWS;
  constexpr int NV = VW / L::N;
  auto limit = [&](int64_t r) { return std::max<int64_t>(0, std::min(s, out_row0 + r + 1)); };
  for (int64_t r = 0; r < out_rows; r += ROWS) {
    const int64_t n_rows = std::min<int64_t>(ROWS, out_rows - r);
    int64_t keys[ROWS] = {}, done[ROWS] = {};  // keys of each row, and how far its outputs are written
    for (int k = 0; k < n_rows; ++k) done[k] = keys[k] = limit(r + k);
    auto emit = [&](int64_t c0, auto& acc) {  // the chunk's keys of each row, up to its last
      constexpr int nv = std::extent_v<std::remove_reference_t<decltype(acc[0])>>;
      constexpr int64_t width = nv * L::N;
      for (int k = 0; k < n_rows; ++k) {
        if (c0 >= keys[k]) continue;
        T* dst = y + (r + k) * s + c0;
        if (c0 + width <= keys[k]) {  // a whole chunk: straight to the map
          for (int v = 0; v < nv; ++v) L::store(dst + v * L::N, acc[k][v]);
        } else if (c0 + width <= s) {  // the row's last chunk, its future lanes zero
          for (int v = 0; v < nv; ++v) {
            const auto keep = lane_index<T>() < T(keys[k] - c0 - v * L::N);
            L::store(dst + v * L::N, keep ? acc[k][v] : V{});
          }
          done[k] = c0 + width;
        } else {
          alignas(64) T out[VW];
          for (int v = 0; v < nv; ++v) L::store(out + v * L::N, acc[k][v]);
          copy_short(out, keys[k] - c0, dst);
        }
      }
    };
    const T* rows = pad + r * g.width;
    int64_t c0 = 0;
    for (; c0 + L::N < keys[n_rows - 1]; c0 += VW) {
      V acc[ROWS][NV];
      clear(acc);
      correlate_chunk<T, CK, CQ, ROWS, NV>(rows + c0, g.width, w, c_q, c_k, n_rows, acc);
      emit(c0, acc);
    }
    if (c0 < keys[n_rows - 1]) {  // at most one vector of keys left
      V acc[ROWS][1];
      clear(acc);
      correlate_chunk<T, CK, CQ, ROWS, 1>(rows + c0, g.width, w, c_q, c_k, n_rows, acc);
      emit(c0, acc);
    }
    for (int k = 0; k < n_rows; ++k) zero_short(y + (r + k) * s + done[k], s - done[k]);
  }
}

// dw[i, j] += sum_r sum_c dy[r, c] * pad[r + i, c + j]. dy is `dpad`: the output gradient with zeros in the future,
// VW keys of slack and c_q - 1 zero rows above and below (row r of dy is dpad row r + c_q - 1). Padded row p of the
// input serves tap row i with dy row p - i for every i, so for JC taps at a time the CQ x JC sums are vectors in
// registers, and each chunk of a padded row (JC loads) and of the c_q dy rows it meets (c_q loads) feeds c_q * JC
// multiply-adds. CQ = 0: c_q at run time, one tap row at a time.
template <typename T, int CK, int CQ>
void kernel_grad(const T* dpad, const T* pad, const Geometry& g, int64_t c_q, int64_t ck_rt, int64_t out_rows,
                 int64_t s, int64_t out_row0, T* dw) {
  using L = Lanes<T>;
  using V = typename L::V;
  constexpr int NQ = CQ > 0 ? CQ : 1;
  constexpr int JC = std::max(1, std::min(CK > 0 ? CK : 1, GRAD_SUMS / NQ));  // taps per pass, their sums in registers
  const int64_t c_k = CK > 0 ? CK : ck_rt;
  const T* dy0 = dpad + (c_q - 1) * g.width;  // dy row 0
  for (int64_t i0 = 0; i0 < c_q; i0 += NQ) {
    for (int64_t j0 = 0; j0 < c_k; j0 += JC) {
      const int64_t nj = std::min<int64_t>(JC, c_k - j0);
      V acc[NQ][JC];
      clear(acc);
      for (int64_t p = i0; p < out_rows + c_q - 1; ++p) {  // padded input row; dy rows p - i0 - i, some of them zero
        const int64_t keys = std::max<int64_t>(0, std::min(s, out_row0 + p - i0 + 1));  // widest of those dy rows
        const T* row = pad + p * g.width + j0;
        for (int64_t c0 = 0; c0 < keys; c0 += L::N) {
          V d[NQ];
          for (int i = 0; i < NQ; ++i) d[i] = L::load(dy0 + (p - i0 - i) * g.width + c0);
          for (int j = 0; j < JC; ++j) {
            if (j >= nj) break;
            const V x = L::load(row + c0 + j);
            for (int i = 0; i < NQ; ++i) acc[i][j] += d[i] * x;
          }
        }
      }
      for (int i = 0; i < NQ; ++i)
        for (int64_t j = 0; j < nj; ++j) {
          T sum = 0;
          for (int64_t v = 0; v < L::N; ++v) sum += acc[i][j][v];
          dw[(i0 + i) * c_k + j0 + j] += sum;
        }
    }
  }
}

// Partial sums (B, G, N, K) -> (G, K): over the N parts of each (batch, group) in order, then over the batch in
// order, so the result does not depend on how the parts were spread over threads.
at::Tensor sum_parts(const at::Tensor& per) {
  const int64_t b = per.size(0), groups = per.size(1), parts = per.size(2), k = per.size(3);
  auto out = at::empty({groups, k}, per.options());
  AT_DISPATCH_FLOATING_TYPES(per.scalar_type(), "mta_ablate::sum_parts", [&] {
    const scalar_t* pp = per.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t j = 0; j < k; ++j) {
        scalar_t total = 0;
        for (int64_t n = 0; n < b; ++n) {
          scalar_t part = 0;
          for (int64_t c = 0; c < parts; ++c) part += pp[((n * groups + g) * parts + c) * k + j];
          total += part;
        }
        op[g * k + j] = total;
      }
  });
  return out;
}

// Copy the output gradient rows into rows of width g.width with zeros in the future and the slack, below c_q - 1
// zero rows, and c_q - 1 zero rows after them.
template <typename T>
void pad_grad(const T* dy, int64_t out_rows, int64_t s, int64_t out_row0, int64_t c_q, const Geometry& g, T* dpad) {
  zero_short(dpad, (c_q - 1) * g.width);
  for (int64_t r = 0; r < out_rows; ++r) {
    const int64_t keys = std::max<int64_t>(0, std::min(s, out_row0 + r + 1));
    T* row = dpad + (r + c_q - 1) * g.width;
    copy_short(dy + r * s, keys, row);
    zero_short(row + keys, g.width - keys);
  }
  zero_short(dpad + (out_rows + c_q - 1) * g.width, (c_q - 1) * g.width);
}

// f(integral_constant<int, c_k>, integral_constant<int, c_q>): for fp32 maps the kernel's size compiled in where it
// is one in use (c_k up to 16; c_q 1, 2, 3 or 6), else 0 for either (sizes read at run time; fp64, kept for
// gradient checks, always takes that path, which keeps the build short).
template <typename T, typename F>
void with_kernel(int64_t c_k, int64_t c_q, F&& f) {
  auto with_cq = [&](auto ck) {
    switch (c_q) {
#define MTA_CQ(n) \
  case n:         \
    return f(ck, std::integral_constant<int, n>{});
      MTA_CQ(1) MTA_CQ(2) MTA_CQ(3) MTA_CQ(6)
#undef MTA_CQ
      default:
        return f(ck, std::integral_constant<int, 0>{});
    }
  };
  if constexpr (!std::is_same_v<T, float>) {
    f(std::integral_constant<int, 0>{}, std::integral_constant<int, 0>{});
  } else {
  switch (c_k) {
#define MTA_CK(n) \
  case n:         \
    return with_cq(std::integral_constant<int, n>{});
    MTA_CK(1) MTA_CK(2) MTA_CK(3) MTA_CK(4) MTA_CK(5) MTA_CK(6) MTA_CK(7) MTA_CK(8) MTA_CK(9) MTA_CK(10)
    MTA_CK(11) MTA_CK(12) MTA_CK(13) MTA_CK(14) MTA_CK(15) MTA_CK(16)
#undef MTA_CK
    default:
      return f(std::integral_constant<int, 0>{}, std::integral_constant<int, 0>{});
  }
  }
}

void check(const at::Tensor& x, const at::Tensor& w, const char* what) {
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), what, ": CPU tensors only");
  TORCH_CHECK(x.dim() == 4 && w.dim() == 3 && x.size(1) == w.size(0), what, ": maps (B, H, R, S), kernel (H, c_q, c_k)");
  TORCH_CHECK(x.scalar_type() == w.scalar_type(), what, ": map and kernel dtypes differ");
}

// The key-query convolution of rows [out_row0, out_row0 + out_rows) of a causal map, from the block `x` holding
// rows [x_row0, ...) (zero, or ignored, in the future): y[r, c] = sum_{i, j} w[i, j] x[r - c_q + 1 + i, c - left + j].
// With `flip`, the kernel is flipped on both axes and rows below are read instead of rows above: the input
// gradient of that convolution (`left` is then the padding on the other side).
at::Tensor conv(const at::Tensor& x_in, int64_t x_row0, const at::Tensor& w_in, int64_t out_row0, int64_t out_rows,
                int64_t left, bool flip) {
  check(x_in, w_in, "mta_ablate::conv");
  const auto x = x_in.contiguous();
  const auto w = (flip ? w_in.flip({1, 2}) : w_in).contiguous();
  const int64_t b = x.size(0), h = x.size(1), x_rows = x.size(2), s = x.size(3);
  const int64_t c_q = w.size(1), c_k = w.size(2);
  auto y = at::empty({b, h, out_rows, s}, x.options());
  const Geometry g{out_rows + c_q - 1, s + c_k - 1 + VW};
  const int64_t row_shift = flip ? 0 : -(c_q - 1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mta_ablate::conv", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, b * h, 1, [&](int64_t begin, int64_t end) {
      const auto pad = scratch<scalar_t>(g.rows * g.width);  // pad_map writes all of it
      for (int64_t n = begin; n < end; ++n) {
        pad_map(xp + n * x_rows * s, x_rows, s, x_row0, out_row0, row_shift, left, g, pad.get());
        const scalar_t* wn = wp + (n % h) * c_q * c_k;
        with_kernel<scalar_t>(c_k, c_q, [&](auto ck, auto cq) {
          correlate_rows<scalar_t, decltype(ck)::value, decltype(cq)::value>(pad.get(), g, wn, c_q, c_k, out_rows, s,
                                                                              out_row0, yp + n * out_rows * s);
        });
      }
    });
  });
  return y;
}

// Kernel gradient of `conv(x, x_row0, w, dy_row0, dy.size(2), left, false)` given its output gradient dy:
// (H, c_q, c_k), summed over the batch in order.
at::Tensor conv_kernel_grad(const at::Tensor& dy_in, int64_t dy_row0, const at::Tensor& x_in, int64_t x_row0,
                            int64_t c_q, int64_t c_k, int64_t left) {
  TORCH_CHECK(dy_in.device().is_cpu() && x_in.device().is_cpu(), "mta_ablate::conv_kernel_grad: CPU tensors only");
  const auto dy = dy_in.contiguous();
  const auto x = x_in.contiguous();
  const int64_t b = x.size(0), h = x.size(1), x_rows = x.size(2), s = x.size(3), out_rows = dy.size(2);
  const Geometry g{out_rows + c_q - 1, s + c_k - 1 + VW};
  auto per_map = at::zeros({b, h, c_q, c_k}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mta_ablate::conv_kernel_grad", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* dyp = dy.data_ptr<scalar_t>();
    scalar_t* dwp = per_map.data_ptr<scalar_t>();
    at::parallel_for(0, b * h, 1, [&](int64_t begin, int64_t end) {
      const auto pad = scratch<scalar_t>(g.rows * g.width);
      const auto dpad = scratch<scalar_t>((out_rows + 2 * (c_q - 1)) * g.width);
      for (int64_t n = begin; n < end; ++n) {
        pad_map(xp + n * x_rows * s, x_rows, s, x_row0, dy_row0, -(c_q - 1), left, g, pad.get());
        pad_grad(dyp + n * out_rows * s, out_rows, s, dy_row0, c_q, g, dpad.get());
        with_kernel<scalar_t>(c_k, c_q, [&](auto ck, auto cq) {
          kernel_grad<scalar_t, decltype(ck)::value, decltype(cq)::value>(dpad.get(), pad.get(), g, c_q, c_k,
                                                                          out_rows, s, dy_row0, dwp + n * c_q * c_k);
        });
      }
    });
  });
  return sum_parts(per_map.view({b, 1, 1, h * c_q * c_k})).view({h, c_q, c_k});
}

// out[v] = sum_i w[i] * in[i * stride + v] over `len` positions (one output head of a mix).
template <typename T>
void mix_positions(const T* in, int64_t stride, const T* w, int64_t c, int64_t len, T* __restrict out) {
  const T w0 = w[0];
  const T* __restrict in0 = in;
#pragma omp simd
  for (int64_t v = 0; v < len; ++v) out[v] = w0 * in0[v];
  for (int64_t i = 1; i < c; ++i) {
    const T wi = w[i];
    const T* __restrict x = in + i * stride;
#pragma omp simd
    for (int64_t v = 0; v < len; ++v) out[v] += wi * x[v];
  }
}

template <typename T>
T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t v = 0; v < n; ++v) acc += a[v] * b[v];
  return acc;
}

// One softmax row's backward: o = p * (dp - sum(p * dp)), the sum in double (fp32: a vector of doubles at a time).
template <typename T>
void softmax_grad_row(const T* p, const T* dp, int64_t s, T* o) {  // o may be dp
  double acc = 0;
  int64_t v = 0;
  if constexpr (std::is_same_v<T, float>) {
    constexpr int n = VBYTES / sizeof(double);
    typedef float VH __attribute__((vector_size(VBYTES / 2)));
    typedef double VD __attribute__((vector_size(VBYTES)));
    VD sums = VD{};
    for (; v + n <= s; v += n) {
      VH a, b;
      std::memcpy(&a, p + v, sizeof(a));
      std::memcpy(&b, dp + v, sizeof(b));
      sums += __builtin_convertvector(a, VD) * __builtin_convertvector(b, VD);
    }
    for (int i = 0; i < n; ++i) acc += sums[i];
  }
  for (; v < s; ++v) acc += double(p[v]) * double(dp[v]);
  const T sub = T(acc);
#pragma omp simd
  for (int64_t w = 0; w < s; ++w) o[w] = p[w] * (dp[w] - sub);
}

// e^x for x <= 0, a vector of fp32 at a time: exp(n ln 2 + r) = 2^n e^r, e^r by its Taylor series to r^7 on
// |r| <= ln2 / 2 (relative error under 2e-7). Below -87 (e^-87 ~ 1.6e-38) it returns 0.
inline Lanes<float>::V exp_nonpositive(Lanes<float>::V x) {
  typedef int32_t VI __attribute__((vector_size(VBYTES)));
  using V = Lanes<float>::V;
  const V n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest (|n| < 2^22)
  const V r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  V p = r * (1.f / 5040) + 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const V scale = (V)((__builtin_convertvector(n, VI) + 127) << 23);  // 2^n, built in the exponent bits
  return x < -87.f ? V{} : p * scale;
}

// Softmax of one causal row over its keys [0, keys), zeros after, up to s. fp32: whole vectors; when the row has room
// (s reaches the vector after the last key) the last partial vector too, its lanes past the keys masked; else that
// tail as one vector padded with e^-100. fp64 (gradient checks): plain loops and std::exp.
template <typename T>
void causal_softmax_row(const T* x, int64_t keys, int64_t s, T* out) {  // out may be x
  T top = -std::numeric_limits<T>::infinity(), total = 0;
  int64_t done = keys;  // keys [0, done) hold the result; zeros from there
  if constexpr (std::is_same_v<T, float>) {
    using L = Lanes<float>;
    using V = L::V;
    const float inf = std::numeric_limits<float>::infinity();
    const int64_t full = keys / L::N * L::N;
    const bool padded = full < keys && full + L::N <= s;
    V lane;
    for (int64_t i = 0; i < L::N; ++i) lane[i] = float(i);
    auto last = [&] {  // the partial vector, lanes past the keys at -inf
      const V a = L::load(x + full);
      return lane < float(keys - full) ? a : V{} - inf;
    };
    V m = V{} - inf, sums = V{};
    for (int64_t v = 0; v < full; v += L::N) {
      const V a = L::load(x + v);
      m = a > m ? a : m;
    }
    if (padded) {
      const V a = last();
      m = a > m ? a : m;
    }
    for (int64_t i = 0; i < L::N; ++i) top = std::max(top, m[i]);
    for (int64_t v = full; v < keys && !padded; ++v) top = std::max(top, x[v]);
    const V tail = padded ? last() : V{};  // read before the stores below overwrite x
    for (int64_t v = 0; v < full; v += L::N) {
      const V e = exp_nonpositive(L::load(x + v) - top);
      L::store(out + v, e);
      sums += e;
    }
    if (padded) {
      const V e = exp_nonpositive(tail - top);  // -inf lanes give 0
      L::store(out + full, e);
      sums += e;
      done = full + L::N;
    }
    for (int64_t i = 0; i < L::N; ++i) total += sums[i];
    if (!padded && full < keys) {
      alignas(64) float rest[L::N];
      for (int64_t i = 0; i < L::N; ++i) rest[i] = full + i < keys ? x[full + i] - top : -100.f;
      const V e = exp_nonpositive(L::load(rest));
      for (int64_t i = 0; full + i < keys; ++i) total += (out[full + i] = e[i]);
    }
    const float inv = 1.f / total;
    int64_t v = 0;
    for (; v + L::N <= done; v += L::N) L::store(out + v, L::load(out + v) * inv);
    for (; v < done; ++v) out[v] *= inv;
  } else {
    for (int64_t v = 0; v < keys; ++v) top = std::max(top, x[v]);
    for (int64_t v = 0; v < keys; ++v) total += (out[v] = std::exp(x[v] - top));
    for (int64_t v = 0; v < keys; ++v) out[v] /= total;
  }
  zero_short(out + done, s - done);
}

// out[o][v] = sum_i w[o, i] in[i][v] for v in [0, n): C inputs `istride` apart, C outputs `ostride` apart (never
// overlapping the inputs). With C known at compile time, the C x C weights stay in registers and each chunk of keys
// of the C inputs is loaded once for all C outputs; C = 0: any group size `c`, one output at a time.
template <typename T, int C>
void mix_rows(const T* in, int64_t istride, const T* w, int64_t c, int64_t n, T* out, int64_t ostride) {
  if constexpr (C == 0) {
    for (int64_t o = 0; o < c; ++o) mix_positions(in, istride, w + o * c, c, n, out + o * ostride);
  } else {
    using L = Lanes<T>;
    using V = typename L::V;
    T wl[C * C];
    std::copy(w, w + C * C, wl);
    int64_t v = 0;
    for (; v + L::N <= n; v += L::N) {
      V x[C];
      for (int i = 0; i < C; ++i) x[i] = L::load(in + i * istride + v);
      for (int o = 0; o < C; ++o) {
        V acc = wl[o * C] * x[0];
        for (int i = 1; i < C; ++i) acc += wl[o * C + i] * x[i];
        L::store(out + o * ostride + v, acc);
      }
    }
    for (; v < n; ++v)
      for (int o = 0; o < C; ++o) {
        T acc = 0;
        for (int i = 0; i < C; ++i) acc += wl[o * C + i] * in[i * istride + v];
        out[o * ostride + v] = acc;
      }
  }
}

// sums[a * C + b] += sum_v x[a][v] y[b][v] over v in [0, n), for C rows of x and C rows of y. With C known at compile
// time the C x C sums are vectors `acc` held over many calls (`finish` adds them into `sums`); C = 0: one dot at a
// time, straight into `sums`.
template <typename T, int C>
struct Dots {
  using L = Lanes<T>;
  using V = typename L::V;
  V acc[C > 0 ? C * C : 1] = {};

  void add(const T* x, int64_t xs, const T* y, int64_t ys, int64_t c, int64_t n, T* sums) {
    if constexpr (C == 0) {
      for (int64_t a = 0; a < c; ++a)
        for (int64_t b = 0; b < c; ++b) sums[a * c + b] += dot(x + a * xs, y + b * ys, n);
    } else {
      int64_t v = 0;
      for (; v + L::N <= n; v += L::N) {
        V yv[C];
        for (int b = 0; b < C; ++b) yv[b] = L::load(y + b * ys + v);
        for (int a = 0; a < C; ++a) {
          const V xv = L::load(x + a * xs + v);
          for (int b = 0; b < C; ++b) acc[a * C + b] += xv * yv[b];
        }
      }
      for (; v < n; ++v)
        for (int a = 0; a < C; ++a)
          for (int b = 0; b < C; ++b) sums[a * C + b] += x[a * xs + v] * y[b * ys + v];
    }
  }

  void finish(T* sums) const {
    if constexpr (C > 0)
      for (int k = 0; k < C * C; ++k) {
        T total = 0;
        for (int64_t v = 0; v < L::N; ++v) total += acc[k][v];
        sums[k] += total;
      }
  }
};

// f(std::integral_constant<int, C>) with the group size compiled in where it is one of the common ones, else C = 0.
template <typename F>
void with_group(int64_t c, F&& f) {
  switch (c) {
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 8:
      return f(std::integral_constant<int, 8>{});
    default:
      return f(std::integral_constant<int, 0>{});
  }
}

// Head mix within groups of C heads: y[b, g*C + o] = sum_i m[g, o, i] * x[b, g*C + i] (m[g, i, o] with
// `transpose`), position by position over the (R, S) maps, in chunks that stay in L1; parallel over batch, group
// and chunk. `y` may be `x` (in place: each chunk's outputs go to a small buffer first).
void mix_into(const at::Tensor& x, const at::Tensor& m_in, bool transpose, at::Tensor& y) {
  const auto m = (transpose ? m_in.transpose(1, 2) : m_in).to(x.scalar_type()).contiguous();
  const int64_t b = x.size(0), h = x.size(1), n = x.size(2) * x.size(3), groups = m.size(0), c = m.size(1);
  TORCH_CHECK(groups * c == h, "mta_ablate::mix: groups x group size != heads");
  constexpr int64_t CH = 512;
  const int64_t chunks = (n + CH - 1) / CH;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mta_ablate::mix", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* mp = m.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, b * groups * chunks, 1, [&](int64_t begin, int64_t end) {
      const auto buf = scratch<scalar_t>(c * CH);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bg = t / chunks, k0 = (t % chunks) * CH, len = std::min(CH, n - k0);
        with_group(c, [&](auto cc) {
          mix_rows<scalar_t, decltype(cc)::value>(xp + bg * c * n + k0, n, mp + (bg % groups) * c * c, c, len,
                                                  buf.get(), CH);
        });
        for (int64_t o = 0; o < c; ++o)
          copy_short(buf.get() + o * CH, len, yp + (bg * c + o) * n + k0);
      }
    });
  });
}

at::Tensor mix(const at::Tensor& x_in, const at::Tensor& m, bool transpose) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 4 && m.dim() == 3, "mta_ablate::mix: CPU maps (B, H, R, S)");
  const auto x = x_in.contiguous();
  auto y = at::empty_like(x);
  mix_into(x, m, transpose, y);
  return y;
}

// `mix` in place: x must be contiguous.
at::Tensor mix_(at::Tensor x, const at::Tensor& m, bool transpose) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(), "mta_ablate::mix_: contiguous CPU maps");
  mix_into(x, m, transpose, x);
  return x;
}

// Backward of a head mix in one pass over its maps, position chunk by chunk (each in L1): the gradient of its
// (G, C, C) matrix, sum over batch and positions of dy[g*C + o] * x[g*C + i], and, in place on dy, the gradient of
// its input, dx[g*C + i] = sum_o m[g, o, i] * dy[g*C + o]. Per-chunk partial sums are added in order (chunks, then
// the batch), so the result does not depend on the thread count.
at::Tensor mix_backward_(at::Tensor dy, const at::Tensor& x_in, const at::Tensor& m_in) {
  TORCH_CHECK(dy.device().is_cpu() && dy.dim() == 4 && dy.is_contiguous() && m_in.dim() == 3,
              "mta_ablate::mix_backward_: contiguous CPU maps (B, H, R, S)");
  const auto x = x_in.to(dy.scalar_type()).contiguous();
  const auto mt = m_in.transpose(1, 2).to(dy.scalar_type()).contiguous();  // mt[g, i, o] = m[g, o, i]
  const int64_t b = dy.size(0), h = dy.size(1), n = dy.size(2) * dy.size(3), groups = mt.size(0), c = mt.size(1);
  TORCH_CHECK(groups * c == h && x.sizes() == dy.sizes(), "mta_ablate::mix_backward_: maps and mix do not match");
  constexpr int64_t CH = 512;
  const int64_t chunks = (n + CH - 1) / CH;
  auto per = at::empty({b * groups, chunks, c, c}, dy.options());
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "mta_ablate::mix_backward_", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* mp = mt.data_ptr<scalar_t>();
    scalar_t* dp = dy.data_ptr<scalar_t>();
    scalar_t* pp = per.data_ptr<scalar_t>();
    at::parallel_for(0, b * groups * chunks, 1, [&](int64_t begin, int64_t end) {
      const auto buf = scratch<scalar_t>(c * CH);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bg = t / chunks, k0 = (t % chunks) * CH, len = std::min(CH, n - k0);
        scalar_t* dyc = dp + bg * c * n + k0;
        const scalar_t* xc = xp + bg * c * n + k0;
        with_group(c, [&](auto cc) {
          constexpr int C = decltype(cc)::value;
          Dots<scalar_t, C> dots;
          std::fill(pp + t * c * c, pp + (t + 1) * c * c, scalar_t(0));
          dots.add(dyc, n, xc, n, c, len, pp + t * c * c);
          dots.finish(pp + t * c * c);
          mix_rows<scalar_t, C>(dyc, n, mp + (bg % groups) * c * c, c, len, buf.get(), CH);
        });
        for (int64_t i = 0; i < c; ++i) copy_short(buf.get() + i * CH, len, dyc + i * n);
      }
    });
  });
  return sum_parts(per.view({b, groups, chunks, c * c})).view({groups, c, c});
}

// Write a row of n computed values, then zeros up to key s.
template <typename T>
void put_row(const T* a, int64_t n, int64_t s, T* out) {
  copy_short(a, n, out);
  zero_short(out + n, s - n);
}

// The softmax stage of one block for one (batch, group of C heads), row by row: the pre-softmax head mix, the causal
// softmax over each row's keys [0, row0 + r], the post-softmax head mix (either mix may be absent). Only each row's
// past keys are computed; its future becomes zero. The C heads' row is held in a small buffer, so every map is read
// once and written once. Maps point at head 0 of the group; heads are `rows * s` apart. C: the group size when it
// is compiled in (2, 4, 8), else 0.
template <typename T, int C>
struct Stage {
  const T *pre, *post, *pre_t, *post_t;  // this group's (C, C) matrices m[o, i] and their transposes, or null
  int64_t c, rows, s, row0;

  int64_t keys(int64_t r) const { return std::max<int64_t>(0, std::min(s, row0 + r + 1)); }
  // Keys computed for a row of n keys: up to the end of its last vector where the row has room. The extra keys are
  // in the row's future: zero in the probabilities, so they add nothing to any sum, and written as zeros.
  int64_t wide(int64_t n) const { return std::min(s, (n + Lanes<T>::N - 1) / Lanes<T>::N * Lanes<T>::N); }

  // Rows [r0, r1): probs (may be null) and weights (null when probs is all that is wanted; may be x).
  void forward(const T* x, T* probs, T* weights, int64_t r0, int64_t r1, T* buf) const {
    const int64_t head = rows * s;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = keys(r), nw = wide(n), at = r * s;
      if (pre)
        mix_rows<T, C>(x + at, head, pre, c, nw, buf, s);
      else
        for (int64_t o = 0; o < c; ++o) copy_short(x + at + o * head, n, buf + o * s);
      for (int64_t o = 0; o < c; ++o) causal_softmax_row(buf + o * s, n, nw, buf + o * s);
      for (int64_t o = 0; o < c && probs; ++o) put_row(buf + o * s, n, s, probs + at + o * head);
      if (weights && post) {
        mix_rows<T, C>(buf, s, post, c, nw, weights + at, head);
        for (int64_t o = 0; o < c; ++o) zero_short(weights + at + o * head + nw, s - nw);
      } else if (weights) {
        for (int64_t o = 0; o < c; ++o) put_row(buf + o * s, n, s, weights + at + o * head);
      }
    }
  }

  // Rows [r0, r1), in place on dw: the gradient of the weights becomes that of the logits; the mixes' gradients
  // (C x C, m[o, i] = sum dy[o] x[i]) are added to d_pre and d_post. x: the pre mix's input; p: the probabilities.
  void backward(T* dw, const T* p, const T* x, int64_t r0, int64_t r1, T* d_pre, T* d_post, T* buf) const {
    const int64_t head = rows * s;
    Dots<T, C> dots_pre, dots_post;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = keys(r), nw = wide(n), at = r * s;  // past n the probabilities are 0, so all is 0
      if (post) {  // buf: the gradient of the probabilities
        dots_post.add(dw + at, head, p + at, head, c, nw, d_post);
        mix_rows<T, C>(dw + at, head, post_t, c, nw, buf, s);
      } else {
        for (int64_t i = 0; i < c; ++i) copy_short(dw + at + i * head, nw, buf + i * s);
      }
      for (int64_t i = 0; i < c; ++i)  // now the gradient of the pre mix's output
        softmax_grad_row(p + at + i * head, buf + i * s, nw, buf + i * s);
      if (pre) {
        dots_pre.add(buf, s, x + at, head, c, nw, d_pre);
        mix_rows<T, C>(buf, s, pre_t, c, nw, dw + at, head);
        for (int64_t o = 0; o < c; ++o) zero_short(dw + at + o * head + nw, s - nw);
      } else {
        for (int64_t o = 0; o < c; ++o) put_row(buf + o * s, n, s, dw + at + o * head);
      }
    }
    dots_pre.finish(d_pre);
    dots_post.finish(d_post);
  }
};


constexpr int64_t STAGE_ROWS = 8;  // rows per task of the softmax stage

struct Mixes {
  at::Tensor pre, post, pre_t, post_t;  // contiguous, in the maps' dtype; undefined where absent
  int64_t groups, c;
};

Mixes mixes(const at::Tensor& x, const std::optional<at::Tensor>& pre, const std::optional<at::Tensor>& post) {
  Mixes m;
  const int64_t h = x.size(1);
  auto prep = [&](const std::optional<at::Tensor>& w, at::Tensor& out, at::Tensor& out_t) {
    if (!w.has_value() || !w->defined()) return;
    TORCH_CHECK(w->dim() == 3 && w->size(1) == w->size(2) && w->size(0) * w->size(1) == h,
                "mta_ablate: a head mix must be (G, C, C) with G * C = heads");
    out = w->to(x.scalar_type()).contiguous();
    out_t = out.transpose(1, 2).contiguous();
  };
  prep(pre, m.pre, m.pre_t);
  prep(post, m.post, m.post_t);
  TORCH_CHECK(!(m.pre.defined() && m.post.defined()) || m.pre.sizes() == m.post.sizes(),
              "mta_ablate: the softmax stage fuses two head mixes of the same grouping only");
  m.c = m.pre.defined() ? m.pre.size(1) : m.post.defined() ? m.post.size(1) : 1;
  m.groups = h / m.c;
  return m;
}

template <typename T, int C>
Stage<T, C> stage_of(const Mixes& m, int64_t g, int64_t rows, int64_t s, int64_t row0) {
  auto at_group = [&](const at::Tensor& w) { return w.defined() ? w.data_ptr<T>() + g * m.c * m.c : nullptr; };
  return Stage<T, C>{at_group(m.pre), at_group(m.post), at_group(m.pre_t), at_group(m.post_t), m.c, rows, s, row0};
}

// f(stage, task, batch * groups + group, first row, end row, buffer) for every task of the softmax stage: STAGE_ROWS
// rows of one (batch, group), spread over torch's threads. Tasks are fixed by the shape, not by the thread count.
template <typename T, typename F>
void stage_tasks(const Mixes& m, int64_t b, int64_t rows, int64_t s, int64_t row0, F&& f) {
  const int64_t parts = (rows + STAGE_ROWS - 1) / STAGE_ROWS;
  at::parallel_for(0, b * m.groups * parts, 1, [&](int64_t begin, int64_t end) {
    const auto buf = scratch<T>(m.c * s);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bg = t / parts, r0 = (t % parts) * STAGE_ROWS, r1 = std::min(rows, r0 + STAGE_ROWS);
      with_group(m.c, [&](auto c) {
        f(stage_of<T, decltype(c)::value>(m, bg % m.groups, rows, s, row0), t, bg, r0, r1, buf.get());
      });
    }
  });
}

void stage_forward(const at::Tensor& x, const Mixes& m, int64_t row0, const at::Tensor& probs, const at::Tensor& weights) {
  const int64_t b = x.size(0), rows = x.size(2), s = x.size(3);
  const int64_t group = m.c * rows * s;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mta_ablate::mixed_softmax", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* pp = probs.defined() ? probs.data_ptr<scalar_t>() : nullptr;
    scalar_t* wp = weights.defined() ? weights.data_ptr<scalar_t>() : nullptr;
    stage_tasks<scalar_t>(m, b, rows, s, row0, [&](const auto& st, int64_t, int64_t bg, int64_t r0, int64_t r1,
                                                    scalar_t* buf) {
      st.forward(xp + bg * group, pp ? pp + bg * group : nullptr, wp ? wp + bg * group : nullptr, r0, r1, buf);
    });
  });
}

void check_maps(const at::Tensor& x, const char* what) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4, what, ": CPU maps (B, H, R, S)");
}

// The softmax stage with its intermediate maps kept for a backward: (probabilities, weights); weights is empty
// without a post mix (they are the probabilities).
std::vector<at::Tensor> mixed_softmax(const at::Tensor& x_in, const std::optional<at::Tensor>& pre,
                                      const std::optional<at::Tensor>& post, int64_t row0) {
  check_maps(x_in, "mta_ablate::mixed_softmax");
  const auto x = x_in.contiguous();
  const Mixes m = mixes(x, pre, post);
  auto probs = at::empty_like(x);
  auto weights = m.post.defined() ? at::empty_like(x) : at::empty({0}, x.options());
  stage_forward(x, m, row0, probs, m.post.defined() ? weights : at::Tensor());
  return {probs, weights};
}

// The softmax stage in place: the logits become the weights.
at::Tensor mixed_softmax_(at::Tensor x, const std::optional<at::Tensor>& pre, const std::optional<at::Tensor>& post,
                          int64_t row0) {
  check_maps(x, "mta_ablate::mixed_softmax_");
  TORCH_CHECK(x.is_contiguous(), "mta_ablate::mixed_softmax_: contiguous maps");
  stage_forward(x, mixes(x, pre, post), row0, at::Tensor(), x);
  return x;
}

// The softmax stage's backward, in place on dw (the weights' gradient becomes the logits'): returns the gradients
// of the pre and post mixes (empty where absent), summed over rows and batch in a fixed order.
std::vector<at::Tensor> mixed_softmax_backward_(at::Tensor dw, const at::Tensor& p_in,
                                                const std::optional<at::Tensor>& post,
                                                const std::optional<at::Tensor>& x_in,
                                                const std::optional<at::Tensor>& pre, int64_t row0) {
  check_maps(dw, "mta_ablate::mixed_softmax_backward_");
  TORCH_CHECK(dw.is_contiguous(), "mta_ablate::mixed_softmax_backward_: contiguous maps");
  const auto p = p_in.to(dw.scalar_type()).contiguous();
  const Mixes m = mixes(dw, pre, post);
  TORCH_CHECK(!m.pre.defined() || (x_in.has_value() && x_in->sizes() == dw.sizes()),
              "mta_ablate::mixed_softmax_backward_: the pre mix needs its input");
  const auto x = m.pre.defined() ? x_in->to(dw.scalar_type()).contiguous() : at::Tensor();
  const int64_t b = dw.size(0), rows = dw.size(2), s = dw.size(3), parts = (rows + STAGE_ROWS - 1) / STAGE_ROWS;
  const int64_t group = m.c * rows * s, cc = m.c * m.c;
  auto per = at::zeros({b, m.groups, parts, 2 * cc}, dw.options());
  AT_DISPATCH_FLOATING_TYPES(dw.scalar_type(), "mta_ablate::mixed_softmax_backward_", [&] {
    scalar_t* dp = dw.data_ptr<scalar_t>();
    const scalar_t* pp = p.data_ptr<scalar_t>();
    const scalar_t* xp = x.defined() ? x.data_ptr<scalar_t>() : nullptr;
    scalar_t* sums = per.data_ptr<scalar_t>();
    stage_tasks<scalar_t>(m, b, rows, s, row0, [&](const auto& st, int64_t t, int64_t bg, int64_t r0, int64_t r1,
                                                    scalar_t* buf) {
      st.backward(dp + bg * group, pp + bg * group, xp ? xp + bg * group : nullptr, r0, r1, sums + t * 2 * cc,
                  sums + t * 2 * cc + cc, buf);
    });
  });
  const auto total = sum_parts(per);  // (G, 2 C C)
  auto part = [&](int64_t k, bool present) {
    return present ? total.narrow(1, k * cc, cc).reshape({m.groups, m.c, m.c}) : at::empty({0}, dw.options());
  };
  return {part(0, m.pre.defined()), part(1, m.post.defined())};
}

// The head norm of an MTA layer, per row (one token's head, D values): n = x / rms(x) * w * scale, then
// with a scalar gate y = n * sigmoid(n . g + b), else y = n. Sums in the row's dtype, as torch's rms_norm on CPU.
// Returns (y, r, sg): r = 1 / rms per row, sg the gate per row (empty without a gate), for the backward.
// Rows are short (D = 16 to 128), so each step runs over a tile of NORM_ROWS rows before the next: a row's chain of
// reductions, square root and exponential would otherwise leave the core waiting on each result in turn.
constexpr int64_t NORM_ROWS = 64;  // rows per task: parameter-gradient partial sums are per task, summed in order

// out[r] = sigmoid(z[r] + bias) for n rows: fp32 a vector at a time (e^-|z| by `exp_nonpositive`), else std::exp.
template <typename T>
void sigmoid_rows(const T* z, T bias, int64_t n, T* out) {
  for (int64_t r = 0; r < n; ++r) out[r] = T(1) / (T(1) + std::exp(-(z[r] + bias)));
}

template <>
void sigmoid_rows<float>(const float* z, float bias, int64_t n, float* out) {
  using L = Lanes<float>;
  using V = L::V;
  for (int64_t r = 0; r < n; r += L::N) {
    alignas(64) float in[L::N] = {};
    std::copy(z + r, z + std::min(n, r + L::N), in);
    const V x = L::load(in) + bias;
    const V e = exp_nonpositive(x < 0 ? x : -x);  // e^-|x|
    const V a = 1.f / (1.f + e);
    const V s = x < 0 ? e * a : a;  // x >= 0: 1 / (1 + e^-x); x < 0: e^x / (1 + e^x)
    alignas(64) float res[L::N];
    L::store(res, s);
    std::copy(res, res + std::min(L::N, n - r), out + r);
  }
}

// sum_i a[i] b[i] (c[i]) over a short row (c may be null). fp32 rows of whole vectors: one vector of sums, added up
// as a tree (`sum_lanes`; a reduction loop is summed lane by lane); else a plain loop.
template <typename T>
T row_dot(const T* a, const T* b, const T* c, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    using L = Lanes<float>;
    if (n % L::N == 0) {
      L::V acc{};
      for (int64_t i = 0; i < n; i += L::N) acc += c ? L::load(a + i) * L::load(b + i) * L::load(c + i)
                                                     : L::load(a + i) * L::load(b + i);
      return sum_lanes(acc);
    }
  }
  T acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += c ? a[i] * b[i] * c[i] : a[i] * b[i];
  return acc;
}

std::vector<at::Tensor> head_norm(const at::Tensor& x_in, const at::Tensor& w_in, const std::optional<at::Tensor>& g_in,
                                  const std::optional<at::Tensor>& b_in, double scale, double eps) {
  TORCH_CHECK(x_in.device().is_cpu() && w_in.dim() == 1 && x_in.size(-1) == w_in.size(0),
              "mta_ablate::head_norm: CPU rows (..., D) and a weight (D)");
  const auto x = x_in.contiguous();
  const auto w = w_in.to(x.scalar_type()).contiguous();
  const bool gated = g_in.has_value() && g_in->defined();
  const int64_t d = x.size(-1), rows = x.numel() / std::max<int64_t>(1, d);
  const auto g = gated ? g_in->to(x.scalar_type()).contiguous().view({d}) : at::Tensor();
  const double bias = gated && b_in.has_value() ? b_in->item<double>() : 0.0;
  auto y = at::empty_like(x);
  auto r = at::empty({rows}, x.options());
  auto sg = gated ? at::empty({rows}, x.options()) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mta_ablate::head_norm", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *wp = w.data_ptr<scalar_t>();
    const scalar_t* gp = gated ? g.data_ptr<scalar_t>() : nullptr;
    scalar_t *yp = y.data_ptr<scalar_t>(), *rp = r.data_ptr<scalar_t>(), *sp = gated ? sg.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, rows, NORM_ROWS, [&](int64_t begin, int64_t end) {
      scalar_t ss[NORM_ROWS], gdot[NORM_ROWS];
      for (int64_t r0 = begin; r0 < end; r0 += NORM_ROWS) {
        const int64_t n = std::min(NORM_ROWS, end - r0);
        for (int64_t t = 0; t < n; ++t) {
          const scalar_t* xr = xp + (r0 + t) * d;
          ss[t] = row_dot<scalar_t>(xr, xr, nullptr, d);
        }
_Pragma("omp simd")
        for (int64_t t = 0; t < n; ++t) rp[r0 + t] = scalar_t(1) / std::sqrt(ss[t] / scalar_t(d) + scalar_t(eps));
        for (int64_t t = 0; t < n; ++t) {
          const scalar_t* xr = xp + (r0 + t) * d;
          scalar_t* yr = yp + (r0 + t) * d;
          const scalar_t k = rp[r0 + t] * scalar_t(scale);
_Pragma("omp simd")
          for (int64_t i = 0; i < d; ++i) yr[i] = xr[i] * k * wp[i];
          if (gated) gdot[t] = row_dot<scalar_t>(yr, gp, nullptr, d);
        }
        if (!gated) continue;
        sigmoid_rows<scalar_t>(gdot, scalar_t(bias), n, sp + r0);
        for (int64_t t = 0; t < n; ++t) {
          scalar_t* yr = yp + (r0 + t) * d;
          const scalar_t gate = sp[r0 + t];
_Pragma("omp simd")
          for (int64_t i = 0; i < d; ++i) yr[i] *= gate;
        }
      }
    });
  });
  return {y, r, sg};
}

// Backward of `head_norm`: (dx, dw, dg, db); dg and db empty without a gate. Parameter gradients are summed per task
// of NORM_ROWS rows, then over the tasks in order, so they do not depend on the thread count.
std::vector<at::Tensor> head_norm_backward(const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& w_in,
                                           const std::optional<at::Tensor>& g_in, const at::Tensor& r,
                                           const at::Tensor& sg, double scale) {
  const auto dy = dy_in.to(x_in.scalar_type()).contiguous();
  const auto x = x_in.contiguous();
  const auto w = w_in.to(x.scalar_type()).contiguous();
  const bool gated = g_in.has_value() && g_in->defined();
  const int64_t d = x.size(-1), rows = x.numel() / std::max<int64_t>(1, d);
  const auto g = gated ? g_in->to(x.scalar_type()).contiguous().view({d}) : at::Tensor();
  const int64_t tasks = (rows + NORM_ROWS - 1) / NORM_ROWS, width = 2 * d + 1;  // per task: dw, dg, db
  auto dx = at::empty_like(x);
  auto per = at::zeros({1, 1, tasks, width}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mta_ablate::head_norm_backward", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *wp = w.data_ptr<scalar_t>(), *dyp = dy.data_ptr<scalar_t>();
    const scalar_t *gp = gated ? g.data_ptr<scalar_t>() : nullptr, *rp = r.data_ptr<scalar_t>();
    const scalar_t* sp = gated ? sg.data_ptr<scalar_t>() : nullptr;
    scalar_t *dxp = dx.data_ptr<scalar_t>(), *pp = per.data_ptr<scalar_t>();
    at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<scalar_t> dn_tile(NORM_ROWS * d);
      scalar_t ds[NORM_ROWS], ux[NORM_ROWS];
      for (int64_t task = t0; task < t1; ++task) {
        scalar_t* dw = pp + task * width;
        scalar_t *dg = dw + d, *db = dw + 2 * d;
        const int64_t r0 = task * NORM_ROWS, n = std::min(rows, r0 + NORM_ROWS) - r0;
        if (gated) {  // y = n * s: dn = dy * s + (dy . n) s (1 - s) g
          for (int64_t t = 0; t < n; ++t) {
            const scalar_t *xr = xp + (r0 + t) * d, *dyr = dyp + (r0 + t) * d;
            const scalar_t k = rp[r0 + t] * scalar_t(scale);
            const scalar_t s = sp[r0 + t];
            ds[t] = row_dot<scalar_t>(dyr, xr, wp, d) * k * s * (1 - s);
          }
          for (int64_t t = 0; t < n; ++t) {
            const scalar_t *xr = xp + (r0 + t) * d, *dyr = dyp + (r0 + t) * d;
            const scalar_t k = rp[r0 + t] * scalar_t(scale), s = sp[r0 + t], dst = ds[t];
            scalar_t* dn = dn_tile.data() + t * d;
_Pragma("omp simd")
            for (int64_t i = 0; i < d; ++i) {
              dn[i] = dyr[i] * s + dst * gp[i];
              dg[i] += dst * xr[i] * k * wp[i];
            }
            *db += dst;
          }
        } else {
          std::copy(dyp + r0 * d, dyp + (r0 + n) * d, dn_tile.begin());
        }
        for (int64_t t = 0; t < n; ++t) {  // u = dn * w * scale; dx = inv * (u - x inv^2 mean(u x))
          const scalar_t* xr = xp + (r0 + t) * d;
          const scalar_t* dn = dn_tile.data() + t * d;
          const scalar_t k = rp[r0 + t] * scalar_t(scale);
_Pragma("omp simd")
          for (int64_t i = 0; i < d; ++i) dw[i] += dn[i] * xr[i] * k;
          ux[t] = row_dot<scalar_t>(dn, wp, xr, d) * scalar_t(scale);
        }
        for (int64_t t = 0; t < n; ++t) {
          const scalar_t* xr = xp + (r0 + t) * d;
          const scalar_t* dn = dn_tile.data() + t * d;
          const scalar_t inv = rp[r0 + t], m = ux[t] / scalar_t(d) * inv * inv;
_Pragma("omp simd")
          for (int64_t i = 0; i < d; ++i) dxp[(r0 + t) * d + i] = inv * (dn[i] * wp[i] * scalar_t(scale) - xr[i] * m);
        }
      }
    });
  });
  const auto total = sum_parts(per).view({width});
  const auto none = at::empty({0}, x.options());
  return {dx, total.narrow(0, 0, d).clone(), gated ? total.narrow(0, d, d).view(g_in->sizes()).clone() : none,
          gated ? total.narrow(0, 2 * d, 1).clone() : none};
}

}  // namespace

// Schemas here, CPU kernels below: other backends (fake tensors for memory plans) get Python implementations
// (`kernel.py`).
#ifndef MTA_NS  // -DMTA_NS=name: the ops under another name, to load and time two builds in one process
#define MTA_NS mta_ablate
#endif
TORCH_LIBRARY(MTA_NS, m) {
  m.def("conv(Tensor x, int x_row0, Tensor w, int out_row0, int out_rows, int left, bool flip) -> Tensor");
  m.def("conv_kernel_grad(Tensor dy, int dy_row0, Tensor x, int x_row0, int c_q, int c_k, int left) -> Tensor");
  m.def("mix(Tensor x, Tensor m, bool transpose) -> Tensor");
  m.def("mix_(Tensor(a!) x, Tensor m, bool transpose) -> Tensor(a!)");
  m.def("mix_backward_(Tensor(a!) dy, Tensor x, Tensor m) -> Tensor");
  m.def("mixed_softmax(Tensor x, Tensor? pre, Tensor? post, int row0) -> Tensor[]");
  m.def("mixed_softmax_(Tensor(a!) x, Tensor? pre, Tensor? post, int row0) -> Tensor(a!)");
  m.def("head_norm(Tensor x, Tensor w, Tensor? g, Tensor? b, float scale, float eps) -> Tensor[]");
  m.def("head_norm_backward(Tensor dy, Tensor x, Tensor w, Tensor? g, Tensor r, Tensor sg, float scale) -> Tensor[]");
  m.def("mixed_softmax_backward_(Tensor(a!) dw, Tensor p, Tensor? post, Tensor? x, Tensor? pre, int row0) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(MTA_NS, CPU, m) {
  m.impl("conv", &conv);
  m.impl("conv_kernel_grad", &conv_kernel_grad);
  m.impl("mix", &mix);
  m.impl("mix_", &mix_);
  m.impl("mix_backward_", &mix_backward_);
  m.impl("mixed_softmax", &mixed_softmax);
  m.impl("mixed_softmax_", &mixed_softmax_);
  m.impl("mixed_softmax_backward_", &mixed_softmax_backward_);
  m.impl("head_norm", &head_norm);
  m.impl("head_norm_backward", &head_norm_backward);
}
