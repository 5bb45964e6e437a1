"""Run a sequence of jobs on background threads, yielding results in order.

Decoding (Pillow releases the GIL) and warping (a nogil Numba kernel) overlap
with each other and with the training step, which itself runs outside the GIL
in Numba's parallel kernels.
"""
from __future__ import annotations

import collections
import os
import time
from concurrent.futures import ThreadPoolExecutor

from .._args import is_int


def default_workers():
    """Loader threads when workers=None: one per core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def check_workers(workers, prefetch):
    if workers is None:
        workers = default_workers()
    if not is_int(workers) or workers < 0:
        raise ValueError(f"image_dataset_from_directory: workers must be None or an int "
                         f">= 0 (0 decodes in the calling thread), received workers={workers!r}")
    if not is_int(prefetch) or prefetch < 0:
        raise ValueError(f"image_dataset_from_directory: prefetch must be an int >= 0, "
                         f"received prefetch={prefetch!r}")
    return workers, prefetch


class OrderedPrefetch:
    """Iterate fn(job) for each job, in order, `ahead` jobs in flight on `workers` threads.

    workers=0 runs each job in the consumer's thread when it is asked for. The
    time the consumer spent waiting for results is summed in `.wait_seconds`.
    Leaving the loop early cancels the jobs not yet started.
    """

    def __init__(self, fn, jobs, workers, ahead):
        self.fn = fn
        self.jobs = jobs
        self.workers = workers
        self.ahead = max(1, ahead, workers)
        self.wait_seconds = 0.0

    def __iter__(self):
        if self.workers == 0:
            for job in self.jobs:
                t0 = time.perf_counter()
                result = self.fn(job)
                self.wait_seconds += time.perf_counter() - t0
                yield result
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fastconv-data")
        pending = collections.deque()
        jobs = iter(self.jobs)
        try:
            for job in jobs:
                pending.append(pool.submit(self.fn, job))
                if len(pending) >= self.ahead:
                    break
            while pending:
                t0 = time.perf_counter()
                result = pending.popleft().result()
                self.wait_seconds += time.perf_counter() - t0
                for job in jobs:                 # refill before handing the result over
                    pending.append(pool.submit(self.fn, job))
                    break
                yield result
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
