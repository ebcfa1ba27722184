"""One text table describing the software and hardware a run used."""
import importlib.metadata
import platform
import sys

import numpy as np
import PIL
import torch
import torchvision


def _optional_version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _opencv_version():
    try:
        import cv2
    except ImportError:
        return "not installed"
    return cv2.__version__


def _extension_info():
    try:
        from atss_core.layers._ops import extension_info
    except ImportError:
        return "atss_core.layers._ops not available"
    try:
        return str(extension_info())
    except Exception as e:  # report, never fail a run because of the env table
        return f"error: {e}"


def collect_env_info():
    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("OS", platform.platform()),
        ("numpy", np.__version__),
        ("PyTorch", torch.__version__),
        ("PyTorch debug build", torch.version.debug),
        ("torchvision", torchvision.__version__),
        ("Pillow", PIL.__version__),
        ("OpenCV", _opencv_version()),
        ("pycocotools", _optional_version("pycocotools")),
        ("yacs", _optional_version("yacs")),
        ("CUDA (torch build)", torch.version.cuda),
        ("CUDA available", torch.cuda.is_available()),
    ]
    if torch.cuda.is_available():
        rows.append(("cuDNN", torch.backends.cudnn.version()))
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            memory = props.total_memory // 2**20
            rows.append((f"GPU {i}", f"{props.name} ({memory} MiB, sm_{props.major}{props.minor})"))
    rows.append(("atss_core._C", _extension_info()))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
