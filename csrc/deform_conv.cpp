// Deformable convolution v1/v2: op schemas, the device-independent driver
// (checks, im2col step, GEMMs) and its registration for each device, bound to
// that device's kernels (cpu/deform_conv_kernel.cpp, cuda/deform_conv_kernel.cu).
//
// Forward, per step of n images: columns [C*K, n*P] = im2col(input), then per
// conv group out_g = W_g [Cout/G, C/G*K] @ columns_g. Backward: grad_columns
// = W_g^T @ grad_out_g, scattered to the input (col2im) and reduced to the
// offsets and mask (coord_grad); grad_weight += grad_out_g @ columns_g^T with
// the columns recomputed (kernels.md §3.4, §3.5).
#include "deform_conv.h"

#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>

namespace atss_core {
namespace deform {
namespace {

// Caps the columns buffer at 16 MB (float32): a large map already gives one
// image's GEMM thousands of columns, and small maps still batch several
// images. The result does not depend on it.
constexpr int64_t kMaxColumnElements = int64_t(1) << 22;

void check_pair(const char* name, at::IntArrayRef values, int64_t minimum) {
  TORCH_CHECK(
      values.size() == 2, "atss_core::deform_conv: ", name, " must be an (h, w) pair, got ", values);
  TORCH_CHECK(
      values[0] >= minimum && values[1] >= minimum,
      "atss_core::deform_conv: ", name, " must be >= ", minimum, ", got ", values);
}

void check_tensor(const DeviceKernels& kernels, const at::Tensor& input, const char* name, const at::Tensor& t) {
  const at::Device kernel_device(kernels.device_type, input.device().index());
  TORCH_CHECK(
      t.device() == input.device() && input.device() == kernel_device,
      "atss_core::deform_conv: the ", kernels.device_type, " kernel needs every tensor on one ",
      kernels.device_type, " device, got ", name, " on ", t.device(), " and input on ", input.device());
  TORCH_CHECK(
      t.scalar_type() == input.scalar_type(),
      "atss_core::deform_conv: ", name, " is ", t.scalar_type(), " but input is ", input.scalar_type(),
      " (the Python wrapper casts to one dtype)");
}

void check_shape(const char* name, const at::Tensor& t, at::IntArrayRef expected) {
  TORCH_CHECK(
      t.sizes() == expected,
      "atss_core::deform_conv: ", name, " must have shape ", expected, ", got ", t.sizes());
}

// Validates one call and describes it; every message names the argument.
Geometry describe(
    const DeviceKernels& kernels,
    const at::Tensor& input,
    const at::Tensor& offset,
    const std::optional<at::Tensor>& mask,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups,
    int64_t deformable_groups) {
  TORCH_CHECK(
      input.dim() == 4, "atss_core::deform_conv: input must be [B, C, H, W], got ", input.sizes());
  TORCH_CHECK(
      weight.dim() == 4, "atss_core::deform_conv: weight must be [Cout, C/groups, kh, kw], got ",
      weight.sizes());
  TORCH_CHECK(
      input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
      "atss_core::deform_conv: input must be float32 or float64, got ", input.scalar_type(),
      " (the Python wrapper upcasts float16/bfloat16)");
  check_tensor(kernels, input, "input", input);
  check_tensor(kernels, input, "offset", offset);
  check_tensor(kernels, input, "weight", weight);
  check_pair("stride", stride, 1);
  check_pair("padding", padding, 0);
  check_pair("dilation", dilation, 1);
  TORCH_CHECK(
      groups >= 1 && deformable_groups >= 1,
      "atss_core::deform_conv: groups and deformable_groups must be >= 1, got ", groups, " and ",
      deformable_groups);

  Geometry g;
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.kernel_h = weight.size(2);
  g.kernel_w = weight.size(3);
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.pad_h = padding[0];
  g.pad_w = padding[1];
  g.dilation_h = dilation[0];
  g.dilation_w = dilation[1];
  g.deformable_groups = deformable_groups;
  g.out_h = (g.height + 2 * g.pad_h - (g.dilation_h * (g.kernel_h - 1) + 1)) / g.stride_h + 1;
  g.out_w = (g.width + 2 * g.pad_w - (g.dilation_w * (g.kernel_w - 1) + 1)) / g.stride_w + 1;
  const int64_t out_channels = weight.size(0);
  TORCH_CHECK(
      weight.size(1) * groups == g.channels && out_channels % groups == 0,
      "atss_core::deform_conv: weight ", weight.sizes(), " with groups=", groups, " needs ",
      weight.size(1) * groups, " input channels and Cout divisible by groups; input has ", g.channels);
  TORCH_CHECK(
      g.channels % deformable_groups == 0,
      "atss_core::deform_conv: input channels ", g.channels, " are not divisible by deformable_groups=",
      deformable_groups);
  TORCH_CHECK(
      g.out_h > 0 && g.out_w > 0,
      "atss_core::deform_conv: the output would be empty: input ", g.height, "x", g.width, ", kernel ",
      g.kernel_h, "x", g.kernel_w, ", padding ", padding, ", dilation ", dilation);
  const int64_t batch = input.size(0);
  check_shape("offset", offset, {batch, 2 * deformable_groups * g.taps(), g.out_h, g.out_w});
  if (mask.has_value()) {
    check_tensor(kernels, input, "mask", *mask);
    check_shape("mask", *mask, {batch, deformable_groups * g.taps(), g.out_h, g.out_w});
  }
  if (bias.has_value()) {
    check_tensor(kernels, input, "bias", *bias);
    check_shape("bias", *bias, {out_channels});
  }
  return g;
}

int64_t images_per_step(const Geometry& g, int64_t batch) {
  const int64_t per_image = std::max<int64_t>(1, g.channels * g.taps() * g.positions());
  return std::max<int64_t>(1, std::min(batch, kMaxColumnElements / per_image));
}

at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

at::Tensor images(const at::Tensor& t, int64_t first, int64_t n) {
  return t.defined() ? t.narrow(0, first, n) : t;
}

// The ops, bound to one device's kernels (registrations at the end).
template <const DeviceKernels& kernels>
at::Tensor forward(
    const at::Tensor& input_,
    const at::Tensor& offset_,
    const std::optional<at::Tensor>& mask_,
    const at::Tensor& weight_,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups,
    int64_t deformable_groups) {
  const c10::OptionalDeviceGuard guard(input_.device());
  const Geometry g = describe(
      kernels, input_, offset_, mask_, weight_, bias, stride, padding, dilation, groups, deformable_groups);
  const at::Tensor input = input_.contiguous();
  const at::Tensor offset = offset_.contiguous();
  const at::Tensor mask = contiguous_or_undefined(mask_);
  const int64_t batch = input.size(0);
  const int64_t out_channels = weight_.size(0);
  const int64_t group_rows = g.channels / groups * g.taps();
  // [G, Cout/G, C/G*K]
  const at::Tensor weight = weight_.contiguous().view({groups, out_channels / groups, group_rows});

  at::Tensor output = at::empty({batch, out_channels, g.out_h, g.out_w}, input.options());
  const int64_t step = images_per_step(g, batch);
  for (int64_t first = 0; first < batch; first += step) {
    const int64_t n = std::min(step, batch - first);
    const at::Tensor columns = at::empty({groups, group_rows, n * g.positions()}, input.options());
    kernels.im2col(g, images(input, first, n), images(offset, first, n), images(mask, first, n), columns);
    const at::Tensor out_columns = at::bmm(weight, columns);  // [G, Cout/G, n*P]
    output.narrow(0, first, n)
        .copy_(out_columns.view({out_channels, n, g.out_h, g.out_w}).transpose(0, 1));
  }
  if (bias.has_value()) {
    output.add_(bias->view({1, out_channels, 1, 1}));
  }
  return output;
}

// (grad_input, grad_offset, grad_mask, grad_weight, grad_bias); grad_mask and
// grad_bias are empty [0] tensors when there is no mask or bias.
template <const DeviceKernels& kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_out_,
    const at::Tensor& input_,
    const at::Tensor& offset_,
    const std::optional<at::Tensor>& mask_,
    const at::Tensor& weight_,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups,
    int64_t deformable_groups) {
  const c10::OptionalDeviceGuard guard(input_.device());
  if (!kernels.deterministic_backward) {
    at::globalContext().alertNotDeterministic(
        std::string("atss_core::deform_conv_backward (") + c10::DeviceTypeName(kernels.device_type) + ")");
  }
  const Geometry g = describe(
      kernels, input_, offset_, mask_, weight_, bias, stride, padding, dilation, groups, deformable_groups);
  check_tensor(kernels, input_, "grad_out", grad_out_);
  const int64_t batch = input_.size(0);
  const int64_t out_channels = weight_.size(0);
  check_shape("grad_out", grad_out_, {batch, out_channels, g.out_h, g.out_w});
  const at::Tensor grad_out = grad_out_.contiguous();
  const at::Tensor input = input_.contiguous();
  const at::Tensor offset = offset_.contiguous();
  const at::Tensor mask = contiguous_or_undefined(mask_);
  const int64_t group_out = out_channels / groups;
  const int64_t group_rows = g.channels / groups * g.taps();
  const at::Tensor weight = weight_.contiguous().view({groups, group_out, group_rows});

  at::Tensor grad_input = at::zeros_like(input);
  at::Tensor grad_offset = at::empty_like(offset);
  at::Tensor grad_mask = mask.defined() ? at::empty_like(mask) : at::Tensor();
  at::Tensor grad_weight = at::zeros_like(weight);
  at::Tensor grad_bias = bias.has_value() ? grad_out.sum({0, 2, 3}) : at::empty({0}, input.options());

  const int64_t step = images_per_step(g, batch);
  for (int64_t first = 0; first < batch; first += step) {
    const int64_t n = std::min(step, batch - first);
    const at::Tensor in_n = images(input, first, n);
    const at::Tensor offset_n = images(offset, first, n);
    const at::Tensor mask_n = images(mask, first, n);
    // [G, Cout/G, n*P]
    const at::Tensor grad_out_columns =
        grad_out.narrow(0, first, n).transpose(0, 1).reshape({groups, group_out, n * g.positions()});
    // One buffer serves first as the columns' gradient, then as the columns.
    const at::Tensor columns = at::bmm(weight.transpose(1, 2), grad_out_columns);
    kernels.col2im(g, columns, offset_n, mask_n, grad_input.narrow(0, first, n));
    kernels.coord_grad(
        g, columns, in_n, offset_n, mask_n, grad_offset.narrow(0, first, n), images(grad_mask, first, n));
    kernels.im2col(g, in_n, offset_n, mask_n, columns);
    grad_weight.baddbmm_(grad_out_columns, columns.transpose(1, 2));
  }
  if (!grad_mask.defined()) {
    grad_mask = at::empty({0}, input.options());
  }
  return {grad_input, grad_offset, grad_mask, grad_weight.view_as(weight_), grad_bias};
}

}  // namespace
}  // namespace deform
}  // namespace atss_core

TORCH_LIBRARY_FRAGMENT(atss_core, m) {
  m.def(
      "deform_conv_forward(Tensor input, Tensor offset, Tensor? mask, Tensor weight, Tensor? bias, "
      "int[2] stride, int[2] padding, int[2] dilation, int groups, int deformable_groups) -> Tensor");
  m.def(
      "deform_conv_backward(Tensor grad_out, Tensor input, Tensor offset, Tensor? mask, Tensor weight, "
      "Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, int groups, int deformable_groups) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(atss_core, CPU, m) {
  using atss_core::deform::kCpuKernels;
  m.impl("deform_conv_forward", TORCH_FN(atss_core::deform::forward<kCpuKernels>));
  m.impl("deform_conv_backward", TORCH_FN(atss_core::deform::backward<kCpuKernels>));
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(atss_core, CUDA, m) {
  using atss_core::deform::kCudaKernels;
  m.impl("deform_conv_forward", TORCH_FN(atss_core::deform::forward<kCudaKernels>));
  m.impl("deform_conv_backward", TORCH_FN(atss_core::deform::backward<kCudaKernels>));
}
#endif
