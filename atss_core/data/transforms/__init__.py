from .build import build_normalize, build_transforms
from .transforms import Compose, Normalize, RandomHorizontalFlip, Resize, ToTensor

__all__ = ["build_normalize", "build_transforms", "Compose", "Normalize", "RandomHorizontalFlip", "Resize", "ToTensor"]
