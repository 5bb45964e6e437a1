"""Checking kernels against their truth, installed with the package so that
`fastconv check` and `fastconv selftest` can prove the kernels on a user's machine.

    compare    a backend against the reference, gradients against finite differences
               (the public names, re-exported here)
    gradcheck  the reference's backward ops and losses against float64 central differences
    check      the engine of `fastconv check` and `fastconv.check()`

No name `check` is exported here: `fastconv.testing.check` is the submodule, and an
import of it must never find (or replace) a function under that name.
"""
from .compare import (Comparison, MismatchError, OutputCheck, assert_close,
                      assert_matches_reference, check_gradient, compare_to_reference,
                      error_stats, numerical_gradient)

__all__ = ["Comparison", "MismatchError", "OutputCheck", "assert_close",
           "assert_matches_reference", "check_gradient", "compare_to_reference", "error_stats",
           "numerical_gradient"]
