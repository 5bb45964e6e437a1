"""Let Numba's LLVM use 512-bit vectors on AVX-512 CPUs (imported first by fastconv).

LLVM's tuning for Intel AVX-512 cores (Skylake-X to Sapphire Rapids) includes
"prefer-256-bit": the vectorizer emits 256-bit ymm code even though the CPU has
32 zmm registers and 512-bit FMAs, because on the first AVX-512 chips wide code
lowered the clock of the whole core. Our conv kernels are FMA-bound register
tiles, where twice the lanes per instruction wins over the lower clock: measured
on the 2-core AVX-512 development VM (bench/seed_step.py, one run each way) the
seed model trains 7% faster and infers 14% faster, conv2 forward alone 1.3x.

Numba compiles for the host CPU with the feature string of
numba.config.CPU_FEATURES (None: the host's features). Appending
"-prefer-256-bit" to the host's features drops that one tuning flag and nothing
else. It must happen before Numba builds its CPU code generator (the first
compilation or cache load in the process); after that it would not take effect,
so it is then left alone. Numba's on-disk cache keys on the feature string, so
kernels cached under another setting are recompiled, never reused wrongly.

Opt out with FASTCONV_PREFER_256_BIT=1; a user's own NUMBA_CPU_FEATURES or
numba.config.CPU_FEATURES always wins. It applies to every Numba function of the
process compiled afterwards, not only fastconv's.
"""
from __future__ import annotations

import os


def prefer_512_bit_vectors():
    """Set numba.config.CPU_FEATURES to the host's features minus prefer-256-bit, when
    the CPU has AVX-512F and nothing has configured or initialised Numba's CPU target.
    Returns True when it changed the setting."""
    if os.environ.get("FASTCONV_PREFER_256_BIT", "") not in ("", "0"):
        return False
    import numba
    from numba.core import registry
    if numba.config.CPU_FEATURES is not None or numba.config.CPU_NAME is not None:
        return False
    if "_toplevel_target_context" in vars(registry.cpu_target):
        return False            # the code generator exists: too late to change it
    try:
        import llvmlite.binding as ll
        features = ll.get_host_cpu_features()
    except (RuntimeError, OSError):
        return False
    if not features.get("avx512f"):
        return False
    numba.config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"
    return True


#: Whether this process's Numba CPU code uses 512-bit vectors by fastconv's doing.
ENABLED = prefer_512_bit_vectors()
