"""The two LLVM settings fastconv asks of Numba (imported first by fastconv): 512-bit
vectors on AVX-512 CPUs, and LLVM's SLP vectorizer.

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

The SLP vectorizer (superword-level parallelism: it merges runs of identical
scalar operations into vector ones) is part of every -O2/-O3 clang build, but
Numba switched it off by default in 0.57 (numba PR #8852, 2023) after
miscompilations with the LLVM of the day (LLVM 11/14; Numba 0.68 ships LLVM 20).
The conv kernels need it: a register tile's bias load and its store to the
output are 32-trip loops that LLVM unrolls completely, and without SLP the
unrolled copies stay scalar, with the tile's 12 zmm accumulators spilled to the
stack and reloaded one float at a time: 192 scalar load/store pairs per tile
against its 324 FMAs. For the RGB first layer (27 taps per tile) that was most
of its time: conv1 forward at batch 32, one thread, 19.2-20.7 -> 13.9-15.6 CPU
ms; the seed's inference 38.2-40.0 -> 31.1-33.0 CPU ms and its training step
84-90 -> 77-81 CPU ms (three interleaved rounds, bench/seed_step.py's model,
docs/cpu_conv.md). SLP does not reassociate (no fastmath), so it changes no
result; every kernel's reference check runs with it on.

fastconv sets numba.config.SLP_VECTORIZE = 1 unless NUMBA_SLP_VECTORIZE is in the
environment (the user's choice wins) or FASTCONV_SLP_VECTORIZE=0. Numba reads the
setting at each compilation, so it can be set any time before fastconv's kernels
compile; like the vector width it applies to every Numba function compiled in the
process afterwards. Numba's cache does not key on it: kernels cached by a process
without it are reused as they are (slower, same results) until their source
changes.
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


def slp_vectorize():
    """Set numba.config.SLP_VECTORIZE = 1 unless the user chose (NUMBA_SLP_VECTORIZE in
    the environment) or opted out (FASTCONV_SLP_VECTORIZE=0). Returns True when it
    changed the setting."""
    if "NUMBA_SLP_VECTORIZE" in os.environ:
        return False
    if os.environ.get("FASTCONV_SLP_VECTORIZE", "") == "0":
        return False
    import numba
    if numba.config.SLP_VECTORIZE:
        return False
    numba.config.SLP_VECTORIZE = 1
    return True


#: Whether this process's Numba CPU code uses 512-bit vectors by fastconv's doing.
ENABLED = prefer_512_bit_vectors()
#: Whether fastconv switched on LLVM's SLP vectorizer in this process.
SLP = slp_vectorize()
