// Schemas of the atss_core operator library. Kernels live next to their
// device: cpu/<op>_kernel.cpp (and cuda/<op>_kernel.cu in CUDA builds), each
// ending in TORCH_LIBRARY_IMPL(atss_core, <Device>, m).
#include <torch/extension.h>
#include <torch/library.h>
#include <torch/version.h>

#ifdef WITH_CUDA
#include <cuda.h>
#endif

TORCH_LIBRARY(atss_core, m) {
  m.def(
      "nms(Tensor boxes, Tensor scores, float iou_threshold, "
      "float box_offset=1.0) -> Tensor");
  m.def(
      "ml_nms(Tensor boxes, Tensor scores, Tensor labels, float iou_threshold, "
      "float box_offset=1.0) -> Tensor");
}

// The module has no functions: importing atss_core._C runs the static
// registrations above. Its attributes record how it was built, so Python can
// tell a stale build (another torch, no CUDA) from a current one.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("TORCH_VERSION") = TORCH_VERSION;
#ifdef WITH_CUDA
  m.attr("WITH_CUDA") = true;
  m.attr("CUDA_VERSION") = CUDA_VERSION;  // e.g. 13000 for CUDA 13.0
#else
  m.attr("WITH_CUDA") = false;
  m.attr("CUDA_VERSION") = py::none();
#endif
}
