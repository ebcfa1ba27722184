// CPU kernels for atss_core::nms and atss_core::ml_nms (contract in ../nms.h).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS  // per-operator headers: faster builds
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "../nms.h"

namespace atss_core {
namespace {

// Greedy NMS over the boxes order[0..n), which must be in descending score
// order. Sets keep[order[i]] = 1 for every survivor.
template <typename scalar_t>
void greedy_nms(
    const scalar_t* boxes,
    const int64_t* order,
    int64_t n,
    scalar_t iou_threshold,
    scalar_t offset,
    uint8_t* keep) {
  // Gathered columns keep the inner loop contiguous and branch-free, so the
  // compiler vectorises it; testing every later box is cheaper than skipping
  // the removed ones with a branch.
  std::vector<scalar_t> x1(n), y1(n), x2(n), y2(n), area(n);
  for (int64_t k = 0; k < n; ++k) {
    const scalar_t* b = boxes + 4 * order[k];
    x1[k] = b[0];
    y1[k] = b[1];
    x2[k] = b[2];
    y2[k] = b[3];
    area[k] = box_area(x1[k], y1[k], x2[k], y2[k], offset);
  }
  std::vector<uint8_t> removed(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (removed[i]) {
      continue;
    }
    keep[order[i]] = 1;
    const scalar_t ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = area[i];
    for (int64_t j = i + 1; j < n; ++j) {
      const scalar_t iou =
          box_iou(ix1, iy1, ix2, iy2, iarea, x1[j], y1[j], x2[j], y2[j], area[j], offset);
      removed[j] |= static_cast<uint8_t>(iou > iou_threshold);
    }
  }
}

// Runs greedy_nms on every run [starts[g], starts[g + 1]) of `order`, in
// parallel over the runs (the labels of ml_nms).
at::Tensor nms_over_groups(
    const at::Tensor& boxes,
    const at::Tensor& order,
    const std::vector<int64_t>& starts,
    double iou_threshold,
    double box_offset) {
  at::Tensor keep = at::zeros({boxes.size(0)}, boxes.options().dtype(at::kByte));
  const at::Tensor boxes_c = boxes.contiguous();
  const at::Tensor order_c = order.contiguous();
  const int64_t groups = static_cast<int64_t>(starts.size()) - 1;
  AT_DISPATCH_FLOATING_TYPES(boxes_c.scalar_type(), "atss_core_nms_cpu", [&] {
    const scalar_t* box_data = boxes_c.const_data_ptr<scalar_t>();
    const int64_t* order_data = order_c.const_data_ptr<int64_t>();
    uint8_t* keep_data = keep.mutable_data_ptr<uint8_t>();
    // Groups write disjoint keep entries.
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        greedy_nms<scalar_t>(
            box_data,
            order_data + starts[g],
            starts[g + 1] - starts[g],
            // In the box dtype, like the CUDA kernel, so devices agree.
            static_cast<scalar_t>(iou_threshold),
            static_cast<scalar_t>(box_offset),
            keep_data);
      }
    });
  });
  return keep.nonzero().view(-1);
}

at::Tensor nms_cpu(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    double iou_threshold,
    double box_offset) {
  check_nms_inputs("atss_core::nms", boxes, scores, nullptr, box_offset, at::kCPU);
  return nms_over_groups(boxes, score_order(scores), {0, boxes.size(0)}, iou_threshold, box_offset);
}

at::Tensor ml_nms_cpu(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    double box_offset) {
  check_nms_inputs("atss_core::ml_nms", boxes, scores, &labels, box_offset, at::kCPU);
  const int64_t n = boxes.size(0);
  const auto [order, group] = label_grouped_order(scores, labels);
  // Per-label runs: O(sum of n_label^2) IoUs instead of O(N^2).
  const at::Tensor group_c = group.contiguous();
  const int64_t* g = group_c.const_data_ptr<int64_t>();
  std::vector<int64_t> starts{0};
  for (int64_t k = 1; k < n; ++k) {
    if (g[k] != g[k - 1]) {
      starts.push_back(k);
    }
  }
  starts.push_back(n);
  return nms_over_groups(boxes, order, starts, iou_threshold, box_offset);
}

}  // namespace

TORCH_LIBRARY_IMPL(atss_core, CPU, m) {
  m.impl("nms", TORCH_FN(nms_cpu));
  m.impl("ml_nms", TORCH_FN(ml_nms_cpu));
}

}  // namespace atss_core
