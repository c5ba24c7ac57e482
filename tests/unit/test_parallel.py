"""bounded_map: results in order, and never more than its window of tasks held at once."""

from __future__ import annotations

import threading
import time

import pytest

from trainer.parallel import bounded_map


def test_results_come_back_in_input_order():
    assert list(bounded_map(lambda x: x * x, range(100), workers=4)) == [x * x for x in range(100)]


def test_at_most_the_window_is_held_at_once():
    lock, held, peak = threading.Lock(), [0], [0]

    def items():
        for i in range(200):
            with lock:
                held[0] += 1
                peak[0] = max(peak[0], held[0])
            yield i

    def work(i):
        time.sleep(0.001)
        return i

    for _ in bounded_map(work, items(), workers=4, window=8):
        with lock:
            held[0] -= 1
    assert peak[0] <= 9  # the window, plus the item being submitted


def test_an_error_in_a_task_reaches_the_caller():
    def fail(i):
        if i == 5:
            raise ValueError("five")
        return i

    with pytest.raises(ValueError, match="five"):
        list(bounded_map(fail, range(10), workers=2))
