"""Parallel over replicas without ``parallel=True``: serial kernels on blocks of replicas, on threads.

Every CPU kernel that loops over replicas is an ordinary ``@njit(nogil=True)`` function taking a
replica range ``[r0, r1)`` first; ``over_replicas`` cuts ``range(replicas)`` into one block per
thread and runs the blocks concurrently (the kernels release the GIL). Numba's ``prange`` would do
the same work, but its parfor passes type and lower the loop body twice and made up most of the
cold compile time of every kernel that used it (about 9 s per kernel on a 2-core machine), while a
run spends a few microseconds per block in this Python loop. Replicas never share state and every
random draw is keyed by (seed, replica, step), so the results do not depend on the number of
threads or their scheduling.

The number of threads is ``NUMBA_NUM_THREADS`` (Numba's own setting, one per core by default).
"""
import concurrent.futures
import threading
import warnings

import numba
from numba import njit
from numba.core.errors import NumbaPerformanceWarning

_POOL = None
_POOL_LOCK = threading.Lock()


def thread_count() -> int:
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The worker threads of every block but the first (which runs on the calling thread)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, thread_count() - 1),
                                                          thread_name_prefix="dynsim")
        return _POOL


def blocks(replicas: int, threads: int) -> list[tuple[int, int]]:
    """``range(replicas)`` cut into at most ``threads`` contiguous blocks of near-equal size."""
    threads = max(1, min(threads, replicas))
    edges = [replicas * k // threads for k in range(threads + 1)]
    return [(edges[k], edges[k + 1]) for k in range(threads)]


def _types(args) -> tuple:
    """What decides which compiled version of a kernel a call uses (array dtype and rank, or type)."""
    return tuple((a.dtype.str, a.ndim) if hasattr(a, "dtype") and hasattr(a, "ndim") else type(a) for a in args)


_CALLED = set()  # (kernel, argument types) already called once in this process


def over_replicas(kernel, replicas: int, *args, start: int = 0) -> None:
    """``kernel(r0, r1, *args)`` for every block of ``range(start, replicas)``, one block per thread.

    The first block runs on the calling thread, and alone the first time the kernel is called with
    these argument types in this process (so that it compiles, or loads from the cache, once and
    here); an exception in any block is raised here after every block has ended.
    """
    parts = [(start + r0, start + r1) for r0, r1 in blocks(replicas - start, thread_count())] if replicas > start else []
    key = (kernel, _types(args))
    if parts and key not in _CALLED:
        with warnings.catch_warnings():
            # replica_kernel's serial kernels compile through the parallel pipeline on purpose
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            kernel(parts[0][0], parts[0][1], *args)
        _CALLED.add(key)
        parts = parts[1:]
    if not parts:
        return
    (r0, r1), rest = parts[0], parts[1:]
    futures = [_pool().submit(kernel, b0, b1, *args) for b0, b1 in rest]
    try:
        kernel(r0, r1, *args)
    finally:
        concurrent.futures.wait(futures)
    for future in futures:
        future.result()


# Numba's parallel pipeline with every parallel transformation switched off: the kernels stay serial
# (no parfor, nothing to lower twice), but the step loops compile to code that measured 15-20 % faster
# than the plain pipeline's on W1 at the same compile time (interleaved runs, one thread, 2026-12-03).
_PARALLEL_PASSES_ONLY = dict(comprehension=False, reduction=False, inplace_binop=False, setitem=False, numpy=False,
                             stencil=False, fusion=False, prange=False)


def replica_kernel(function):
    """The decorator of the per-step kernels over a replica block: ``@njit(cache=True,
    error_model="numpy", nogil=True)`` through Numba's parallel pipeline with no parallel
    transformation (see ``_PARALLEL_PASSES_ONLY``)."""
    return njit(cache=True, error_model="numpy", nogil=True, parallel=_PARALLEL_PASSES_ONLY)(function)
