"""Ctrl-C that lands inside a Numba kernel surfaces as KeyboardInterrupt.

The cpu kernels are compiled with nogil=True. When SIGINT arrives while one runs,
Python's handler is queued; it runs as the dispatcher takes the GIL back to box the
result, so the KeyboardInterrupt is raised inside the dispatcher's C code, which then
returns a value with an exception set. CPython turns that into
`SystemError: CPUDispatcher(...) returned a result with an exception set` whose
__cause__ is the KeyboardInterrupt (measured: 19 of 20 interrupts of a conv loop), so
`except KeyboardInterrupt` missed it and the CLI's exit 130 and resume hint were lost.
`surfaces_interrupts` wraps each public op of a backend that calls Numba so that this
SystemError is raised as the KeyboardInterrupt it carries.
"""
from __future__ import annotations

import functools


def interrupt_in(exc):
    """The KeyboardInterrupt a SystemError from a Numba dispatcher carries, else None."""
    if isinstance(exc, SystemError):
        for inner in (exc.__cause__, exc.__context__):
            if isinstance(inner, KeyboardInterrupt):
                return inner
    return None


def surfaces_interrupts(fn):
    """`fn` with a SystemError that carries a KeyboardInterrupt raised as that interrupt."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SystemError as exc:
            interrupt = interrupt_in(exc)
            if interrupt is None:
                raise
            raise KeyboardInterrupt(*interrupt.args) from None
    return wrapper


def wrap_module_ops(namespace, names):
    """Replace each function `names` in `namespace` (a module's globals()) by its
    surfaces_interrupts wrapper."""
    for name in names:
        if name in namespace:
            namespace[name] = surfaces_interrupts(namespace[name])
