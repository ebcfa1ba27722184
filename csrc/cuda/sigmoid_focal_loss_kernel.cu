// CUDA kernel for atss_core::sigmoid_focal_loss (element math in
// ../sigmoid_focal_loss.h). One grid-stride pass over the R x C logits writes
// the per-element loss (reduction "none") or per-block partial sums ("sum"),
// and, for autograd, d loss / d logits, so the backward is a single multiply.
// The partial sums are added by a second pass in a fixed order: the total is
// the same on every run (no float atomics).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS  // per-operator headers: faster builds
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ceil_div.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <tuple>

#include "../sigmoid_focal_loss.h"

namespace atss_core {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerSM = 8;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) sigmoid_focal_loss_kernel(
    const scalar_t* __restrict__ logits,  // [R, C]
    const int64_t* __restrict__ targets,  // [R]
    int64_t numel,
    int64_t cols,
    acc_t gamma,
    acc_t alpha,
    acc_t* __restrict__ loss,           // [R, C] or nullptr
    scalar_t* __restrict__ grad,        // [R, C] or nullptr
    acc_t* __restrict__ block_sums) {   // [gridDim.x] or nullptr
  acc_t sum = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < numel; i += stride) {
    const int64_t row = i / cols;
    const FocalTerms<acc_t> terms =
        focal_element(static_cast<acc_t>(logits[i]), targets[row], i - row * cols, gamma, alpha);
    sum += terms.loss;
    if (loss != nullptr) {
      loss[i] = terms.loss;
    }
    if (grad != nullptr) {
      grad[i] = static_cast<scalar_t>(terms.grad);
    }
  }
  if (block_sums != nullptr) {
    using BlockReduce = cub::BlockReduce<acc_t, kThreads>;
    __shared__ typename BlockReduce::TempStorage storage;
    const acc_t block_sum = BlockReduce(storage).Sum(sum);
    if (threadIdx.x == 0) {
      block_sums[blockIdx.x] = block_sum;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_cuda(
    const at::Tensor& logits,
    const at::Tensor& targets,
    double gamma,
    double alpha,
    c10::string_view reduction,
    bool with_grad) {
  FocalProblem problem = prepare_focal_problem(logits, targets, reduction, with_grad, at::kCUDA);
  const c10::cuda::OptionalCUDAGuard device_guard(logits.device());
  const at::Tensor& x = problem.logits;
  const int64_t numel = x.numel();
  int sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  const int64_t max_blocks = static_cast<int64_t>(sm_count) * kBlocksPerSM;
  const int64_t blocks = std::min(max_blocks, at::ceil_div(numel, static_cast<int64_t>(kThreads)));
  at::Tensor block_sums = problem.reduce_sum
      ? at::zeros({std::max<int64_t>(blocks, 1)}, x.options().dtype(problem.loss_dtype))
      : at::Tensor();

  if (numel > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "atss_core_focal_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      sigmoid_focal_loss_kernel<scalar_t, acc_t>
          <<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
              x.const_data_ptr<scalar_t>(),
              problem.targets.const_data_ptr<int64_t>(),
              numel,
              x.size(1),
              static_cast<acc_t>(gamma),
              static_cast<acc_t>(alpha),
              problem.reduce_sum ? nullptr : problem.loss.mutable_data_ptr<acc_t>(),
              with_grad ? problem.grad.mutable_data_ptr<scalar_t>() : nullptr,
              problem.reduce_sum ? block_sums.mutable_data_ptr<acc_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  if (problem.reduce_sum) {
    problem.loss = block_sums.sum();
  }
  return {problem.loss, problem.grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(atss_core, CUDA, m) {
  m.impl("sigmoid_focal_loss", TORCH_FN(sigmoid_focal_loss_cuda));
}

}  // namespace atss_core
