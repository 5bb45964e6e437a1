"""Models: Sequential, the model zoo, and model files (save/load)."""
from .saving import load_model, save_model  # noqa: F401
from .sequential import Sequential  # noqa: F401
from .zoo import small_convnet  # noqa: F401

__all__ = ["Sequential", "small_convnet", "load_model", "save_model"]
