"""fastconv: small convolutional image classifiers on hand-written Numba kernels.

Backends live in fastconv.kernels ('reference' NumPy, 'cpu' Numba, 'cuda'
numba-cuda); see ../shared/DESIGN.md for the contract they share.
"""
__version__ = "0.1.0"

from . import kernels  # noqa: E402


def cuda_available():
    """True when a real CUDA driver and device are usable by numba-cuda."""
    return kernels.cuda_unavailable_reason() is None


__all__ = ["__version__", "cuda_available", "kernels"]
