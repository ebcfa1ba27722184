// CUDA kernels for atss_core::nms and atss_core::ml_nms (contract in ../nms.h).
//
// Boxes are sorted on the device, then every pair (i, j > i) of the sorted
// boxes is tested in 64 x 64 tiles: bit k of mask[i][c] says that box i
// suppresses box 64c + k. Only tiles on or above the diagonal are launched.
// A single block then runs the greedy pass over the mask in shared memory, so
// the only host sync is the final count of kept boxes.
//
// ml_nms sorts by (label, score), so each tile covers a range of labels; a tile
// whose row and column label ranges do not meet holds no suppression and is
// written as zeros without computing IoUs.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS  // per-operator headers: faster builds
#include <ATen/Dispatch.h>
#include <ATen/ceil_div.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>

#include "../nms.h"

namespace atss_core {
namespace {

constexpr int kTile = 64;  // bits in a mask word
constexpr int kMaxGreedyThreads = 1024;

// (row, col), row <= col, of upper-triangular tile number `linear`, with the
// tiles numbered column by column: column c holds (0, c), (1, c), ..., (c, c).
__device__ inline void triangular_tile(int64_t linear, int64_t& row, int64_t& col) {
  col = static_cast<int64_t>((sqrt(8.0 * static_cast<double>(linear) + 1.0) - 1.0) / 2.0);
  // Correct the float estimate at column boundaries.
  while (col * (col + 1) / 2 > linear) {
    --col;
  }
  while ((col + 1) * (col + 2) / 2 <= linear) {
    ++col;
  }
  row = linear - col * (col + 1) / 2;
}

// groups: label group of each sorted box (ml_nms), or nullptr (nms).
template <typename scalar_t>
__global__ void suppression_mask_kernel(
    const scalar_t* __restrict__ boxes,  // [n, 4], sorted
    const int64_t* __restrict__ groups,  // [n] or nullptr
    int64_t n,
    int64_t tiles,
    scalar_t iou_threshold,
    scalar_t offset,
    uint64_t* __restrict__ mask) {  // [n, tiles]
  int64_t row_tile, col_tile;
  triangular_tile(blockIdx.x, row_tile, col_tile);
  const int64_t row_start = row_tile * kTile;
  const int64_t col_start = col_tile * kTile;
  const int row_size = static_cast<int>(min(n - row_start, static_cast<int64_t>(kTile)));
  const int col_size = static_cast<int>(min(n - col_start, static_cast<int64_t>(kTile)));
  const int t = threadIdx.x;

  __shared__ scalar_t col_boxes[kTile][5];  // x1, y1, x2, y2, area
  __shared__ int64_t col_groups[kTile];
  if (t < col_size) {
    const scalar_t* b = boxes + 4 * (col_start + t);
    col_boxes[t][0] = b[0];
    col_boxes[t][1] = b[1];
    col_boxes[t][2] = b[2];
    col_boxes[t][3] = b[3];
    col_boxes[t][4] = box_area(b[0], b[1], b[2], b[3], offset);
    col_groups[t] = groups != nullptr ? groups[col_start + t] : 0;
  }
  __syncthreads();
  if (t >= row_size) {
    return;
  }
  const int64_t i = row_start + t;
  // Groups ascend along the sorted boxes and col_tile >= row_tile.
  const bool groups_meet = groups == nullptr || groups[row_start + row_size - 1] >= col_groups[0];
  uint64_t bits = 0;
  if (groups_meet) {
    const scalar_t* b = boxes + 4 * i;
    const scalar_t area = box_area(b[0], b[1], b[2], b[3], offset);
    const int64_t group = groups != nullptr ? groups[i] : 0;
    // On the diagonal tile only the later boxes.
    for (int k = row_tile == col_tile ? t + 1 : 0; k < col_size; ++k) {
      const scalar_t iou = box_iou(
          b[0], b[1], b[2], b[3], area,
          col_boxes[k][0], col_boxes[k][1], col_boxes[k][2], col_boxes[k][3], col_boxes[k][4],
          offset);
      if (col_groups[k] == group && iou > iou_threshold) {
        bits |= uint64_t(1) << k;
      }
    }
  }
  mask[i * tiles + col_tile] = bits;
}

// Greedy pass in one block: removed (shared) collects the mask rows of the
// kept boxes; keep[i] is set for every sorted position i that survives.
__global__ void greedy_keep_kernel(
    const uint64_t* __restrict__ mask,  // [n, tiles]
    int64_t n,
    int64_t tiles,
    bool* __restrict__ keep) {
  extern __shared__ uint64_t removed[];
  for (int64_t w = threadIdx.x; w < tiles; w += blockDim.x) {
    removed[w] = 0;
  }
  __syncthreads();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t word = i / kTile;
    // The same value in every thread, so the barrier below is not divergent.
    const bool kept = !((removed[word] >> (i % kTile)) & 1);
    if (threadIdx.x == 0) {
      keep[i] = kept;
    }
    if (kept) {
      __syncthreads();  // all have read removed[word] before it changes
      const uint64_t* row = mask + i * tiles;
      for (int64_t w = word + threadIdx.x; w < tiles; w += blockDim.x) {
        removed[w] |= row[w];
      }
    }
    __syncthreads();
  }
}

at::Tensor nms_on_device(
    const at::Tensor& boxes,
    const at::Tensor& order,
    const at::Tensor* groups,  // per sorted position (ml_nms), or nullptr
    double iou_threshold,
    double box_offset) {
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const int64_t tiles = at::ceil_div(n, static_cast<int64_t>(kTile));
  const size_t removed_bytes = tiles * sizeof(uint64_t);
  int shared_bytes = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(
      &shared_bytes, cudaDevAttrMaxSharedMemoryPerBlock, c10::cuda::current_device()));
  TORCH_CHECK(
      removed_bytes <= static_cast<size_t>(shared_bytes),
      "atss_core::nms: ", n, " boxes are too many for one CUDA call (at most ",
      shared_bytes / sizeof(uint64_t) * kTile, "); split them or pre-filter by score");
  const at::Tensor sorted_boxes = boxes.index_select(0, order).contiguous();
  at::Tensor sorted_groups = groups != nullptr ? groups->contiguous() : at::Tensor();
  // Words left of the diagonal are never written nor read.
  at::Tensor mask = at::empty({n, tiles}, boxes.options().dtype(at::kLong));
  at::Tensor keep_sorted = at::empty({n}, boxes.options().dtype(at::kBool));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "atss_core_nms_cuda", [&] {
    suppression_mask_kernel<scalar_t><<<tiles * (tiles + 1) / 2, kTile, 0, stream>>>(
        sorted_boxes.const_data_ptr<scalar_t>(),
        groups != nullptr ? sorted_groups.const_data_ptr<int64_t>() : nullptr,
        n,
        tiles,
        static_cast<scalar_t>(iou_threshold),
        static_cast<scalar_t>(box_offset),
        reinterpret_cast<uint64_t*>(mask.mutable_data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const int threads = static_cast<int>(
      std::min<int64_t>(kMaxGreedyThreads, at::ceil_div(tiles, int64_t(32)) * 32));
  greedy_keep_kernel<<<1, threads, removed_bytes, stream>>>(
      reinterpret_cast<const uint64_t*>(mask.const_data_ptr<int64_t>()),
      n,
      tiles,
      keep_sorted.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return kept_in_index_order(order, keep_sorted);
}

at::Tensor nms_cuda(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    double iou_threshold,
    double box_offset) {
  check_nms_inputs("atss_core::nms", boxes, scores, nullptr, box_offset, at::kCUDA);
  const c10::cuda::OptionalCUDAGuard device_guard(boxes.device());
  return nms_on_device(boxes, score_order(scores), nullptr, iou_threshold, box_offset);
}

at::Tensor ml_nms_cuda(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    double box_offset) {
  check_nms_inputs("atss_core::ml_nms", boxes, scores, &labels, box_offset, at::kCUDA);
  const c10::cuda::OptionalCUDAGuard device_guard(boxes.device());
  const auto [order, group] = label_grouped_order(scores, labels);
  return nms_on_device(boxes, order, &group, iou_threshold, box_offset);
}

}  // namespace

TORCH_LIBRARY_IMPL(atss_core, CUDA, m) {
  m.impl("nms", TORCH_FN(nms_cuda));
  m.impl("ml_nms", TORCH_FN(ml_nms_cuda));
}

}  // namespace atss_core
