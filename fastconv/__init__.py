"""fastconv: small convolutional image classifiers on hand-written Numba kernels.

Backends live in fastconv.kernels ('reference' NumPy, 'cpu' Numba, 'cuda'
numba-cuda); see ../shared/DESIGN.md for the contract they share.
"""
__version__ = "0.1.0"

from . import kernels  # noqa: E402


def cuda_available():
    """True when a real CUDA driver and device are usable by numba-cuda."""
    return kernels.cuda_unavailable_reason() is None


# The Keras-style model layer (issue 5).
from . import callbacks, layers, losses, optimizers  # noqa: E402
from ._random import set_seed  # noqa: E402
from . import models  # noqa: E402
from .models import Sequential, small_convnet  # noqa: E402
from .saving import ModelFileError, load_model  # noqa: E402

__all__ = ["__version__", "cuda_available", "kernels", "layers", "models", "optimizers",
           "losses", "callbacks", "Sequential", "small_convnet", "set_seed", "load_model",
           "ModelFileError"]
