"""Data-parallel training over MPI (mpi4py, imported only when used).

    mpirun -n 4 python train.py        # model.fit(x, y, batch_size=64, distributed=True)
    mpirun -n 4 fastconv train DATA    # the command detects mpirun itself

One process per rank. Each rank takes its slice of every global batch (batch_size is
the global batch: rank r of N gets its rows [B*r//N, B*(r+1)//N) of the single-process
batch, in the single-process shuffled order), computes the gradients of its slice, and
one in-place float32 Allreduce per step over one contiguous buffer sums them (each
rank's weighted by its share of the batch), together with the step's loss sum and
correct count; every rank then applies the same update, so weights and optimizer state
stay identical with nothing else exchanged. The weights, the seed and the generators'
states are broadcast from rank 0 when fit starts. Dropout and augmentation draw the
global batch's random numbers on every rank from the same stream and use their slice,
so N ranks reproduce one process up to the order of the gradient sum. On cuda each
rank takes the GPU of its local rank (select_gpu, before the model is built) and the
buffer is allreduced on the device with NCCL, or through pinned host memory and MPI
without it (_device). See docs/distributed.md.
"""
from __future__ import annotations

from ._comm import (DistributedError, code_of, describe, launched_by_mpi, report_and_abort,
                    shard, world)
from ._device import local_rank, select_gpu
from ._trainer import DistributedFit

__all__ = ["DistributedError", "DistributedFit", "code_of", "describe", "evaluate", "fit",
           "launched_by_mpi", "local_rank", "report_and_abort", "select_gpu", "shard",
           "world"]


def fit(model, distributed, fit_fn, args):
    """model.fit(..., distributed=...) (models.training): fit_fn(**args) on every rank
    with the step, the batches and the start of training made data-parallel;
    `distributed` is True (COMM_WORLD) or an mpi4py communicator."""
    return DistributedFit(model, world(distributed)).run(fit_fn, args)


def evaluate(model, distributed, evaluate_fn):
    """model.evaluate(..., distributed=...) (models.training): evaluate_fn() (its logs)
    with each rank evaluating its slice of every batch and the sums Allreduced, after
    rank 0's weights are broadcast; a rank that fails stops every rank."""
    return DistributedFit(model, world(distributed)).evaluate(evaluate_fn)
