"""The numba-cuda engine (not built yet: see the CUDA engine issue)."""
NAME = "cuda"
