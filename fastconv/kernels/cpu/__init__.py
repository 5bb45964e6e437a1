"""The Numba CPU-parallel engine (not built yet: see the CPU engine issue)."""
NAME = "cpu"
