// CPU kernel for atss_core::sigmoid_focal_loss (element math in
// ../sigmoid_focal_loss.h). One pass computes the loss and, for autograd,
// d loss / d logits, so the backward is a single multiply.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS  // per-operator headers: faster builds
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ceil_div.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <tuple>
#include <vector>

#include "../sigmoid_focal_loss.h"

namespace atss_core {
namespace {

// The sum is accumulated per block of about this many elements and the
// blocks are added in order, so it does not depend on the thread count.
constexpr int64_t kElementsPerBlock = 1 << 15;

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_cpu(
    const at::Tensor& logits,
    const at::Tensor& targets,
    double gamma,
    double alpha,
    c10::string_view reduction,
    bool with_grad) {
  FocalProblem problem = prepare_focal_problem(logits, targets, reduction, with_grad, at::kCPU);
  const at::Tensor& x = problem.logits;
  const int64_t rows = x.size(0);
  const int64_t cols = x.size(1);
  const int64_t rows_per_block = std::max<int64_t>(1, kElementsPerBlock / std::max<int64_t>(cols, 1));
  std::vector<double> block_sums(at::ceil_div(rows, rows_per_block), 0.0);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "atss_core_focal_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    const int64_t* t_data = problem.targets.const_data_ptr<int64_t>();
    acc_t* loss_data = problem.reduce_sum ? nullptr : problem.loss.mutable_data_ptr<acc_t>();
    scalar_t* grad_data = with_grad ? problem.grad.mutable_data_ptr<scalar_t>() : nullptr;
    const acc_t g = static_cast<acc_t>(gamma);
    const acc_t a = static_cast<acc_t>(alpha);
    at::parallel_for(0, static_cast<int64_t>(block_sums.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) {
        double block_sum = 0;
        const int64_t row_end = std::min(rows, (block + 1) * rows_per_block);
        for (int64_t row = block * rows_per_block; row < row_end; ++row) {
          const int64_t target = t_data[row];
          for (int64_t col = 0; col < cols; ++col) {
            const int64_t i = row * cols + col;
            const FocalTerms<acc_t> terms =
                focal_element(static_cast<acc_t>(x_data[i]), target, col, g, a);
            block_sum += terms.loss;
            if (loss_data != nullptr) {
              loss_data[i] = terms.loss;
            }
            if (grad_data != nullptr) {
              grad_data[i] = static_cast<scalar_t>(terms.grad);
            }
          }
        }
        block_sums[block] = block_sum;
      }
    });
  });
  if (problem.reduce_sum) {
    const double total = std::accumulate(block_sums.begin(), block_sums.end(), 0.0);
    problem.loss = at::scalar_tensor(total, x.options().dtype(problem.loss_dtype));
  }
  return {problem.loss, problem.grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(atss_core, CPU, m) {
  m.impl("sigmoid_focal_loss", TORCH_FN(sigmoid_focal_loss_cpu));
}

}  // namespace atss_core
