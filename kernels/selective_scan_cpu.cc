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
// of kTile channels: its state (N, kTile) and the tile's per-token vectors stay in L1,
// and its four directions accumulate into its own slice of the output, so tasks never
// share a written byte. Inner loops run over the channel tile (contiguous), which the
// compiler vectorises, with glibc's vector expf/log1pf under -ffast-math.
// Tasks run on XLA's own CPU thread pool (the FFI ThreadPool context), the calling
// thread included.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kTile = 32;      // channels per task (8 AVX2 vectors)
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

// One task: batch element `bi`, channels [p0, p0 + tile).
void ScanTile(const Inputs& in, int64_t bi, int64_t p0, int64_t tile) {
  const int64_t H = in.height, W = in.width, P = in.channels, R = in.rank, N = in.d_state;
  const int64_t L = H * W;
  alignas(64) float delta[kTile], drive[kTile], y[kTile];
  std::vector<float> state(N * kTile);  // h, (N, kTile)
  float* h = state.data();
  for (int64_t t = 0; t < L; ++t) {   // the skip x * sum_k D_k
    const float* x_row = in.x + (bi * L + t) * P + p0;
    float* out_row = in.out + (bi * L + t) * P + p0;
    for (int64_t p = 0; p < tile; ++p) out_row[p] = x_row[p] * in.d_sum[p0 + p];
  }
  for (int k = 0; k < kDirections; ++k) {
    std::fill(h, h + N * kTile, 0.f);
    const float* bias = in.bias + k * P + p0;
    for (int64_t i = 0; i < L; ++i) {
      const int64_t j = k >= 2 ? L - 1 - i : i;          // token j of direction k
      const int64_t row = (k % 2 == 0) ? j / W : j % H;
      const int64_t col = (k % 2 == 0) ? j % W : j / H;
      const int64_t pixel = (bi * H + row) * W + col;
      const float* x_row = in.x + pixel * P + p0;
      const float* b_row = in.b + (pixel * kDirections + k) * N;
      const float* c_row = in.c + (pixel * kDirections + k) * N;
      float* out_row = in.out + pixel * P + p0;
      if (in.low_rank) {                                  // dt_proj: R multiply-adds
        const float* dts = in.delta + (pixel * kDirections + k) * R;
        for (int64_t p = 0; p < tile; ++p) delta[p] = bias[p];
        for (int64_t r = 0; r < R; ++r) {
          const float dt = dts[r];
          const float* w = in.weight_t + (k * R + r) * P + p0;
          for (int64_t p = 0; p < tile; ++p) delta[p] += dt * w[p];
        }
      } else {
        const float* given = in.delta + (pixel * kDirections + k) * P + p0;
        for (int64_t p = 0; p < tile; ++p) delta[p] = given[p] + bias[p];
      }
      if (in.softplus) {  // max(v, 0) + log1p(exp(-|v|)), as selective_scan_chunked.softplus
        for (int64_t p = 0; p < tile; ++p) {
          const float v = delta[p];
          delta[p] = std::max(v, 0.f) + std::log1p(std::exp(-std::fabs(v)));
        }
      }
      for (int64_t p = 0; p < tile; ++p) {
        drive[p] = delta[p] * x_row[p];
        y[p] = 0.f;
      }
      for (int64_t n = 0; n < N; ++n) {
        const float b_n = b_row[n], c_n = c_row[n];
        const float* a_n = in.a + (k * N + n) * P + p0;
        float* h_n = h + n * kTile;
        for (int64_t p = 0; p < tile; ++p) {
          const float h_new = std::exp(delta[p] * a_n[p]) * h_n[p] + drive[p] * b_n;
          h_n[p] = h_new;
          y[p] += c_n * h_new;
        }
      }
      for (int64_t p = 0; p < tile; ++p) out_row[p] += y[p];
    }
  }
}

// Runs task(0 .. count-1) on the pool's threads and this one; returns when all are done.
template <typename Task>
void ParallelFor(ffi::ThreadPool& pool, int64_t count, Task task) {
  struct Progress {
    std::atomic<int64_t> next{0}, done{0};
    std::mutex mutex;
    std::condition_variable all_done;
  };
  auto progress = std::make_shared<Progress>();
  auto worker = [progress, count, task]() {
    int64_t finished = 0;
    for (int64_t t; (t = progress->next.fetch_add(1)) < count; ++finished) task(t);
    if (finished > 0 && progress->done.fetch_add(finished) + finished == count) {
      std::lock_guard<std::mutex> lock(progress->mutex);
      progress->all_done.notify_all();
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), count) - 1;
  for (int64_t i = 0; i < helpers; ++i) {  // a helper that starts late finds no task left
    auto copy = worker;
    pool.Schedule(std::move(copy));
  }
  worker();
  std::unique_lock<std::mutex> lock(progress->mutex);
  progress->all_done.wait(lock, [&] { return progress->done.load() == count; });
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
  const int64_t batch = dims[0], tiles = (in.channels + kTile - 1) / kTile;
  ParallelFor(pool, batch * tiles, [in, tiles](int64_t task) {
    const int64_t p0 = (task % tiles) * kTile;
    ScanTile(in, task / tiles, p0, std::min(kTile, in.channels - p0));
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
