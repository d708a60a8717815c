// DCNv4's deformable sampling in one pass over memory: kernels.dcnv4 on the CPU
// (forward only; the backward is the pure-JAX one, dcnv4_cpu.py).
//
// Math as kernels/dcnv4.py (its module docstring): for output pixel (ho, wo) of image n,
// group g and kernel point k = i*ks + j, with the offsets and raw mask of that pixel's
// offset_mask row (lanes 3Kg + 2k, 3Kg + 2k + 1, 3Kg + 2K + k),
//   x = (wo*s - p + c) - c*scale + (i*dil + dx) * scale       c = (dil*(ks-1)) / 2
//   y = (ho*s - p + c) - c*scale + (j*dil + dy) * scale
//   out[n, ho, wo, g*D + d] = sum_k m_k * sum_corners w_corner * V[n, cy, cx, g*D + d]
// bilinear with zero padding (a corner off the map adds nothing), a point used only when
// -1 < x < W and -1 < y < H, as DCNv4 does.
//
// Layout: the model's own channels-last arrays, nothing transposed or materialised. A
// task owns one output row of one image; per (pixel, group) it keeps the D-channel sum
// in registers and adds each point's four corner rows (D contiguous channels each,
// weighted by m * bilinear weight) to it, so the whole op is one read of the offsets,
// 4K short row reads of V (which stays in cache) and one write of the output. A corner
// off the map gets weight 0 and reads an in-range row instead (no branch in the channel
// loop). D = 32 (every HRVMamba width) and 16, 64 are compiled with a fixed trip count;
// other D use the generic loop. Folding m into the corner weights rounds differently
// from the pure-JAX m * sum(w * V): float32 rounding, nothing more.
// Tasks run on XLA's CPU thread pool (the FFI ThreadPool context), the calling thread
// included.

#include <cmath>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "cpu_parallel_for.h"

namespace ffi = xla::ffi;

namespace {

struct Sampling {
  const float* value;        // (N, H, W, G*D)
  const float* offset_mask;  // (N, Ho, Wo, P)
  float* out;                // (N, Ho, Wo, G*D)
  int64_t height, width, out_height, out_width, lanes;  // lanes: P
  int64_t groups, depth;                                 // G, D
  int64_t kernel_size, stride, padding, dilation;
  float offset_scale;
};

// acc[0:D] += sum_corners (m * w_c) * row_c[0:D] for one kernel point at (x, y).
template <int64_t kDepth>
inline void AddPoint(const Sampling& s, const float* __restrict image, int64_t channel0,
                     float x, float y, float m, float* __restrict acc) {
  const int64_t H = s.height, W = s.width, C = s.groups * s.depth;
  const int64_t D = kDepth > 0 ? kDepth : s.depth;
  if (!(x > -1.f && x < W && y > -1.f && y < H)) return;
  const float x0f = std::floor(x), y0f = std::floor(y);
  const float lx = x - x0f, ly = y - y0f, hx = 1.f - lx, hy = 1.f - ly;
  const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f);
  const bool left = x0 >= 0, right = x0 + 1 < W, top = y0 >= 0, bottom = y0 + 1 < H;
  const float* base = image + (y0 * W + x0) * C + channel0;
  const float w00 = (top && left) ? m * hy * hx : 0.f;
  const float w01 = (top && right) ? m * hy * lx : 0.f;
  const float w10 = (bottom && left) ? m * ly * hx : 0.f;
  const float w11 = (bottom && right) ? m * ly * lx : 0.f;
  // Corners off the map get weight 0 and read a clamped (in-range) row instead.
  const float* r00 = (top && left) ? base : image;
  const float* r01 = (top && right) ? base + C : image;
  const float* r10 = (bottom && left) ? base + W * C : image;
  const float* r11 = (bottom && right) ? base + W * C + C : image;
  for (int64_t d = 0; d < D; ++d)
    acc[d] += w00 * r00[d] + w01 * r01[d] + w10 * r10[d] + w11 * r11[d];
}

