"""The reference's backward ops and losses against float64 central differences."""
import numpy as np
import pytest

from fastconv.testing.gradcheck import CASES, run_case
from fastconv.testing import MismatchError, check_gradient

RTOL = 1e-6  # normwise; measured errors are 1e-11..4e-9


@pytest.mark.parametrize("name", list(CASES))
def test_reference_gradient_matches_finite_differences(name):
    assert run_case(name, rtol=RTOL) <= RTOL


@pytest.mark.parametrize("name", list(CASES))
def test_checker_rejects_a_wrong_gradient(name):
    """Every case must be able to fail: scale one gradient by 1.0001 or flip one entry."""
    def tamper(grad):
        bad = grad.copy()
        bad.reshape(-1)[np.argmax(np.abs(bad))] *= 1.01
        return bad
    with pytest.raises(MismatchError, match="finite differences"):
        run_case(name, rtol=RTOL, tamper=tamper)


def test_check_gradient_on_a_known_function():
    x = np.array([0.3, -1.2, 2.0])
    assert check_gradient(lambda: float(np.sum(x ** 3)), x, 3 * x ** 2, "cube") < 1e-8
    with pytest.raises(MismatchError):
        check_gradient(lambda: float(np.sum(x ** 3)), x, 3 * x ** 2 + 1e-3, "cube")
