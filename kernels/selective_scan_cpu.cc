// SS2D's four-direction selective scan as one pass over memory: scan_impl="cpu_ffi".
//
// An XLA FFI handler for the CPU (forward only; the backward is the chunked scan's,
// selective_scan_cpu.py). Math as kernels/cross_scan.py, cross_selective_scan_reference:
// for each direction k visiting the tokens of a (H, W) map in its order,
//   delta = softplus(dts . W_k + bias_k)   (or a given delta + bias_k)
//   h_t   = exp(delta_t A_k) h_{t-1} + delta_t u_t B_t,    y_t = C_t . h_t
// and the four y's, merged back to row-major order, plus x * sum_k D_k, are the output.
//
// Layout: every array is the model's own (batch, H, W, ...) layout, channels last, so no
// permuted copy is made: direction k's token j is pixel (j / W, j % W) (k even) or
// (j % H, j / H) (k odd), reversed for k >= 2. A task owns one batch element and a tile
// of kTile channels: its state (N, kTile) and the tile's block of vectors stay in cache,
// and its four directions accumulate into its own slice of the output, so tasks never
// share a written byte. Inner loops run over the channel tile (contiguous), which the
// compiler vectorises, with inlined polynomial exp and log1p (FastExp, Softplus).
// Tasks run on XLA's own CPU thread pool (the FFI ThreadPool context), the calling
// thread included.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "cpu_parallel_for.h"

namespace ffi = xla::ffi;

