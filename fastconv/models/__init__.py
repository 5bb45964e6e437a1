"""Models: Sequential, Functional (fastconv.Model), the model zoo, and model files
(save/load)."""
from .functional import Functional  # noqa: F401
from .saving import load_model, save_model  # noqa: F401
from .sequential import Sequential  # noqa: F401
from .zoo import keras_io_xception, small_convnet  # noqa: F401

__all__ = ["Sequential", "Functional", "small_convnet", "keras_io_xception", "load_model",
           "save_model"]
