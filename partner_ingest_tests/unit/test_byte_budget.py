"""The budget the files sharing one SFTP session hold their bytes against: bounded, fair, always given back."""

from __future__ import annotations

import threading
import time

import pytest

from partner_ingest.ingest.byte_budget import ByteBudget


def test_holders_never_exceed_the_capacity_and_small_ones_share_it():
    budget = ByteBudget(100)
    held, peak, together, lock = [0], [0], [0], threading.Lock()
    inside = [0]

    def worker(nbytes: int) -> None:
        with budget.hold(nbytes) as amount:
            with lock:
                held[0] += amount
                inside[0] += 1
                peak[0] = max(peak[0], held[0])
                together[0] = max(together[0], inside[0])
            time.sleep(0.02)
            with lock:
                held[0] -= amount
                inside[0] -= 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in [30, 30, 30, 30, 30, 10, 10, 10] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert peak[0] <= 100
    assert together[0] >= 3  # small files did share it
    assert budget.free == 100


def test_a_file_larger_than_the_budget_holds_all_of_it_and_moves_alone():
    budget = ByteBudget(64)
    with budget.hold(10**9) as amount:
        assert amount == 64 and budget.free == 0
    with budget.hold(0) as amount:  # an empty file still takes its turn
        assert amount == 1
    assert budget.free == 64


def test_a_large_file_waiting_is_not_overtaken_by_small_ones_arriving_after_it():
    budget = ByteBudget(100)
    order: list[str] = []
    first = budget.hold(60)
    first.__enter__()
    big = threading.Thread(target=lambda: _take(budget, 100, "big", order))
    big.start()
    time.sleep(0.1)  # the big file is waiting for the whole budget
    small = threading.Thread(target=lambda: _take(budget, 10, "small", order))
    small.start()
    time.sleep(0.1)
    assert order == []  # 40 bytes are free, but the small file came after the big one
    first.__exit__(None, None, None)
    big.join(timeout=10)
    small.join(timeout=10)
    assert order == ["big", "small"]


def test_the_bytes_come_back_when_the_holder_fails():
    budget = ByteBudget(10)
    with pytest.raises(RuntimeError), budget.hold(10):
        raise RuntimeError("the upload failed")
    assert budget.free == 10


def _take(budget: ByteBudget, nbytes: int, name: str, order: list[str]) -> None:
    with budget.hold(nbytes):
        order.append(name)
