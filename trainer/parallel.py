"""A thread pool map that holds a bounded number of tasks, not one future per item.

`ThreadPoolExecutor.map` submits every item at once: 40,000 objects are 40,000 futures (each with its own
condition and lock, ~1.5 KB) before the first result is read, which made the data stage's memory grow with
the selection. Here at most `window` tasks are queued or running; results come back in input order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, window: int | None = None
) -> Iterator[R]:
    """fn over items on `workers` threads, in order, with at most `window` (default 4 x workers) in flight."""
    workers = max(1, workers)
    window = max(workers, window or 4 * workers)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            if len(pending) >= window:
                yield pending.popleft().result()
            pending.append(pool.submit(fn, item))
        while pending:
            yield pending.popleft().result()
