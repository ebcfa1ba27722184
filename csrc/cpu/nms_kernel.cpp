// CPU kernels for atss_core::nms and atss_core::ml_nms.
//
// Contract (kernels.md §1.3, README C5): boxes are xyxy with the `box_offset`
// pixel convention (1: inclusive pixels, w = x2 - x1 + 1); boxes are visited
// in stable descending score order, so equal scores go to the lower index;
// a kept box suppresses a later one iff IoU > iou_threshold; the result holds
// the kept indices in ascending original order.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace atss_core {
namespace {

void check_boxes_and_scores(
    const char* op,
    const at::Tensor& boxes,
    const at::Tensor& scores,
    double box_offset) {
  TORCH_CHECK(
      boxes.dim() == 2 && boxes.size(1) == 4,
      op, ": boxes must have shape [N, 4], got ", boxes.sizes());
  TORCH_CHECK(
      scores.dim() == 1 && scores.size(0) == boxes.size(0),
      op, ": scores must have shape [N] with N = ", boxes.size(0),
      " (the number of boxes), got ", scores.sizes());
  TORCH_CHECK(
      boxes.device().is_cpu() && scores.device().is_cpu(),
      op, ": the CPU kernel needs CPU tensors, got boxes on ", boxes.device(),
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
}

// Positions of the boxes in stable descending score order.
at::Tensor score_order(const at::Tensor& scores) {
  return std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
}

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
  // compiler can vectorise it.
  std::vector<scalar_t> x1(n), y1(n), x2(n), y2(n), area(n);
  for (int64_t k = 0; k < n; ++k) {
    const scalar_t* b = boxes + 4 * order[k];
    x1[k] = b[0];
    y1[k] = b[1];
    x2[k] = b[2];
    y2[k] = b[3];
    area[k] = (x2[k] - x1[k] + offset) * (y2[k] - y1[k] + offset);
  }
  std::vector<uint8_t> removed(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (removed[i]) {
      continue;
    }
    keep[order[i]] = 1;
    const scalar_t ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i];
    const scalar_t iarea = area[i];
    for (int64_t j = i + 1; j < n; ++j) {
      const scalar_t w = std::max(
          scalar_t(0), std::min(ix2, x2[j]) - std::max(ix1, x1[j]) + offset);
      const scalar_t h = std::max(
          scalar_t(0), std::min(iy2, y2[j]) - std::max(iy1, y1[j]) + offset);
      const scalar_t inter = w * h;
      const scalar_t iou = inter / (iarea + area[j] - inter);
      removed[j] |= static_cast<uint8_t>(iou > iou_threshold);
    }
  }
}

// Ascending indices of the kept boxes as an int64 tensor.
at::Tensor kept_indices(const std::vector<uint8_t>& keep) {
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < static_cast<int64_t>(keep.size()); ++i) {
    if (keep[i]) {
      kept.push_back(i);
    }
  }
  return at::tensor(kept, at::TensorOptions().dtype(at::kLong));
}

// Runs greedy_nms on every run [starts[g], starts[g + 1]) of `order`.
at::Tensor nms_over_groups(
    const at::Tensor& boxes,
    const at::Tensor& order,
    const std::vector<int64_t>& starts,
    double iou_threshold,
    double box_offset) {
  const int64_t n = boxes.size(0);
  std::vector<uint8_t> keep(n, 0);
  const at::Tensor boxes_c = boxes.contiguous();
  const at::Tensor order_c = order.contiguous();
  AT_DISPATCH_FLOATING_TYPES(boxes_c.scalar_type(), "atss_core_nms_cpu", [&] {
    const scalar_t* box_data = boxes_c.const_data_ptr<scalar_t>();
    const int64_t* order_data = order_c.const_data_ptr<int64_t>();
    for (size_t g = 0; g + 1 < starts.size(); ++g) {
      greedy_nms<scalar_t>(
          box_data,
          order_data + starts[g],
          starts[g + 1] - starts[g],
          // In the box dtype, like the CUDA kernels, so devices agree.
          static_cast<scalar_t>(iou_threshold),
          static_cast<scalar_t>(box_offset),
          keep.data());
    }
  });
  return kept_indices(keep);
}

at::Tensor nms_cpu(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    double iou_threshold,
    double box_offset) {
  check_boxes_and_scores("atss_core::nms", boxes, scores, box_offset);
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  return nms_over_groups(boxes, score_order(scores), {0, n}, iou_threshold, box_offset);
}

at::Tensor ml_nms_cpu(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    double box_offset) {
  check_boxes_and_scores("atss_core::ml_nms", boxes, scores, box_offset);
  TORCH_CHECK(
      labels.dim() == 1 && labels.size(0) == boxes.size(0),
      "atss_core::ml_nms: labels must have shape [N] with N = ", boxes.size(0),
      " (the number of boxes), got ", labels.sizes());
  TORCH_CHECK(
      labels.device().is_cpu(),
      "atss_core::ml_nms: the CPU kernel needs CPU tensors, got labels on ",
      labels.device());
  TORCH_CHECK(
      at::isIntegralType(labels.scalar_type(), /*includeBool=*/false) ||
          at::isFloatingType(labels.scalar_type()),
      "atss_core::ml_nms: labels must be an integer or floating dtype, got ",
      labels.scalar_type());
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  // Boxes of different labels never suppress each other, so greedy NMS runs
  // per label. A stable sort by label of the score-ordered boxes groups them
  // while keeping each group in score order.
  const at::Tensor order = score_order(scores);
  const auto [grouped_labels, perm] =
      at::sort(labels.index_select(0, order), /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor grouped_order = order.index_select(0, perm);
  const at::Tensor boundaries =
      at::ne(grouped_labels.slice(0, 1), grouped_labels.slice(0, 0, n - 1)).nonzero().view(-1);
  std::vector<int64_t> starts{0};
  const at::Tensor boundaries_c = boundaries.contiguous();
  const int64_t* b = boundaries_c.const_data_ptr<int64_t>();
  for (int64_t k = 0; k < boundaries_c.numel(); ++k) {
    starts.push_back(b[k] + 1);
  }
  starts.push_back(n);
  return nms_over_groups(boxes, grouped_order, starts, iou_threshold, box_offset);
}

}  // namespace

TORCH_LIBRARY_IMPL(atss_core, CPU, m) {
  m.impl("nms", TORCH_FN(nms_cpu));
  m.impl("ml_nms", TORCH_FN(ml_nms_cpu));
}

}  // namespace atss_core
