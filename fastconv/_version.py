"""The package version, in one place: pyproject.toml reads it, fastconv.__version__ shows it."""
__version__ = "0.1.0"
