"""Build checks (kernels.md §5, §7.7): setup.py's extension selection, the
loaded extension's build info, and no legacy ATen/THC APIs in csrc/."""
import importlib
import os
import re
import runpy
import shutil
from pathlib import Path

import pytest
import setuptools
import torch

from atss_core.layers._ops import compiled_op, extension_info

ROOT = Path(__file__).resolve().parents[1]


def test_no_legacy_apis_in_csrc():
    legacy = re.compile(r"THC|AT_CHECK|AT_ASSERTM?\b|AT_ERROR|\.type\(\)|\.data<|at::IntList")
    sources = [p for p in (ROOT / "csrc").rglob("*") if p.suffix in {".cpp", ".cu", ".h", ".cuh"}]
    assert sources
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in sources
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if legacy.search(line)
    ]
    assert hits == []


def test_extension_info_is_consistent():
    info = extension_info()
    assert set(info) == {"available", "cuda", "cuda_version", "built_with_torch", "torch", "path", "error"}
    assert info["torch"] == torch.__version__
    if not info["available"]:
        assert info["error"] and not info["cuda"] and compiled_op("nms", torch.device("cpu")) is None
        pytest.skip("atss_core._C is not built")
    # A stale build (other torch) would be a silent ABI hazard.
    assert info["built_with_torch"] == torch.__version__.split("+")[0]
    assert info["error"] is None
    assert info["cuda"] == (info["cuda_version"] is not None)
    if not list((ROOT / "csrc" / "cuda").glob("*.cu")):
        assert not info["cuda"]
    assert compiled_op("nms", torch.device("cpu")) is torch.ops.atss_core.nms
    assert compiled_op("no_such_op", torch.device("cpu")) is None
    assert compiled_op("nms", torch.device("meta")) is None


@pytest.fixture
def run_setup(monkeypatch):
    """Executes a setup.py with setuptools.setup captured and the env restored."""
    saved = {var: os.environ.get(var) for var in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST", "FORCE_CUDA")}
    monkeypatch.delenv("FORCE_CUDA", raising=False)
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))

    def run(directory, **env):
        os.environ.update(env)
        monkeypatch.chdir(directory)
        namespace = runpy.run_path(str(Path(directory) / "setup.py"))
        return captured, namespace

    yield run
    for var, value in saved.items():  # setup.py itself may set CUDA_HOME / TORCH_CUDA_ARCH_LIST
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def test_setup_builds_a_cpu_extension_without_cuda_sources(run_setup):
    kwargs, namespace = run_setup(ROOT)
    assert kwargs["name"] == "atss_core"
    assert kwargs["python_requires"] == ">=3.9"
    assert not any(re.match(r"torch|torchvision", r) for r in kwargs["install_requires"])
    required = {"yacs", "pycocotools", "opencv-python-headless", "tqdm", "numpy", "pillow"}
    assert required <= set(kwargs["install_requires"])
    assert "atss_core.layers" in kwargs["packages"] and not any(p.startswith("tests") for p in kwargs["packages"])
    (ext,) = kwargs["ext_modules"]
    assert ext.name == "atss_core._C"
    assert {"csrc/ops.cpp", "csrc/cpu/nms_kernel.cpp"} <= set(ext.sources)
    assert "-O3" in ext.extra_compile_args["cxx"]
    if not list((ROOT / "csrc" / "cuda").glob("*.cu")):
        assert not any(s.endswith(".cu") for s in ext.sources)
        assert ("WITH_CUDA", None) not in ext.define_macros
    assert namespace["want_cuda"]([]) is False


def test_setup_force_cuda_selects_a_cuda_extension(run_setup, tmp_path):
    # A throwaway tree with one .cu file: FORCE_CUDA=1 must switch to CUDAExtension.
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    (tmp_path / "atss_core").mkdir()
    shutil.copy(ROOT / "atss_core" / "__init__.py", tmp_path / "atss_core" / "__init__.py")
    for sub in ("cpu", "cuda"):
        (tmp_path / "csrc" / sub).mkdir(parents=True)
    (tmp_path / "csrc" / "ops.cpp").write_text("")
    (tmp_path / "csrc" / "cpu" / "nms_kernel.cpp").write_text("")
    (tmp_path / "csrc" / "cuda" / "nms_kernel.cu").write_text("")
    if "CUDA_HOME" not in os.environ and not os.path.exists("/usr/local/cuda/bin/nvcc") and not shutil.which("nvcc"):
        pytest.skip("no CUDA toolkit")
    kwargs, _ = run_setup(tmp_path, FORCE_CUDA="1")
    (ext,) = kwargs["ext_modules"]
    assert "csrc/cuda/nms_kernel.cu" in ext.sources
    assert ("WITH_CUDA", None) in ext.define_macros
    assert "-O3" in ext.extra_compile_args["nvcc"]
    if not torch.cuda.is_available():
        assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;8.6;9.0+PTX"


class _FailingFinder:
    """Meta-path finder that makes `import atss_core._C` raise a given error."""

    def __init__(self, error):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name == "atss_core._C":
            raise self.error
        return None


@pytest.fixture
def hide_extension(monkeypatch):
    import sys

    import atss_core

    monkeypatch.delattr(atss_core, "_C", raising=False)
    monkeypatch.delitem(sys.modules, "atss_core._C", raising=False)

    def install(error):
        monkeypatch.setattr(sys, "meta_path", [_FailingFinder(error)] + sys.meta_path)

    return install


def test_missing_extension_falls_back_quietly(hide_extension, recwarn):
    from atss_core.layers import _ops

    hide_extension(ModuleNotFoundError("No module named 'atss_core._C'", name="atss_core._C"))
    module, error = _ops._load_extension()
    assert module is None and "atss_core._C" in error
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_abi_mismatch_warns_to_rebuild(hide_extension):
    from atss_core.layers import _ops

    hide_extension(ImportError("_C.so: undefined symbol: _ZN3c104impl8GPUTrace"))
    with pytest.warns(RuntimeWarning, match=r"built against a different torch.*pip install -e \. --no-build-isolation"):
        module, error = _ops._load_extension()
    assert module is None and "undefined symbol" in error


def test_wrappers_use_the_reference_without_a_kernel(monkeypatch):
    nms_module = importlib.import_module("atss_core.layers.nms")  # the package attribute is the function

    monkeypatch.setattr(nms_module, "compiled_op", lambda name, device: None)
    boxes = torch.tensor([[0, 0, 9, 9], [1, 1, 10, 10], [0, 0, 9, 4], [20, 20, 29, 29]], dtype=torch.float16)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float16)
    assert nms_module.nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms_module.ml_nms(boxes, scores, torch.tensor([1, 2, 1, 1]), 0.5).tolist() == [0, 1, 2, 3]
