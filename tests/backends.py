"""Which backends the tests can run here, for parametrizing backend tests."""
import pytest

from fastconv import kernels


def available_backends():
    """Names of backends that load on this machine, with the reason for the others."""
    found, missing = [], {}
    for name in kernels.BACKENDS:
        try:
            kernels.get(name)
            found.append(name)
        except kernels.BackendUnavailable as exc:
            missing[name] = str(exc)
    return found, missing


def get_or_skip(name):
    """kernels.get(name), or skip (the whole module, at import) saying why it cannot load."""
    try:
        return kernels.get(name)
    except kernels.BackendUnavailable as exc:
        pytest.skip(str(exc), allow_module_level=True)
