// Schemas of the atss_core operator library. Kernels live next to their
// device: cpu/<op>_kernel.cpp (and cuda/<op>_kernel.cu in CUDA builds), each
// ending in TORCH_LIBRARY_IMPL(atss_core, <Device>, m); deform_conv's schemas
// and registrations are in deform_conv.cpp, with its device-independent driver.
// Autograd, autocast and fake (meta) registrations are made from Python, in
// atss_core/layers/_ops.py and (deform_conv) atss_core/layers/dcn.py.
#include <pybind11/pybind11.h>  // not torch/extension.h: that header alone costs a minute of build
#include <torch/library.h>
#include <torch/version.h>

#ifdef WITH_CUDA
#include <cuda.h>
#endif

TORCH_LIBRARY(atss_core, m) {
  // Kept indices, int64, ascending (contract in nms.h).
  m.def(
      "nms(Tensor boxes, Tensor scores, float iou_threshold, "
      "float box_offset=1.0) -> Tensor");
  m.def(
      "ml_nms(Tensor boxes, Tensor scores, Tensor labels, float iou_threshold, "
      "float box_offset=1.0) -> Tensor");
  // (loss, grad): loss is [R, C] (reduction "none") or a scalar ("sum") in
  // float32 for float16/bfloat16 logits; grad is d loss_element / d logits
  // [R, C] in the logits dtype when with_grad, else an empty tensor.
  m.def(
      "sigmoid_focal_loss(Tensor logits, Tensor targets, float gamma, float alpha, "
      "str reduction, bool with_grad) -> (Tensor, Tensor)");
}

// The module has no functions: importing atss_core._C runs the static
// registrations above. Its attributes record how it was built, so Python can
// tell a stale build (another torch, no CUDA) from a current one.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("TORCH_VERSION") = TORCH_VERSION;
#ifdef WITH_CUDA
  m.attr("WITH_CUDA") = true;
  m.attr("CUDA_VERSION") = CUDA_VERSION;  // e.g. 13000 for CUDA 13.0
  m.attr("CUDA_ARCH_LIST") = ATSS_CORE_CUDA_ARCH_LIST;  // TORCH_CUDA_ARCH_LIST of the build
#else
  m.attr("WITH_CUDA") = false;
  m.attr("CUDA_VERSION") = pybind11::none();
  m.attr("CUDA_ARCH_LIST") = pybind11::none();
#endif
}
