"""fastconv: small convolutional image classifiers on hand-written Numba kernels.

Backends live in fastconv.kernels ('reference' NumPy, 'cpu' Numba, 'cuda'
numba-cuda); docs/contract.md is the contract they share.
"""
from ._version import __version__

# Before anything compiles: 512-bit vectors on AVX-512 CPUs (see _vector_width).
from . import _vector_width  # noqa: E402,F401
from . import kernels  # noqa: E402


def check(device="cpu", shapes="quick", seed=0):
    """Check a backend's kernels against the NumPy reference; see fastconv.testing.check.check.
    The engine lives in fastconv.testing, not at fastconv.check, so that importing it never
    replaces this function (a `fastconv.check` module did, after the first call)."""
    from .testing.check import check as _check
    return _check(device, shapes, seed)


def cuda_available():
    """True when a real CUDA driver and device are usable by numba-cuda."""
    return kernels.cuda_unavailable_reason() is None


# The Keras-style model layer.
from . import callbacks, layers, losses, optimizers  # noqa: E402
from .layers import regularizers  # noqa: E402  (Keras: keras.regularizers)
from ._random import set_seed  # noqa: E402
from . import models  # noqa: E402
from .layers import Input  # noqa: E402
from .models import Sequential, small_convnet  # noqa: E402
from .models import Functional as Model  # noqa: E402  (Keras: keras.Model(inputs, outputs))
from .models.file_format import ModelFileError  # noqa: E402
from .models.saving import load_model  # noqa: E402

__all__ = ["__version__", "check", "cuda_available", "kernels", "layers", "models",
           "optimizers", "losses", "regularizers", "callbacks", "Sequential", "Model", "Input",
           "small_convnet", "set_seed", "load_model", "ModelFileError"]