namespace {

// Channels per task: kTile, or kNarrowTile when wide tiles would leave a thread idle
// (batch 1 at 192 channels is 3 wide tiles). Wide tiles halve the per-token overhead
// (index arithmetic, B/C/dts loads) per channel: ~1.6x in turns at MamKPD-B's shapes.
constexpr int64_t kTile = 64;
constexpr int64_t kNarrowTile = 32;
constexpr int64_t kBlock = 64;     // tokens per block of a direction
constexpr int kDirections = 4;

struct Inputs {
  const float* x;         // (batch, H, W, P)
  const float* delta;     // (batch, H, W, 4, R) dts (low rank) or (batch, H, W, 4, P) delta
  const float* weight_t;  // (4, R, P) dt_proj weight, transposed (low rank only)
  const float* a;         // (4, N, P)
  const float* b;         // (batch, H, W, 4, N)
  const float* c;         // (batch, H, W, 4, N)
  const float* d_sum;     // (P,) sum_k D_k
  const float* bias;      // (4, P)
  float* out;             // (batch, H, W, P)
  int64_t height, width, channels, rank, d_state;
  bool low_rank, softplus;
};

// exp(v), v clamped to [-87, 88]: 2^n * e^r, n = round(v / ln 2), |r| <= ln 2 / 2 by a two-constant
// reduction, e^r by its degree-6 Taylor polynomial (relative error < 2e-7); written
// in plain float and int arithmetic so that the compiler vectorises the loops it is in.
inline float FastExp(float v) {
  v = std::min(std::max(v, -87.f), 88.f);
  const float n = std::nearbyint(v * 1.44269504f);
  const float r = (v - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;     // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// softplus(v) = max(v, 0) + log1p(exp(-|v|)); log1p(t), t in (0, 1], as 2 atanh(s) with
// s = t / (2 + t) <= 1/3, by its odd series to s^13 (relative error < 1e-7).
inline float Softplus(float v) {
  const float t = FastExp(-std::fabs(v));
  const float s = t / (2.f + t), s2 = s * s;
  float q = 1.f / 13.f;
  q = q * s2 + 1.f / 11.f;
  q = q * s2 + 1.f / 9.f;
  q = q * s2 + 1.f / 7.f;
  q = q * s2 + 1.f / 5.f;
  q = q * s2 + 1.f / 3.f;
  q = q * s2 + 1.f;
  return std::max(v, 0.f) + 2.f * s * q;
}

// Per-task scratch: one block of a direction's tokens x the channel tile.
struct Block {
  alignas(64) float delta[kBlock][kTile];
  alignas(64) float decay[kBlock][kTile];   // exp(delta * A_n)
  alignas(64) float drive[kBlock][kTile];   // delta * u * B_n
  alignas(64) float y[kBlock][kTile];
  int64_t pixel[kBlock];
};

// Token i of direction k's order -> its pixel index (row-major, within image bi).
inline int64_t Pixel(int k, int64_t i, int64_t H, int64_t W, int64_t L) {
  const int64_t j = k >= 2 ? L - 1 - i : i;
  return (k % 2 == 0) ? j : (j % H) * W + j / H;
}

// delta of the block's tokens: softplus(bias + dts . W_k) or softplus(delta + bias).
template <int64_t kTileWidth>
void BlockDelta(const Inputs& in, int k, int64_t base, int64_t p0, int64_t tile,
                int64_t count, Block& blk) {
  if (kTileWidth > 0) tile = kTileWidth;
  const int64_t P = in.channels, R = in.rank;
  const float* bias = in.bias + k * P + p0;
  for (int64_t t = 0; t < count; ++t) {
    const int64_t pk = (base + blk.pixel[t]) * kDirections + k;
    float* d = blk.delta[t];
    if (in.low_rank) {
      const float* dts = in.delta + pk * R;
      for (int64_t p = 0; p < tile; ++p) d[p] = bias[p];
      for (int64_t r = 0; r < R; ++r) {
        const float dt = dts[r];
        const float* w = in.weight_t + (k * R + r) * P + p0;
        for (int64_t p = 0; p < tile; ++p) d[p] += dt * w[p];
      }
    } else {
      const float* given = in.delta + pk * P + p0;
      for (int64_t p = 0; p < tile; ++p) d[p] = given[p] + bias[p];
    }
    if (in.softplus) {
      for (int64_t p = 0; p < tile; ++p) d[p] = Softplus(d[p]);
    }
  }
}

// One task: batch element `bi`, channels [p0, p0 + tile). Per direction, per block of
// kBlock tokens: delta, then per state n the decays and drives (independent across
// tokens: long vectorised loops), then the recurrence h = decay h + drive, y += C_n h.
// kTileWidth > 0: the tile is that wide, known to the compiler (no remainder loops).
template <int64_t kTileWidth>
void ScanTile(const Inputs& in, int64_t bi, int64_t p0, int64_t tile, Block& blk) {
  if (kTileWidth > 0) tile = kTileWidth;
  const int64_t H = in.height, W = in.width, P = in.channels, N = in.d_state;
  const int64_t L = H * W, base = bi * L;
  std::vector<float> state(N * kTile);  // h, (N, kTile)
  for (int64_t t = 0; t < L; ++t) {   // the skip x * sum_k D_k
    const float* x_row = in.x + (base + t) * P + p0;
    float* out_row = in.out + (base + t) * P + p0;
    for (int64_t p = 0; p < tile; ++p) out_row[p] = x_row[p] * in.d_sum[p0 + p];
  }
  for (int k = 0; k < kDirections; ++k) {
    std::fill(state.begin(), state.end(), 0.f);
    for (int64_t i0 = 0; i0 < L; i0 += kBlock) {
      const int64_t count = std::min(kBlock, L - i0);
      for (int64_t t = 0; t < count; ++t) blk.pixel[t] = Pixel(k, i0 + t, H, W, L);
      BlockDelta<kTileWidth>(in, k, base, p0, tile, count, blk);
      for (int64_t t = 0; t < count; ++t) std::fill(blk.y[t], blk.y[t] + kTile, 0.f);
      for (int64_t n = 0; n < N; ++n) {
        const float* a_n = in.a + (k * N + n) * P + p0;
        for (int64_t t = 0; t < count; ++t) {
          const int64_t pk = (base + blk.pixel[t]) * kDirections + k;
          const float b_n = in.b[pk * N + n];
          const float* x_row = in.x + (base + blk.pixel[t]) * P + p0;
          for (int64_t p = 0; p < tile; ++p) {
            blk.decay[t][p] = FastExp(blk.delta[t][p] * a_n[p]);
            blk.drive[t][p] = blk.delta[t][p] * x_row[p] * b_n;
          }
        }
        float* h = state.data() + n * kTile;
        for (int64_t t = 0; t < count; ++t) {
          const float c_n = in.c[((base + blk.pixel[t]) * kDirections + k) * N + n];
          for (int64_t p = 0; p < tile; ++p) {
            h[p] = blk.decay[t][p] * h[p] + blk.drive[t][p];
            blk.y[t][p] += c_n * h[p];
          }
        }
      }
      for (int64_t t = 0; t < count; ++t) {
        float* out_row = in.out + (base + blk.pixel[t]) * P + p0;
        for (int64_t p = 0; p < tile; ++p) out_row[p] += blk.y[t][p];
      }
    }
  }
}

ffi::Error CrossScanForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                            ffi::Buffer<ffi::F32> delta, ffi::Buffer<ffi::F32> weight_t,
                            ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                            ffi::Buffer<ffi::F32> c, ffi::Buffer<ffi::F32> d_sum,
                            ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> out,
                            bool low_rank, bool softplus) {
  const auto dims = x.dimensions();
  if (dims.size() != 4 || b.dimensions().size() != 5) {
    return ffi::Error::InvalidArgument("cpu_ffi scan: x must be (b, H, W, P), B "
                                       "(b, H, W, 4, N)");
  }
  Inputs in{x.typed_data(), delta.typed_data(), weight_t.typed_data(), a.typed_data(),
            b.typed_data(), c.typed_data(), d_sum.typed_data(), bias.typed_data(),
            out->typed_data(), dims[1], dims[2], dims[3],
            low_rank ? delta.dimensions()[4] : 0, b.dimensions()[4], low_rank, softplus};
  const int64_t batch = dims[0];
  const int64_t wide_tasks = batch * ((in.channels + kTile - 1) / kTile);
  const int64_t width = wide_tasks >= 2 * (pool.num_threads() + 1) ? kTile : kNarrowTile;
  const int64_t tiles = (in.channels + width - 1) / width;
  mamkpd::ParallelFor(pool, batch * tiles, [in, tiles, width](int64_t task) {
    thread_local Block block;
    const int64_t p0 = (task % tiles) * width, tile = std::min(width, in.channels - p0);
    if (tile == kTile) {
      ScanTile<kTile>(in, task / tiles, p0, tile, block);
    } else if (tile == kNarrowTile) {
      ScanTile<kNarrowTile>(in, task / tiles, p0, tile, block);
    } else {
      ScanTile<0>(in, task / tiles, p0, tile, block);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    MamkpdCrossScanForward, CrossScanForward,
    ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::Buffer<ffi::F32>>()   // x
        .Arg<ffi::Buffer<ffi::F32>>()   // dts or delta
        .Arg<ffi::Buffer<ffi::F32>>()   // weight_t
        .Arg<ffi::Buffer<ffi::F32>>()   // A
        .Arg<ffi::Buffer<ffi::F32>>()   // B
        .Arg<ffi::Buffer<ffi::F32>>()   // C
        .Arg<ffi::Buffer<ffi::F32>>()   // sum_k D_k
        .Arg<ffi::Buffer<ffi::F32>>()   // bias
        .Ret<ffi::Buffer<ffi::F32>>()   // out
        .Attr<bool>("low_rank")
        .Attr<bool>("softplus"));