// One output row `ho` of image `n`: every pixel, every group.
template <int64_t kDepth>
void SampleRow(const Sampling& s, int64_t n, int64_t ho) {
  constexpr int64_t kStack = kDepth > 0 ? kDepth : 1;
  const int64_t D = kDepth > 0 ? kDepth : s.depth, C = s.groups * D;
  const int64_t ks = s.kernel_size, K = ks * ks;
  const float scale = s.offset_scale;
  const int64_t centre = (s.dilation * (ks - 1)) / 2;
  const float* image = s.value + n * s.height * s.width * C;
  const float origin_y =
      static_cast<float>(ho * s.stride - s.padding + centre) - centre * scale;
  alignas(64) float stack_acc[kStack];
  std::vector<float> heap_acc(kDepth > 0 ? 0 : D);
  float* __restrict acc = kDepth > 0 ? stack_acc : heap_acc.data();
  for (int64_t wo = 0; wo < s.out_width; ++wo) {
    const int64_t pixel = (n * s.out_height + ho) * s.out_width + wo;
    const float* lanes = s.offset_mask + pixel * s.lanes;
    float* out = s.out + pixel * C;
    const float origin_x =
        static_cast<float>(wo * s.stride - s.padding + centre) - centre * scale;
    for (int64_t g = 0; g < s.groups; ++g) {
      const float* group_lanes = lanes + 3 * K * g;
      for (int64_t d = 0; d < D; ++d) acc[d] = 0.f;
      for (int64_t k = 0; k < K; ++k) {
        const float grid_x = static_cast<float>(k / ks * s.dilation);
        const float grid_y = static_cast<float>(k % ks * s.dilation);
        const float x = origin_x + (grid_x + group_lanes[2 * k]) * scale;
        const float y = origin_y + (grid_y + group_lanes[2 * k + 1]) * scale;
        AddPoint<kDepth>(s, image, g * D, x, y, group_lanes[2 * K + k], acc);
      }
      for (int64_t d = 0; d < D; ++d) out[g * D + d] = acc[d];
    }
  }
}

template <int64_t kDepth>
void SampleAll(ffi::ThreadPool& pool, const Sampling& s, int64_t batch) {
  const int64_t rows = batch * s.out_height;
  mamkpd::ParallelFor(pool, rows, [s](int64_t task) {
    SampleRow<kDepth>(s, task / s.out_height, task % s.out_height);
  });
}

ffi::Error Dcnv4Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> value,
                        ffi::Buffer<ffi::F32> offset_mask, ffi::ResultBuffer<ffi::F32> out,
                        int64_t groups, int64_t kernel_size, int64_t stride,
                        int64_t padding, int64_t dilation, float offset_scale) {
  const auto dims = value.dimensions();
  const auto om_dims = offset_mask.dimensions();
  if (dims.size() != 4 || om_dims.size() != 4 || om_dims[0] != dims[0] || groups < 1 ||
      dims[3] % groups != 0 || om_dims[3] < 3 * kernel_size * kernel_size * groups) {
    return ffi::Error::InvalidArgument(
        "dcnv4 cpu kernel: value must be (N, H, W, G*D) and offset_mask "
        "(N, Ho, Wo, P >= 3*K*G)");
  }
  Sampling s{value.typed_data(), offset_mask.typed_data(), out->typed_data(),
             dims[1], dims[2], om_dims[1], om_dims[2], om_dims[3],
             groups, dims[3] / groups, kernel_size, stride, padding, dilation,
             offset_scale};
  switch (s.depth) {
    case 16: SampleAll<16>(pool, s, dims[0]); break;
    case 32: SampleAll<32>(pool, s, dims[0]); break;
    case 64: SampleAll<64>(pool, s, dims[0]); break;
    default: SampleAll<0>(pool, s, dims[0]);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    MamkpdDcnv4Forward, Dcnv4Forward,
    ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::Buffer<ffi::F32>>()   // value
        .Arg<ffi::Buffer<ffi::F32>>()   // offset_mask
        .Ret<ffi::Buffer<ffi::F32>>()   // out
        .Attr<int64_t>("groups")
        .Attr<int64_t>("kernel_size")
        .Attr<int64_t>("stride")
        .Attr<int64_t>("padding")
        .Attr<int64_t>("dilation")
        .Attr<float>("offset_scale"));
