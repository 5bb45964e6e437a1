"""The seed model's data-parallel training step: images/s and the Allreduce's share.

    NUMBA_NUM_THREADS=1 mpirun -n 2 python bench/distributed_step.py   # 2 ranks x 1 thread
    NUMBA_NUM_THREADS=2 python bench/distributed_step.py --alone       # 1 rank x 2 threads
    python bench/distributed_step.py --batch 16 --steps 10 --size 150

Trains fastconv.small_convnet (150x150x3, 438,369 parameters) on random images with
model.fit(..., distributed=True) (--alone: a plain fit) for --steps steps of global batch
--batch after one warm-up epoch of 2 steps (compilation), and times each step (the best
and the median are printed: on a shared machine the best is the repeatable figure);
under MPI it then times the Allreduce of a buffer of the exchange's size alone (--steps
calls) and prints its share of the median step. Rank 0 prints; a bench, not a test.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastconv                                                  # noqa: E402
from fastconv import callbacks as C                              # noqa: E402


class Times(C.Callback):
    def __init__(self):
        super().__init__()
        self.t = []

    def on_train_batch_begin(self, batch, logs=None):
        self.t.append(time.perf_counter())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--alone", action="store_true")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--size", type=int, default=150)
    a = p.parse_args()
    rank, size, comm = 0, 1, None
    if not a.alone:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(0)
    x = rng.random((a.batch * a.steps, a.size, a.size, 3), np.float32)
    y = (rng.random(a.batch * a.steps) > 0.5).astype(np.float32)
    model = fastconv.small_convnet(input_shape=(a.size, a.size, 3), seed=0)
    dist = False if a.alone else True
    model.fit(x[:2 * a.batch], y[:2 * a.batch], batch_size=a.batch, epochs=1, verbose=0,
              distributed=dist)                                   # compile, warm up
    times = Times()
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=a.batch, epochs=1, verbose=0, callbacks=[times],
              distributed=dist)
    steps = np.diff(times.t + [time.perf_counter()])
    med, best = float(np.median(steps)), float(steps.min())
    line = (f"{size} rank(s) x {os.environ.get('NUMBA_NUM_THREADS', '?')} thread(s), "
            f"global batch {a.batch}, {a.size}x{a.size}: step median {med * 1e3:.1f} ms, "
            f"best {best * 1e3:.1f} ms, {a.batch / med:.1f} images/s (median), "
            f"{a.batch * a.steps / (time.perf_counter() - t0):.1f} images/s (epoch)")
    if comm is not None:
        from mpi4py import MPI
        buf = np.zeros(model.count_params() + 3, np.float32)   # the exchange's size
        comm.Barrier()
        ts = []
        for _ in range(a.steps):
            t = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            ts.append(time.perf_counter() - t)
        ar = float(np.median(ts))
        line += (f"; Allreduce of {buf.size:,} float32 ({buf.nbytes / 1e6:.2f} MB): median "
                 f"{ar * 1e3:.2f} ms, {100 * ar / med:.1f}% of the step")
    if rank == 0:
        print(line, flush=True)


if __name__ == "__main__":
    main()
