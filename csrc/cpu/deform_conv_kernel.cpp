// CPU kernels of atss_core::deform_conv_forward/backward (driver and layouts:
// deform_conv.cpp, deform_conv.h).
//
// The sample points of an (image, deformable group, tap) row depend only on
// the offsets, so a task computes them once for a block of the group's
// channels. Tasks own disjoint output rows or input planes, so nothing is
// written by two threads and the results are deterministic.
#include "deform_conv.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace atss_core {
namespace deform {
namespace {

// Channels of one deformable group handled by one task: enough tasks for the
// threads, few enough that the sample points are reused many times.
constexpr int64_t kChannelBlock = 16;

// The fewest tasks a thread takes (about GRAIN_SIZE samples), so that small
// calls such as DW's 4-channel sampling run inline, without a thread hand-off.
int64_t grain(int64_t samples_per_task) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, samples_per_task));
}

// The sample points of tap k at every output position of one image and
// deformable group; `offset` points at that image and group ([2K, P]).
template <typename T>
void tap_points(const Geometry& g, const T* offset, int64_t k, BilinearPoint<T>* points) {
  const int64_t positions = g.positions();
  const T* dy = offset + 2 * k * positions;
  const T* dx = dy + positions;
  for (int64_t p = 0; p < positions; ++p) {
    points[p] = tap_point(g, k, p, dy[p], dx[p]);
  }
}

// Calls body(b, c, k, points, m) for every image b, channel c and tap k,
// where points[p] is where tap k of position p samples and m the tap's mask
// row (nullptr for DCNv1). Parallel over blocks of channels that share a
// deformable group, so the points are computed once per block; each task
// touches only its own channels' planes and column rows.
template <typename T, typename Body>
void for_each_channel_tap(const Geometry& g, int64_t n, const T* offset, const T* mask, const Body& body) {
  const int64_t K = g.taps(), P = g.positions(), D = g.deformable_groups;
  const int64_t group_channels = g.channels_per_deformable_group();
  const int64_t blocks_per_group = (group_channels + kChannelBlock - 1) / kChannelBlock;
  const int64_t samples_per_task = std::min(kChannelBlock, group_channels) * K * P;
  at::parallel_for(0, n * D * blocks_per_group, grain(samples_per_task), [&](int64_t begin, int64_t end) {
    std::vector<BilinearPoint<T>> points(P);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bd = t / blocks_per_group;  // b * D + d
      const int64_t first = bd % D * group_channels + t % blocks_per_group * kChannelBlock;
      const int64_t last = std::min(first + kChannelBlock, (bd % D + 1) * group_channels);
      for (int64_t k = 0; k < K; ++k) {
        tap_points(g, offset + bd * 2 * K * P, k, points.data());
        const T* m = mask ? mask + (bd * K + k) * P : nullptr;
        for (int64_t c = first; c < last; ++c) {
          body(bd / D, c, k, points.data(), m);
        }
      }
    }
  });
}

template <typename T>
void im2col(const Geometry& g, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
            const at::Tensor& columns) {
  const int64_t n = input.size(0), K = g.taps(), P = g.positions(), plane_size = g.height * g.width;
  const T* in = input.const_data_ptr<T>();
  T* col = columns.mutable_data_ptr<T>();
  for_each_channel_tap(
      g, n, offset.const_data_ptr<T>(), data_or_null<T>(mask),
      [&](int64_t b, int64_t c, int64_t k, const BilinearPoint<T>* points, const T* m) {
        const T* plane = in + (b * g.channels + c) * plane_size;
        T* row = col + (c * K + k) * n * P + b * P;
        for (int64_t p = 0; p < P; ++p) {
          const T value = sample(plane, points[p]);
          row[p] = m ? m[p] * value : value;
        }
      });
}

template <typename T>
void col2im(const Geometry& g, const at::Tensor& grad_columns, const at::Tensor& offset, const at::Tensor& mask,
            const at::Tensor& grad_input) {
  const int64_t n = grad_input.size(0), K = g.taps(), P = g.positions(), plane_size = g.height * g.width;
  const T* gcol = grad_columns.const_data_ptr<T>();
  T* grad_in = grad_input.mutable_data_ptr<T>();
  // A task owns the grad_input planes of its channels: no atomics needed.
  for_each_channel_tap(
      g, n, offset.const_data_ptr<T>(), data_or_null<T>(mask),
      [&](int64_t b, int64_t c, int64_t k, const BilinearPoint<T>* points, const T* m) {
        T* plane = grad_in + (b * g.channels + c) * plane_size;
        const T* row = gcol + (c * K + k) * n * P + b * P;
        for (int64_t p = 0; p < P; ++p) {
          const T grad = m ? m[p] * row[p] : row[p];
          for (int corner = 0; corner < 4; ++corner) {
            if (points[p].index[corner] >= 0) {
              plane[points[p].index[corner]] += points[p].weight[corner] * grad;
            }
          }
        }
      });
}

