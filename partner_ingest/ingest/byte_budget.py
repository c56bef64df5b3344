"""How many bytes of file data the files sharing one SFTP session may hold at once.

Several files move over one session at a time (``limits.files_per_connection``). Each holds, from its
first read request to the end of its upload, up to its size in memory: a small file is read whole and
sent in one ``PutObject``, a large one keeps ``limits.read_in_flight_bytes`` of reads outstanding. The
budget is that same ``read_in_flight_bytes`` per session, so memory stays what one file alone would use
however many files share the session: a thousand 16 KiB files move together, a 5 GiB file takes the
whole budget and moves alone.

Fair in arrival order: a large file waiting for the whole budget is not overtaken forever by small
ones arriving after it (they wait behind it, and go together once it is done). Written here because
``threading.Semaphore`` counts permits one by one and is not first-come-first-served.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator

_WAIT_SLICE_SECONDS = 1.0


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a byte budget needs at least one byte")
        self.capacity = capacity
        self._free = capacity
        self._waiting: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def free(self) -> int:
        with self._changed:
            return self._free

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[int]:
        """Hold ``nbytes`` (at least 1, at most the whole budget) until the block ends; yields what is held.

        Waits while files that came first are still waiting, or the budget lacks room. Each holder
        gives its bytes back when its block ends, however it ends, so the wait ends with them.
        """
        amount = max(1, min(nbytes, self.capacity))
        turn = object()
        with self._changed:
            self._waiting.append(turn)
            try:
                while self._waiting[0] is not turn or self._free < amount:
                    self._changed.wait(_WAIT_SLICE_SECONDS)
            finally:
                self._waiting.remove(turn)
                self._changed.notify_all()
            self._free -= amount
        try:
            yield amount
        finally:
            with self._changed:
                self._free += amount
                self._changed.notify_all()
