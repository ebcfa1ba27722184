// Element math of atss_core::sigmoid_focal_loss, shared by the CPU and CUDA
// kernels (kernels.md §2.2-§2.3).
//
// For logit x of class column d (classes 1..C) and row target t:
//   positive iff t == d + 1:          L = alpha (1-p)^gamma (-log p)
//   negative iff t >= 0 and t != d+1: L = (1-alpha) p^gamma (-log(1-p))
//   ignored  iff t < 0:               L = 0, no gradient
// with p = sigmoid(x). -log p = softplus(-x) and -log(1-p) = softplus(x) are
// evaluated from exp(-|x|), so loss and gradient are finite and accurate for
// every finite x (the original CPU fallback gave NaN/inf past |x| ~ 17).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace atss_core {

// The kernel's inputs, made contiguous (targets as int64), and its outputs,
// allocated: loss [R, C] in the math dtype (undefined for "sum"), grad [R, C]
// in the logits dtype (empty without with_grad).
struct FocalProblem {
  at::Tensor logits;
  at::Tensor targets;
  at::Tensor loss;
  at::Tensor grad;
  bool reduce_sum;
  at::ScalarType loss_dtype;
};

// Validates the arguments (kernels for `device_type`) and allocates the outputs.
inline FocalProblem prepare_focal_problem(
    const at::Tensor& logits,
    const at::Tensor& targets,
    c10::string_view reduction,
    bool with_grad,
    at::DeviceType device_type) {
  constexpr const char* op = "atss_core::sigmoid_focal_loss";
  TORCH_CHECK(
      logits.dim() == 2 && at::isFloatingType(logits.scalar_type()),
      op, ": logits must be a floating [R, C] tensor, got ", logits.scalar_type(), " ",
      logits.sizes());
  TORCH_CHECK(
      targets.dim() == 1 && targets.size(0) == logits.size(0),
      op, ": targets must have shape [R] with R = ", logits.size(0), ", got ", targets.sizes());
  TORCH_CHECK(
      targets.scalar_type() == at::kInt || targets.scalar_type() == at::kLong,
      op, ": targets must be int32 or int64 labels, got ", targets.scalar_type());
  TORCH_CHECK(
      logits.device().type() == device_type && targets.device() == logits.device(),
      op, ": the ", c10::DeviceTypeName(device_type), " kernel needs logits and targets on one ",
      c10::DeviceTypeName(device_type), " device, got ", logits.device(), " and ", targets.device());
  TORCH_CHECK(
      reduction == "none" || reduction == "sum",
      op, ": reduction must be 'none' or 'sum', got '", reduction, "'");
  FocalProblem problem;
  problem.logits = logits.contiguous();
  problem.targets = targets.to(at::kLong).contiguous();
  problem.reduce_sum = reduction == "sum";
  problem.loss_dtype = at::toOpMathType(logits.scalar_type());
  if (!problem.reduce_sum) {
    problem.loss = at::empty(logits.sizes(), logits.options().dtype(problem.loss_dtype));
  }
  problem.grad = with_grad ? at::empty_like(problem.logits) : at::empty({0}, logits.options());
  return problem;
}

template <typename acc_t>
struct FocalTerms {
  acc_t loss;
  acc_t grad;  // d loss / d x
};

template <typename acc_t>
C10_HOST_DEVICE inline acc_t focal_power(acc_t base, acc_t gamma) {
  // gamma = 2 (every ATSS config) without pow's exp/log.
  return gamma == acc_t(2) ? base * base : std::pow(base, gamma);
}

template <typename acc_t>
C10_HOST_DEVICE inline FocalTerms<acc_t> focal_terms(acc_t x, bool positive, acc_t gamma, acc_t alpha) {
  const acc_t e = std::exp(-std::abs(x));  // in (0, 1]: never overflows
  const acc_t tail = std::log1p(e);
  const acc_t r = acc_t(1) / (acc_t(1) + e);
  const bool nonneg = x >= acc_t(0);
  const acc_t p = nonneg ? r : e * r;  // sigmoid(x)
  const acc_t q = nonneg ? e * r : r;  // 1 - p, without cancellation
  if (positive) {
    // dL/dx = -alpha (1-p)^gamma [(1-p) + gamma p softplus(-x)]
    const acc_t neg_log_p = (nonneg ? acc_t(0) : -x) + tail;
    const acc_t w = alpha * focal_power(q, gamma);
    return {w * neg_log_p, -w * (q + gamma * p * neg_log_p)};
  }
  // dL/dx = (1-alpha) p^gamma [p + gamma (1-p) softplus(x)]
  const acc_t neg_log_q = (nonneg ? x : acc_t(0)) + tail;
  const acc_t w = (acc_t(1) - alpha) * focal_power(p, gamma);
  return {w * neg_log_q, w * (p + gamma * q * neg_log_q)};
}

// Terms of element (row target `target`, class column `col`); zero when ignored.
template <typename acc_t>
C10_HOST_DEVICE inline FocalTerms<acc_t> focal_element(
    acc_t x, int64_t target, int64_t col, acc_t gamma, acc_t alpha) {
  if (target < 0) {
    return {acc_t(0), acc_t(0)};
  }
  return focal_terms(x, target == col + 1, gamma, alpha);
}

}  // namespace atss_core
