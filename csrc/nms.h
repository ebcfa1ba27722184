// Pieces of atss_core::nms / atss_core::ml_nms shared by the CPU and CUDA
// kernels, so both devices check, order and compare boxes identically.
//
// Contract (kernels.md §1.3, README C5): boxes are xyxy with the `box_offset`
// pixel convention (1: inclusive pixels, w = x2 - x1 + 1); boxes are visited
// in stable descending score order, so equal scores go to the lower index;
// a kept box suppresses a later one iff IoU > iou_threshold (both in the box
// dtype); the result holds the kept indices in ascending original order.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <tuple>
#include <type_traits>

namespace atss_core {

inline void check_nms_inputs(
    const char* op,
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor* labels,  // nullptr for nms
    double box_offset,
    at::DeviceType device_type) {
  TORCH_CHECK(
      boxes.dim() == 2 && boxes.size(1) == 4,
      op, ": boxes must have shape [N, 4], got ", boxes.sizes());
  TORCH_CHECK(
      scores.dim() == 1 && scores.size(0) == boxes.size(0),
      op, ": scores must have shape [N] with N = ", boxes.size(0),
      " (the number of boxes), got ", scores.sizes());
  TORCH_CHECK(
      boxes.device().type() == device_type && scores.device() == boxes.device(),
      op, ": the ", c10::DeviceTypeName(device_type), " kernel needs boxes and scores on one ",
      c10::DeviceTypeName(device_type), " device, got boxes on ", boxes.device(),
      " and scores on ", scores.device());
  TORCH_CHECK(
      boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble,
      op, ": boxes must be float32 or float64, got ", boxes.scalar_type(),
      " (the Python wrapper upcasts float16/bfloat16)");
  TORCH_CHECK(
      scores.scalar_type() == boxes.scalar_type(),
      op, ": scores must have the dtype of boxes (", boxes.scalar_type(),
      "), got ", scores.scalar_type());
  TORCH_CHECK(
      box_offset == 0.0 || box_offset == 1.0,
      op, ": box_offset must be 0 or 1, got ", box_offset);
  if (labels != nullptr) {
    TORCH_CHECK(
        labels->dim() == 1 && labels->size(0) == boxes.size(0),
        op, ": labels must have shape [N] with N = ", boxes.size(0),
        " (the number of boxes), got ", labels->sizes());
    TORCH_CHECK(
        labels->device() == boxes.device(),
        op, ": labels must be on the device of boxes (", boxes.device(), "), got ",
        labels->device());
    TORCH_CHECK(
        at::isIntegralType(labels->scalar_type(), /*includeBool=*/false) ||
            at::isFloatingType(labels->scalar_type()),
        op, ": labels must be an integer or floating dtype, got ", labels->scalar_type());
  }
}

// Positions of the boxes in stable descending score order.
inline at::Tensor score_order(const at::Tensor& scores) {
  return std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
}

// Boxes of different labels never suppress each other, so ml_nms is greedy
// NMS over this order: grouped by label, score order inside each group (a
// stable sort by label of the score order). Returns the order [N] and each
// position's group number [N] (0, 1, ... ascending), both int64. Labels are
// compared in their own dtype.
inline std::tuple<at::Tensor, at::Tensor> label_grouped_order(
    const at::Tensor& scores,
    const at::Tensor& labels) {
  const at::Tensor order = score_order(scores);
  const auto [grouped_labels, perm] =
      at::sort(labels.index_select(0, order), /*stable=*/true, /*dim=*/0, /*descending=*/false);
  at::Tensor group = at::zeros_like(perm);
  const int64_t n = perm.size(0);
  if (n > 1) {
    group.slice(0, 1).copy_(
        at::ne(grouped_labels.slice(0, 1), grouped_labels.slice(0, 0, n - 1)).cumsum(0));
  }
  return {order.index_select(0, perm), group};
}

// Ascending original indices of the kept boxes, from keep flags [N] (bool)
// given per position of `order`.
inline at::Tensor kept_in_index_order(const at::Tensor& order, const at::Tensor& keep_sorted) {
  at::Tensor keep = at::zeros({order.size(0)}, keep_sorted.options());
  keep.index_put_({order}, keep_sorted);
  return keep.nonzero().view(-1);
}

// a * b rounded once. nvcc would otherwise fuse a product into a following
// addition (FMA), and the CUDA kernel would then decide some IoU > threshold
// comparisons differently from the CPU kernel.
template <typename T>
C10_HOST_DEVICE inline T product_rn(T a, T b) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<T, float>) {
    return __fmul_rn(a, b);
  } else {
    return __dmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

template <typename T>
C10_HOST_DEVICE inline T box_area(T x1, T y1, T x2, T y2, T offset) {
  return product_rn(x2 - x1 + offset, y2 - y1 + offset);
}

// IoU of box a and box b with precomputed areas (box_area).
template <typename T>
C10_HOST_DEVICE inline T box_iou(
    T ax1, T ay1, T ax2, T ay2, T a_area,
    T bx1, T by1, T bx2, T by2, T b_area,
    T offset) {
  // Not std::min/max: the function also runs on the device.
  const T w = (ax2 < bx2 ? ax2 : bx2) - (ax1 > bx1 ? ax1 : bx1) + offset;
  const T h = (ay2 < by2 ? ay2 : by2) - (ay1 > by1 ? ay1 : by1) + offset;
  const T inter = product_rn(w > T(0) ? w : T(0), h > T(0) ? h : T(0));
  return inter / (a_area + b_area - inter);
}

}  // namespace atss_core
