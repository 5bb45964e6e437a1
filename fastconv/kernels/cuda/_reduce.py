"""Block-wide reductions shared by the row kernels (softmax) and the losses.

Each is a device function that every thread of the block must call (they
synchronise); `sh` is a float32 shared array of at least blockDim.x entries and
blockDim.x must be a power of two. The order of the additions depends only on
blockDim.x, so results are deterministic for a given launch configuration.
"""
from numba import cuda


@cuda.jit(device=True)
def block_sum(sh, value):
    """The sum of `value` over the block's threads, returned to every thread."""
    t = cuda.threadIdx.x
    sh[t] = value
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s:
            sh[t] += sh[t + s]
        cuda.syncthreads()
        s //= 2
    total = sh[0]
    cuda.syncthreads()  # every thread has read sh[0] before a next reduction reuses sh
    return total


@cuda.jit(device=True)
def block_max(sh, value):
    """The maximum of `value` over the block's threads, returned to every thread."""
    t = cuda.threadIdx.x
    sh[t] = value
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s and sh[t + s] > sh[t]:
            sh[t] = sh[t + s]
        cuda.syncthreads()
        s //= 2
    best = sh[0]
    cuda.syncthreads()
    return best
