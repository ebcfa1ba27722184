"""atss_core: dense object detectors for label-assignment research."""
__version__ = "0.1.0"
