"""What counts as an int and as a number in an argument check.

bool is an int subclass in Python, but True is no batch size, seed or pool size:
every argument check in fastconv refuses it through these two tests. NumPy
scalars count (np.int64 from arithmetic on shapes, np.float32 read from arrays).
"""
import numpy as np


def is_int(value):
    """True for an int or a NumPy integer, False for a bool and anything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value):
    """True for an int, a float or a NumPy integer or floating scalar, False for a bool
    and anything else."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool))
