"""A bounded pool for password hashing, off the event loop.

bcrypt is slow on purpose (about 0.2 s of CPU at cost 12). Run inside `async def` it would freeze
every other request for that long; run in an unbounded thread pool, a burst of registrations
queues without limit and every caller waits for all of it. Here hashing gets its own threads
(bcrypt releases the GIL, so N threads use N cores) and a queue of fixed length: when it is
full, the caller is told at once (HashingBusyError, answered 503 with Retry-After).
"""

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class HashingBusyError(Exception):
    """Every hashing thread is busy and the queue is full: try again in a moment."""


def _lower_thread_priority(niceness: int) -> None:
    # On Linux, a nice value belongs to a thread: the hashing threads yield the CPU to the event
    # loop (cheap requests) and to PostgreSQL, and take every cycle nobody else wants.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class HashingPool:
    def __init__(self, *, size: int, queue_size: int, niceness: int = 10) -> None:
        self.size = size
        self.capacity = size + queue_size  # running + waiting
        self.pending = 0  # touched only from the event loop's thread, so no lock is needed
        self._executor = ThreadPoolExecutor(
            max_workers=size,
            thread_name_prefix="hashing",
            initializer=_lower_thread_priority,
            initargs=(niceness,),
        )

    def ensure_capacity(self) -> None:
        """Refuse at once, before any other work, when a hashing job could not even be queued."""
        if self.pending >= self.capacity:
            raise HashingBusyError

    async def run(self, function: Callable[..., T], /, **kwargs: Any) -> T:
        self.ensure_capacity()
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(function, **kwargs))
        finally:
            self.pending -= 1
