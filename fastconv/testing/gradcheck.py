"""Finite-difference checks of every reference backward op and loss, in float64.

The cases are the op table's gradient samples (fastconv.kernels.opinfo): each
builds small random inputs, defines L = sum(forward(...) * r) for a fixed
random r, and here the reference backward op's gradient is compared with
central differences of L. Used by the test suite and by `fastconv selftest`.
"""
from __future__ import annotations

import numpy as np

from ..kernels import float64_allowed
from ..kernels.opinfo import gradient_samples
from .compare import check_gradient

# case name -> GradientSample, in the order `fastconv selftest` prints them
CASES = {case.label: case for case in gradient_samples()}


def run_case(name, seed=0, rtol=1e-6, tamper=None):
    """Run one case; returns its worst normwise relative error or raises MismatchError.

    tamper(grad) -> grad lets a test corrupt one analytic gradient and see the
    check fail.
    """
    case = CASES[name]
    with float64_allowed():
        loss, grads = case.build(np.random.default_rng(seed))
        if tamper:
            grads = [(what, x, tamper(g) if k == case.tampered else g)
                     for k, (what, x, g) in enumerate(grads)]
        return max(check_gradient(loss, x, g, what, rtol) for what, x, g in grads)
