// Deformable convolution v1/v2 (kernels.md §3): what the device-independent
// driver (deform_conv.cpp) and the per-device kernels
// (cpu/deform_conv_kernel.cpp, cuda/deform_conv_kernel.cu) share.
//
// Letters: B images, C input channels, D deformable groups, K = kh * kw taps
// (tap k = i * kw + j), P = Ho * Wo output positions. Offsets are
// [B, 2*D*K, Ho, Wo] with channel (d*K + k)*2 the row shift and +1 the column
// shift of tap k in deformable group d; the mask is [B, D*K, Ho, Wo] with
// channel d*K + k (the torchvision and original-CUDA layout).
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace atss_core {
namespace deform {

// Everything a kernel needs to know about one call except the batch size.
struct Geometry {
  int64_t channels, height, width;
  int64_t kernel_h, kernel_w;
  int64_t out_h, out_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dilation_h, dilation_w;
  int64_t deformable_groups;

  C10_HOST_DEVICE int64_t taps() const {
    return kernel_h * kernel_w;
  }
  C10_HOST_DEVICE int64_t positions() const {
    return out_h * out_w;
  }
  C10_HOST_DEVICE int64_t channels_per_deformable_group() const {
    return channels / deformable_groups;
  }
};

// The four integer neighbours of a fractional point in an H x W plane, corner
// c = 2 * row + col for (y0 + row, x0 + col), with coefficients such that
// sum_c coef[c] * value[c] gives the bilinear sample S (`weight`) and its
// derivatives dS/dy (`d_y`) and dS/dx (`d_x`). A neighbour outside the plane
// has index -1 and zero coefficients: the map is zero-padded, and a point
// outside (-1, H) x (-1, W) samples 0 with zero derivatives (kernels.md §3.2,
// §3.5; at integer coordinates the derivatives are forward differences).
template <typename T>
struct BilinearPoint {
  int64_t index[4];
  T weight[4];
  T d_y[4];
  T d_x[4];
};

template <typename T>
C10_HOST_DEVICE inline BilinearPoint<T> bilinear_point(T py, T px, int64_t height, int64_t width) {
  BilinearPoint<T> point;
  for (int c = 0; c < 4; ++c) {
    point.index[c] = -1;
    point.weight[c] = point.d_y[c] = point.d_x[c] = T(0);
  }
  // Written so that NaN coordinates also land here.
  if (!(py > T(-1) && px > T(-1) && py < T(height) && px < T(width))) {
    return point;
  }
  const T fy = ::floor(py);
  const T fx = ::floor(px);
  const int64_t y0 = static_cast<int64_t>(fy);
  const int64_t x0 = static_cast<int64_t>(fx);
  const T ly = py - fy;
  const T lx = px - fx;
  const T wy[2] = {T(1) - ly, ly};
  const T wx[2] = {T(1) - lx, lx};
  const T slope[2] = {T(-1), T(1)};  // d wy[r] / d py, d wx[c] / d px
  for (int r = 0; r < 2; ++r) {
    const int64_t y = y0 + r;
    for (int s = 0; s < 2; ++s) {
      const int64_t x = x0 + s;
      if (y < 0 || y >= height || x < 0 || x >= width) {
        continue;
      }
      const int c = 2 * r + s;
      point.index[c] = y * width + x;
      point.weight[c] = wy[r] * wx[s];
      point.d_y[c] = slope[r] * wx[s];
      point.d_x[c] = wy[r] * slope[s];
    }
  }
  return point;
}

template <typename T>
C10_HOST_DEVICE inline T corner_value(const T* plane, int64_t index) {
  return index >= 0 ? plane[index] : T(0);
}

// S at the point, from its H x W plane.
template <typename T>
C10_HOST_DEVICE inline T sample(const T* plane, const BilinearPoint<T>& point) {
  T value = 0;
  for (int c = 0; c < 4; ++c) {
    value += point.weight[c] * corner_value(plane, point.index[c]);
  }
  return value;
}

// S and its derivatives along y and x at the point.
template <typename T>
struct SampleWithGrad {
  T value, d_y, d_x;
};

template <typename T>
C10_HOST_DEVICE inline SampleWithGrad<T> sample_with_grad(const T* plane, const BilinearPoint<T>& point) {
  SampleWithGrad<T> out{T(0), T(0), T(0)};
  for (int c = 0; c < 4; ++c) {
    const T v = corner_value(plane, point.index[c]);
    out.value += point.weight[c] * v;
    out.d_y += point.d_y[c] * v;
    out.d_x += point.d_x[c] * v;
  }
  return out;
}

// Where tap k of output position p samples, given that tap's (dy, dx).
template <typename T>
C10_HOST_DEVICE inline BilinearPoint<T> tap_point(const Geometry& g, int64_t k, int64_t p, T dy, T dx) {
  const int64_t i = k / g.kernel_w;
  const int64_t j = k % g.kernel_w;
  const int64_t y = p / g.out_w;
  const int64_t x = p % g.out_w;
  const T py = static_cast<T>(y * g.stride_h - g.pad_h + i * g.dilation_h) + dy;
  const T px = static_cast<T>(x * g.stride_w - g.pad_w + j * g.dilation_w) + dx;
  return bilinear_point(py, px, g.height, g.width);
}

// The data of an optional (possibly undefined) tensor, or nullptr.
template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// Per-device kernels over a slice of n images; every tensor is contiguous and
// `mask` is undefined for DCNv1 (m = 1 below). Columns are [C*K, n*P] with
// row c*K + k and column b*P + p.
struct DeviceKernels {
  c10::DeviceType device_type;
  // False where col2im scatters with atomics: the input gradient then differs
  // in its last bits from run to run, and the backward op raises under
  // torch.use_deterministic_algorithms(True).
  bool deterministic_backward;
  // columns = m * S(input[b, c], tap k at p)
  void (*im2col)(const Geometry& g, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                 const at::Tensor& columns);
  // grad_input += each column gradient times m, scattered back to the
  // sampled corners with their bilinear weights
  void (*col2im)(const Geometry& g, const at::Tensor& grad_columns, const at::Tensor& offset, const at::Tensor& mask,
                 const at::Tensor& grad_input);
  // grad_offset = sum over the group's channels of grad_column * m * dS/d(y|x);
  // grad_mask (if defined) = the same sum of grad_column * S; both overwritten
  void (*coord_grad)(const Geometry& g, const at::Tensor& grad_columns, const at::Tensor& input,
                     const at::Tensor& offset, const at::Tensor& mask, const at::Tensor& grad_offset,
                     const at::Tensor& grad_mask);
};

// Defined by cpu/deform_conv_kernel.cpp and (CUDA builds) cuda/deform_conv_kernel.cu;
// deform_conv.cpp registers the ops for each device with its kernels.
extern const DeviceKernels kCpuKernels;
extern const DeviceKernels kCudaKernels;

}  // namespace deform
}  // namespace atss_core
