"""Which backends the tests can run here, for parametrizing backend tests."""
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
