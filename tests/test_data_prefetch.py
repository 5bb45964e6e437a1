"""OrderedPrefetch: order, real concurrency, bounded read-ahead, cancellation, errors."""
import threading

import pytest

from fastconv.data.prefetch import OrderedPrefetch, check_workers, default_workers


def test_results_in_order_for_any_thread_count():
    for workers in (0, 1, 3):
        out = list(OrderedPrefetch(lambda j: j * j, range(20), workers, 2))
        assert out == [j * j for j in range(20)]


def test_workers_run_jobs_at_the_same_time():
    barrier = threading.Barrier(2, timeout=30)     # two jobs must meet: never sequential

    def job(j):
        barrier.wait()
        return threading.current_thread().name

    names = list(OrderedPrefetch(job, range(4), workers=2, ahead=2))
    assert len(set(names)) == 2 and all(n.startswith("fastconv-data") for n in names)


def test_read_ahead_is_bounded_and_an_early_exit_cancels():
    started = []
    lock = threading.Lock()
    release = threading.Event()

    def job(j):
        with lock:
            started.append(j)
        if j >= 1:
            release.wait(30)
        return j

    it = iter(OrderedPrefetch(job, range(50), workers=2, ahead=3))
    assert next(it) == 0
    with lock:
        assert len(started) <= 4          # 3 in flight + the refill after the first result
    it.close()                            # leave the epoch early
    release.set()
    assert len(started) <= 5              # jobs not yet started were cancelled


def test_errors_reach_the_consumer():
    def job(j):
        if j == 3:
            raise RuntimeError("boom in job 3")
        return j

    for workers in (0, 2):
        got = []
        with pytest.raises(RuntimeError, match="boom in job 3"):
            for r in OrderedPrefetch(job, range(10), workers, 2):
                got.append(r)
        assert got == [0, 1, 2]


def test_arguments():
    assert check_workers(None, 2) == (default_workers(), 2)
    assert 1 <= default_workers() <= 4
    with pytest.raises(ValueError, match="workers must be None or an int >= 0"):
        check_workers(1.5, 2)
    with pytest.raises(ValueError, match="prefetch must be an int >= 0"):
        check_workers(1, True)