template <typename T>
void coord_grad(const Geometry& g, const at::Tensor& grad_columns, const at::Tensor& input,
                const at::Tensor& offset, const at::Tensor& mask, const at::Tensor& grad_offset,
                const at::Tensor& grad_mask) {
  const int64_t n = input.size(0), K = g.taps(), P = g.positions(), D = g.deformable_groups;
  const int64_t plane_size = g.height * g.width, group_channels = g.channels_per_deformable_group();
  const T* in = input.const_data_ptr<T>();
  const T* gcol = grad_columns.const_data_ptr<T>();
  const T* off = offset.const_data_ptr<T>();
  const T* msk = data_or_null<T>(mask);
  T* grad_off = grad_offset.mutable_data_ptr<T>();
  T* grad_msk = grad_mask.defined() ? grad_mask.mutable_data_ptr<T>() : nullptr;
  // One task per (image, deformable group, tap) row of offsets: it sums over
  // the group's channels into its own rows.
  at::parallel_for(0, n * D * K, grain(group_channels * P), [&](int64_t begin, int64_t end) {
    std::vector<BilinearPoint<T>> points(P);
    std::vector<T> sum_y(P), sum_x(P), sum_s(P);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t k = t % K;
      const int64_t bd = t / K;  // b * D + d
      const int64_t b = bd / D;
      tap_points(g, off + bd * 2 * K * P, k, points.data());
      std::fill(sum_y.begin(), sum_y.end(), T(0));
      std::fill(sum_x.begin(), sum_x.end(), T(0));
      std::fill(sum_s.begin(), sum_s.end(), T(0));
      const int64_t c_begin = bd % D * group_channels;
      for (int64_t c = c_begin; c < c_begin + group_channels; ++c) {
        const T* plane = in + (b * g.channels + c) * plane_size;
        const T* row = gcol + (c * K + k) * n * P + b * P;
        for (int64_t p = 0; p < P; ++p) {
          const SampleWithGrad<T> s = sample_with_grad(plane, points[p]);
          sum_y[p] += row[p] * s.d_y;
          sum_x[p] += row[p] * s.d_x;
          sum_s[p] += row[p] * s.value;
        }
      }
      const T* m = msk ? msk + t * P : nullptr;
      T* out_y = grad_off + (bd * K + k) * 2 * P;
      T* out_x = out_y + P;
      for (int64_t p = 0; p < P; ++p) {
        out_y[p] = m ? m[p] * sum_y[p] : sum_y[p];
        out_x[p] = m ? m[p] * sum_x[p] : sum_x[p];
      }
      if (grad_msk) {
        std::copy(sum_s.begin(), sum_s.end(), grad_msk + t * P);
      }
    }
  });
}

void im2col_cpu(const Geometry& g, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                const at::Tensor& columns) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "atss_core_deform_im2col_cpu", [&] {
    im2col<scalar_t>(g, input, offset, mask, columns);
  });
}

void col2im_cpu(const Geometry& g, const at::Tensor& grad_columns, const at::Tensor& offset,
                const at::Tensor& mask, const at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES(grad_columns.scalar_type(), "atss_core_deform_col2im_cpu", [&] {
    col2im<scalar_t>(g, grad_columns, offset, mask, grad_input);
  });
}

void coord_grad_cpu(const Geometry& g, const at::Tensor& grad_columns, const at::Tensor& input,
                    const at::Tensor& offset, const at::Tensor& mask, const at::Tensor& grad_offset,
                    const at::Tensor& grad_mask) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "atss_core_deform_coord_grad_cpu", [&] {
    coord_grad<scalar_t>(g, grad_columns, input, offset, mask, grad_offset, grad_mask);
  });
}

}  // namespace

const DeviceKernels kCpuKernels{
    c10::DeviceType::CPU, /*deterministic_backward=*/true, im2col_cpu, col2im_cpu, coord_grad_cpu};

}  // namespace deform
}  // namespace atss_core
