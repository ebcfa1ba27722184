"""Build and install atss_core with its compiled ops (``atss_core._C``).

Install against the torch already present (pip must never replace it):

    pip install -e . --no-build-isolation

The extension is C++ only unless ``csrc/cuda/*.cu`` exist and either torch has
CUDA and nvcc is found, or ``FORCE_CUDA=1``. Without a visible GPU, set
``TORCH_CUDA_ARCH_LIST`` to choose the architectures (default below). The
build runs ninja with ``MAX_JOBS`` parallel compiles (default: the CPU count).
"""
import glob
import os
import re
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# sm_80 code also runs on 8.6/8.9 (A10, RTX 30xx/40xx); PTX for 9.0 is compiled
# by the driver for newer GPUs. Each architecture adds to every .cu compile.
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"


def find_cuda_home():
    """CUDA toolkit root: $CUDA_HOME/$CUDA_PATH, /usr/local/cuda, or the nvcc on PATH."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    # /usr/local/bin/nvcc may be a wrapper script, so this is the last resort.
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


CUDA_HOME = find_cuda_home()
if CUDA_HOME:
    # torch.utils.cpp_extension reads it once, at import.
    os.environ.setdefault("CUDA_HOME", CUDA_HOME)

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def read_version():
    with open(os.path.join(ROOT, "atss_core", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def want_cuda(cuda_sources):
    if not cuda_sources:
        return False
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to its root")
        return True
    has_nvcc = CUDA_HOME is not None and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))
    return torch.version.cuda is not None and has_nvcc


def nvidia_wheel_include_dirs():
    """Headers of the pip CUDA wheels torch depends on (e.g. nvidia/cu13/include has cusparse.h)."""
    site_packages = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(glob.glob(os.path.join(site_packages, "nvidia", "*", "include")))


def visible_gpu_arch_list():
    """The visible GPUs' architectures as torch would target them ("8.0;9.0+PTX"), or ""."""
    if not torch.cuda.is_available():
        return ""
    arches = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return ";".join(f"{major}.{minor}" for major, minor in arches) + "+PTX"


def get_extensions():
    # ninja's default (CPU count + 2) overloads small machines: nvcc jobs take ~1 GB each.
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    include_dirs = [os.path.join(ROOT, "csrc")]
    extra_compile_args = {"cxx": ["-O3"]}
    if not want_cuda(cuda_sources):
        return [
            CppExtension(
                "atss_core._C",
                sources,
                include_dirs=include_dirs,
                extra_compile_args=extra_compile_args,
            )
        ]
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = visible_gpu_arch_list() or DEFAULT_CUDA_ARCH_LIST
    extra_compile_args["nvcc"] = ["-O3"]
    # The quotes make it a C string literal (extension_info() reports it).
    arch_list_macro = ("ATSS_CORE_CUDA_ARCH_LIST", f'"{os.environ["TORCH_CUDA_ARCH_LIST"]}"')
    return [
        CUDAExtension(
            "atss_core._C",
            sources + cuda_sources,
            include_dirs=include_dirs + nvidia_wheel_include_dirs(),
            library_dirs=[os.path.join(CUDA_HOME, "lib64")],
            define_macros=[("WITH_CUDA", None), arch_list_macro],
            extra_compile_args=extra_compile_args,
        )
    ]


setup(
    name="atss_core",
    version=read_version(),
    description="Dense object detectors of the ATSS family in PyTorch 2.x",
    packages=find_packages(exclude=("configs", "tests", "tests.*", "tools", "demo")),
    python_requires=">=3.9",
    # torch/torchvision are deliberately absent: the build uses the installed
    # ones, and pip must not swap the user's CUDA build for another.
    install_requires=["yacs", "pycocotools", "opencv-python-headless", "tqdm", "numpy", "pillow", "tensorboard"],
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension},
    zip_safe=False,
)
