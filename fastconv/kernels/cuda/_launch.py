"""Launch parameters of the cuda kernels in fastconv/kernels/cuda (threads per block).

One place, so the report states what the wrappers really launch and the simulator
tests can patch them down (tests/test_cuda_sim.py) to make tiny inputs span several
blocks. Wrappers read these at call time; kernels that size shared memory from one
of them read it at compile time, so a patched value must stay <= the compiled size
and (for tree reductions) a power of two.
"""
ELEMENTWISE = 256   # grid-stride elementwise kernels (activations, dropout, optimizers)
ROW = 128           # one block per row of a (N, K) softmax; a tree reduction over K
ROW_MAX = 128       # the shared memory the row kernels compile with: ROW must not exceed it
POOL = 256          # one thread per pooled output (forward) or input pixel (backward)
REDUCE = 256        # the one-block loss reductions
REDUCE_MAX = 256    # the shared memory the loss kernels compile with: REDUCE must not exceed it
GPOOL = 256         # global pooling forward: threads per block, a (channels, pixel lanes) tile
GPOOL_C = 32        # at most this many channels per block (a warp's worth: coalesced rows)
GPOOL_MAX = 256     # the shared memory the global pooling kernels compile with: GPOOL <= it
BN = 256            # batchnorm statistics: threads per block, a (channels, row lanes) tile
BN_C = 32           # at most this many channels per block (a warp's worth: coalesced rows)
BN_MAX = 256        # the shared memory the batchnorm statistics kernels compile with: BN <= it
BN_CHUNKS = 256     # at most this many row chunks (blocks per channel tile) in the statistics
BN_ROWS = 8         # at least this many rows per lane before the statistics add a chunk
MAX_BLOCKS = 65535  # grid-stride kernels never need more (and 1-D grids allow 2**31 - 1)


def run(launches):
    """Launch each (kernel, (grid, block), argument tuple) of a launch list, in order: what
    the conv/dense ops' `*_launches` functions return, and what a pre-bound plan step
    replays (kernels/cuda/_bound.py). The kernel is configured at each launch, not when
    the list is made: the simulator's kernel[grid, block] reconfigures the kernel object
    itself (a real one returns a new launch configuration)."""
    for kernel, config, args in launches:
        kernel[config](*args)
