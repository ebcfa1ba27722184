// CUDA kernels of atss_core::deform_conv_forward/backward (driver and layouts:
// deform_conv.cpp, deform_conv.h). Grid-stride loops with int64 indices, on
// the current stream; col2im scatters with atomics, so the input gradient is
// not bitwise deterministic.
#include "deform_conv.h"

#include <ATen/Dispatch.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>

namespace atss_core {
namespace deform {
namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t work) {
  // Grid-stride loops cover any remainder.
  return std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, int64_t(1) << 16));
}

#define ATSS_GRID_STRIDE_LOOP(i, n)                                                       \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Offset row (dy) of tap k for image b and deformable group d; dx is P further.
__device__ int64_t offset_row(const Geometry& g, int64_t b, int64_t d, int64_t k) {
  return ((b * g.deformable_groups + d) * g.taps() + k) * 2 * g.positions();
}

// One thread per (channel, image, position), looping over the taps.
template <typename T>
__global__ void im2col_kernel(Geometry g, int64_t n, const T* input, const T* offset, const T* mask, T* columns) {
  const int64_t K = g.taps(), P = g.positions();
  ATSS_GRID_STRIDE_LOOP(index, g.channels * n * P) {
    const int64_t p = index % P;
    const int64_t b = index / P % n;
    const int64_t c = index / P / n;
    const int64_t d = c / g.channels_per_deformable_group();
    const T* plane = input + (b * g.channels + c) * g.height * g.width;
    for (int64_t k = 0; k < K; ++k) {
      const T* dy = offset + offset_row(g, b, d, k) + p;
      T value = sample(plane, tap_point(g, k, p, dy[0], dy[P]));
      if (mask != nullptr) {
        value *= mask[((b * g.deformable_groups + d) * K + k) * P + p];
      }
      columns[(c * K + k) * n * P + b * P + p] = value;
    }
  }
}

// One thread per column element, scattering to up to four input pixels.
template <typename T>
__global__ void col2im_kernel(Geometry g, int64_t n, const T* grad_columns, const T* offset, const T* mask,
                              T* grad_input) {
  const int64_t K = g.taps(), P = g.positions();
  ATSS_GRID_STRIDE_LOOP(index, g.channels * K * n * P) {
    const int64_t p = index % P;
    const int64_t b = index / P % n;
    const int64_t k = index / P / n % K;
    const int64_t c = index / P / n / K;
    const int64_t d = c / g.channels_per_deformable_group();
    const T* dy = offset + offset_row(g, b, d, k) + p;
    const BilinearPoint<T> point = tap_point(g, k, p, dy[0], dy[P]);
    T grad = grad_columns[index];
    if (mask != nullptr) {
      grad *= mask[((b * g.deformable_groups + d) * K + k) * P + p];
    }
    T* plane = grad_input + (b * g.channels + c) * g.height * g.width;
    for (int corner = 0; corner < 4; ++corner) {
      if (point.index[corner] >= 0) {
        gpuAtomicAddNoReturn(plane + point.index[corner], point.weight[corner] * grad);
      }
    }
  }
}

// One thread per (image, deformable group, tap, position), summing over the
// group's channels; it alone writes its offset pair and mask element.
template <typename T>
__global__ void coord_grad_kernel(Geometry g, int64_t n, const T* grad_columns, const T* input, const T* offset,
                                  const T* mask, T* grad_offset, T* grad_mask) {
  const int64_t K = g.taps(), P = g.positions(), D = g.deformable_groups;
  const int64_t group_channels = g.channels_per_deformable_group();
  ATSS_GRID_STRIDE_LOOP(index, n * D * K * P) {
    const int64_t p = index % P;
    const int64_t k = index / P % K;
    const int64_t d = index / P / K % D;
    const int64_t b = index / P / K / D;
    const int64_t row = offset_row(g, b, d, k) + p;
    const BilinearPoint<T> point = tap_point(g, k, p, offset[row], offset[row + P]);
    T sum_y = 0, sum_x = 0, sum_s = 0;
    for (int64_t c = d * group_channels; c < (d + 1) * group_channels; ++c) {
      const T* plane = input + (b * g.channels + c) * g.height * g.width;
      const T grad = grad_columns[(c * K + k) * n * P + b * P + p];
      const SampleWithGrad<T> s = sample_with_grad(plane, point);
      sum_s += grad * s.value;
      sum_y += grad * s.d_y;
      sum_x += grad * s.d_x;
    }
    const T m = mask != nullptr ? mask[index] : T(1);
    grad_offset[row] = m * sum_y;
    grad_offset[row + P] = m * sum_x;
    if (grad_mask != nullptr) {
      grad_mask[index] = sum_s;
    }
  }
}

void im2col_cuda(const Geometry& g, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                 const at::Tensor& columns) {
  const int64_t n = input.size(0);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "atss_core_deform_im2col_cuda", [&] {
    im2col_kernel<scalar_t><<<blocks_for(g.channels * n * g.positions()), kThreads, 0,
                              at::cuda::getCurrentCUDAStream()>>>(
        g, n, input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
        columns.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void col2im_cuda(const Geometry& g, const at::Tensor& grad_columns, const at::Tensor& offset,
                 const at::Tensor& mask, const at::Tensor& grad_input) {
  const int64_t n = grad_input.size(0);
  AT_DISPATCH_FLOATING_TYPES(grad_columns.scalar_type(), "atss_core_deform_col2im_cuda", [&] {
    col2im_kernel<scalar_t><<<blocks_for(grad_columns.numel()), kThreads, 0,
                              at::cuda::getCurrentCUDAStream()>>>(
        g, n, grad_columns.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
        data_or_null<scalar_t>(mask), grad_input.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void coord_grad_cuda(const Geometry& g, const at::Tensor& grad_columns, const at::Tensor& input,
                     const at::Tensor& offset, const at::Tensor& mask, const at::Tensor& grad_offset,
                     const at::Tensor& grad_mask) {
  const int64_t n = input.size(0);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "atss_core_deform_coord_grad_cuda", [&] {
    coord_grad_kernel<scalar_t><<<blocks_for(n * g.deformable_groups * g.taps() * g.positions()), kThreads, 0,
                                  at::cuda::getCurrentCUDAStream()>>>(
        g, n, grad_columns.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
        offset.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(mask), grad_offset.mutable_data_ptr<scalar_t>(),
        grad_mask.defined() ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

const DeviceKernels kCudaKernels{
    c10::DeviceType::CUDA, /*deterministic_backward=*/false, im2col_cuda, col2im_cuda, coord_grad_cuda};

}  // namespace deform
}  // namespace atss_core
