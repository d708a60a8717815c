// A depth-wise k x k convolution over a channels-last map, plus bias, in one pass:
// models.common.DepthwiseConv on the CPU (depthwise_conv.py).
//
// XLA:CPU runs a grouped lax.conv slowly, and the shifted-sum form (k*k strided windows
// multiplied and added) makes it materialise each shifted window as its own array once
// the multiply-adds are fused with what follows; this kernel reads each input once and
// writes each output once.
//
//   out[n, oh, ow, c] = bias[c] + sum_{i,j} x[n, oh*sh + i - ph, ow*sw + j - pw, c]
//                                           * kernel[i, j, c]
// with zero padding. A task owns one output row of one image, computed in blocks of
// kCols pixels x kVec channels whose sums stay in vector registers over the k*k taps.
// Tasks run on XLA's CPU thread pool (the FFI ThreadPool context), the calling thread
// included.

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"
#include "cpu_parallel_for.h"

namespace ffi = xla::ffi;

namespace {

struct Conv {
  const float* x;       // (N, H, W, C)
  const float* kernel;  // (KH, KW, C)
  const float* bias;    // (C,) or nullptr
  float* out;           // (N, OH, OW, C)
  int64_t height, width, channels, out_height, out_width;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
};

constexpr int64_t kVec = 16;    // channels per accumulator (one AVX-512 vector)
constexpr int64_t kCols = 4;    // output pixels per block: each kernel load serves kCols

// A vector of kVec floats (GCC/Clang vector extension: AVX-512 registers where the CPU
// has them, else several narrower ones).
typedef float Vec __attribute__((vector_size(kVec * sizeof(float))));

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// kCols output pixels from ow0 of row `oh` of image `n`, channels [c0, c0 + kVec): the
// kCols sums stay in vector registers over the k*k taps. kInterior: every tap of every
// pixel lies inside the row (no bounds checks).
template <bool kInterior>
void ConvBlockFull(const Conv& cv, int64_t n, int64_t oh, int64_t ow0, int64_t c0) {
  const int64_t C = cv.channels;
  const Vec bias = cv.bias ? Load(cv.bias + c0) : Vec{};
  Vec acc[kCols];
  for (int64_t o = 0; o < kCols; ++o) acc[o] = bias;
  for (int64_t i = 0; i < cv.kernel_h; ++i) {
    const int64_t h = oh * cv.stride_h + i - cv.pad_h;
    if (h < 0 || h >= cv.height) continue;
    const float* x_row = cv.x + (n * cv.height + h) * cv.width * C + c0;
    for (int64_t j = 0; j < cv.kernel_w; ++j) {
      const Vec k = Load(cv.kernel + (i * cv.kernel_w + j) * C + c0);
      for (int64_t o = 0; o < kCols; ++o) {
        const int64_t w = (ow0 + o) * cv.stride_w + j - cv.pad_w;
        if (kInterior || (w >= 0 && w < cv.width)) acc[o] += Load(x_row + w * C) * k;
      }
    }
  }
  for (int64_t o = 0; o < kCols; ++o) {
    float* out_px = cv.out + ((n * cv.out_height + oh) * cv.out_width + ow0 + o) * C + c0;
    std::memcpy(out_px, &acc[o], sizeof(Vec));
  }
}

// Any block: `cols` <= kCols pixels, `width` <= kVec channels (the row's last pixels,
// the last channels).
void ConvBlockPartial(const Conv& cv, int64_t n, int64_t oh, int64_t ow0, int64_t cols,
                      int64_t c0, int64_t width) {
  const int64_t C = cv.channels;
  for (int64_t o = 0; o < cols; ++o) {
    float acc[kVec];
    for (int64_t c = 0; c < width; ++c) acc[c] = cv.bias ? cv.bias[c0 + c] : 0.f;
    for (int64_t i = 0; i < cv.kernel_h; ++i) {
      const int64_t h = oh * cv.stride_h + i - cv.pad_h;
      if (h < 0 || h >= cv.height) continue;
      for (int64_t j = 0; j < cv.kernel_w; ++j) {
        const int64_t w = (ow0 + o) * cv.stride_w + j - cv.pad_w;
        if (w < 0 || w >= cv.width) continue;
        const float* x_px = cv.x + ((n * cv.height + h) * cv.width + w) * C + c0;
        const float* k = cv.kernel + (i * cv.kernel_w + j) * C + c0;
        for (int64_t c = 0; c < width; ++c) acc[c] += x_px[c] * k[c];
      }
    }
    float* out_px = cv.out + ((n * cv.out_height + oh) * cv.out_width + ow0 + o) * C + c0;
    std::copy(acc, acc + width, out_px);
  }
}

// One output row `oh` of image `n`.
void ConvRow(const Conv& cv, int64_t n, int64_t oh) {
  for (int64_t ow0 = 0; ow0 < cv.out_width; ow0 += kCols) {
    const int64_t cols = std::min(kCols, cv.out_width - ow0);
    for (int64_t c0 = 0; c0 < cv.channels; c0 += kVec) {
      const int64_t width = std::min(kVec, cv.channels - c0);
      const bool interior = ow0 * cv.stride_w - cv.pad_w >= 0 &&
          (ow0 + kCols - 1) * cv.stride_w + cv.kernel_w - 1 - cv.pad_w < cv.width;
      if (width == kVec && cols == kCols && interior) {
        ConvBlockFull<true>(cv, n, oh, ow0, c0);
      } else if (width == kVec && cols == kCols) {
        ConvBlockFull<false>(cv, n, oh, ow0, c0);
      } else {
        ConvBlockPartial(cv, n, oh, ow0, cols, c0, width);
      }
    }
  }
}

ffi::Error DepthwiseConvForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                                ffi::Buffer<ffi::F32> kernel, ffi::Buffer<ffi::F32> bias,
                                ffi::ResultBuffer<ffi::F32> out, int64_t stride_h,
                                int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                bool use_bias) {
  const auto xd = x.dimensions(), kd = kernel.dimensions(), od = out->dimensions();
  if (xd.size() != 4 || kd.size() != 3 || od.size() != 4 || kd[2] != xd[3] ||
      od[3] != xd[3] || od[0] != xd[0]) {
    return ffi::Error::InvalidArgument(
        "depthwise conv: x must be (N, H, W, C), kernel (KH, KW, C), out (N, OH, OW, C)");
  }
  Conv cv{x.typed_data(), kernel.typed_data(), use_bias ? bias.typed_data() : nullptr,
          out->typed_data(), xd[1], xd[2], xd[3], od[1], od[2], kd[0], kd[1],
          stride_h, stride_w, pad_h, pad_w};
  const int64_t rows = xd[0] * cv.out_height;
  mamkpd::ParallelFor(pool, rows, [cv](int64_t task) {
    ConvRow(cv, task / cv.out_height, task % cv.out_height);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    MamkpdDepthwiseConvForward, DepthwiseConvForward,
    ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::Buffer<ffi::F32>>()   // x
        .Arg<ffi::Buffer<ffi::F32>>()   // kernel (KH, KW, C)
        .Arg<ffi::Buffer<ffi::F32>>()   // bias (C,)
        .Ret<ffi::Buffer<ffi::F32>>()   // out
        .Attr<int64_t>("stride_h")
        .Attr<int64_t>("stride_w")
        .Attr<int64_t>("pad_h")
        .Attr<int64_t>("pad_w")
        .Attr<bool>("use_bias"));
