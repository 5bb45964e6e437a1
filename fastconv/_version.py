"""The package version, in one place that any module can import without the package face."""
__version__ = "0.1.0"
