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


def csrc_sources():
    sources = [p for p in (ROOT / "csrc").rglob("*") if p.suffix in {".cpp", ".cu", ".h", ".cuh"}]
    assert sources
    return sources


def test_no_legacy_apis_in_csrc():
    # Tensor::type() is legacy; Device::type() (as in `x.device().type()`) is not.
    legacy = re.compile(r"THC|AT_CHECK|AT_ASSERTM?\b|AT_ERROR|(?<!device\(\))\.type\(\)|\.data<|at::IntList|printf")
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in csrc_sources()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if legacy.search(line)
    ]
    assert hits == []
    assert legacy.search("x.type().is_cuda()") and not legacy.search("x.device().type() == t")


def test_cuda_launches_name_a_stream_and_are_checked():
    # <<<grid, block, shared, stream>>>: never the legacy default stream.
    for path in csrc_sources():
        text = path.read_text()
        launches = re.findall(r"<<<(.*?)>>>", text, flags=re.S)
        assert all(len(args.split(",")) == 4 and "stream" in args.lower() for args in launches), (path, launches)
        assert len(launches) <= text.count("C10_CUDA_KERNEL_LAUNCH_CHECK()"), path


def test_extension_info_is_consistent():
    info = extension_info()
    assert set(info) == {
        "available", "cuda", "cuda_version", "cuda_arch_list", "built_with_torch", "torch", "path", "error",
    }
    assert info["torch"] == torch.__version__
    if not info["available"]:
        assert info["error"] and not info["cuda"] and compiled_op("nms", torch.device("cpu")) is None
        pytest.skip("atss_core._C is not built")
    # A stale build (other torch) would be a silent ABI hazard.
    assert info["built_with_torch"] == torch.__version__.split("+")[0]
    assert info["error"] is None
    assert info["cuda"] == (info["cuda_version"] is not None) == (info["cuda_arch_list"] is not None)
    if info["cuda"]:
        assert re.fullmatch(r"\d+\.\d+(\+PTX)?(;\d+\.\d+(\+PTX)?)*", info["cuda_arch_list"])
    if not list((ROOT / "csrc" / "cuda").glob("*.cu")):
        assert not info["cuda"]
    assert compiled_op("nms", torch.device("cpu")) is torch.ops.atss_core.nms
    assert compiled_op("no_such_op", torch.device("cpu")) is None
    assert compiled_op("nms", torch.device("meta")) is None


@pytest.fixture
def run_setup(monkeypatch):
    """Executes a setup.py with setuptools.setup captured and the env restored."""
    saved = {var: os.environ.get(var) for var in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST", "FORCE_CUDA", "MAX_JOBS")}
    for var in ("FORCE_CUDA", "TORCH_CUDA_ARCH_LIST", "MAX_JOBS"):
        monkeypatch.delenv(var, raising=False)
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))

    def run(directory, **env):
        os.environ.update(env)
        monkeypatch.chdir(directory)
        namespace = runpy.run_path(str(Path(directory) / "setup.py"))
        return captured, namespace

    yield run
    for var, value in saved.items():  # setup.py itself sets CUDA_HOME / TORCH_CUDA_ARCH_LIST / MAX_JOBS
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
    assert os.environ["MAX_JOBS"] == str(os.cpu_count())


def test_built_extension_has_cuda_iff_setup_selects_it(run_setup):
    # CI has nvcc and a CUDA torch but no GPU: the CUDA sources must be compiled
    # there, so that a CUDA compile error fails CI.
    info = extension_info()
    if not info["available"]:
        pytest.skip("atss_core._C is not built")
    _, namespace = run_setup(ROOT)
    assert info["cuda"] == namespace["want_cuda"](sorted(str(p) for p in (ROOT / "csrc" / "cuda").glob("*.cu")))


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
    kwargs, namespace = run_setup(tmp_path, FORCE_CUDA="1", MAX_JOBS="3")
    (ext,) = kwargs["ext_modules"]
    assert "csrc/cuda/nms_kernel.cu" in ext.sources
    assert ("WITH_CUDA", None) in ext.define_macros
    assert "-O3" in ext.extra_compile_args["nvcc"]
    assert os.environ["MAX_JOBS"] == "3"
    cuda_home = namespace["CUDA_HOME"]
    assert os.path.join(cuda_home, "lib64") in ext.library_dirs
    wheel_headers = list((Path(torch.__file__).parents[1] / "nvidia").glob("*/include"))
    assert {str(p) for p in wheel_headers} <= set(ext.include_dirs)
    if not torch.cuda.is_available():
        assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0+PTX"
        assert ("ATSS_CORE_CUDA_ARCH_LIST", '"8.0;9.0+PTX"') in ext.define_macros
    # An explicit list is kept and reported.
    kwargs, _ = run_setup(tmp_path, FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST="7.5;8.6")
    (ext,) = kwargs["ext_modules"]
    assert ("ATSS_CORE_CUDA_ARCH_LIST", '"7.5;8.6"') in ext.define_macros


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
