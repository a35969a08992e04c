"""A bounded pool for password hashing, off the event loop.

bcrypt is slow on purpose (about 0.2 s of CPU at cost 12). Run inside `async def` it would freeze
every other request for that long; run in an unbounded thread pool, a burst of registrations
queues without limit and every caller waits for all of it. Here hashing gets its own threads
(bcrypt releases the GIL, so N threads use N cores) and a fixed number of places: the jobs
running plus those queued for a thread.

Overload is handled so that it cannot collapse into refusals:

- A request that finds every place taken waits in line for one, up to `wait_seconds` (between
  half and all of it, at random), and is refused (HashingBusyError, answered 503 with
  Retry-After) only then. A refusal answered at once
  is resent at once by an impatient client: thousands of them a second kept the event loop busy
  enough to starve the hashing threads, so the places stayed taken and the refusals went on. A
  refusal that takes a second costs no CPU while it waits.
- The places behind the line are few (a thread's job and one queued for each thread by default).
  The line is served in order while the pool can serve all of it within `wait_seconds` (at the
  pace of the last jobs). When it is longer, some of it will be refused whatever the order, and
  the newest is served first (adaptive LIFO): an answered request then waits for little more than
  two hashes, instead of its whole time in line plus them.
- The job of a client that has gone away is dropped, if it has not started, and so is its place
  in line: a closed connection frees its place at once rather than after a hash nobody will read.
"""

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from app.core import metrics

T = TypeVar("T")

logger = logging.getLogger(__name__)

# More waiting requests than this (per worker) are refused at once: a bound on what a flood holds.
MAX_WAITING = 1000


class HashingBusyError(Exception):
    """No place in the hashing pool came free in time: try again in a moment."""


class ClientGoneError(Exception):
    """The client closed its connection before its hashing job started; the job was dropped."""


def _lower_thread_priority(niceness: int) -> None:
    # On Linux, a nice value belongs to a thread: the hashing threads yield the CPU to the event
    # loop (cheap requests) and to PostgreSQL, and take every cycle nobody else wants.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class _Place:
    """A place held by one request: its jobs run one after another in it."""

    def __init__(self) -> None:
        self.gone = False
        self.waiter: asyncio.Future[None] | None = None  # while waiting for the place
        self.job: Future[Any] | None = None  # while a job is queued or running

    def client_gone(self) -> None:
        self.gone = True
        if self.waiter is not None:
            self.waiter.cancel()
        if self.job is not None:
            self.job.cancel()  # only succeeds while the job waits for a thread


_current_place: contextvars.ContextVar[_Place | None] = contextvars.ContextVar("hashing_place", default=None)


class HashingPool:
    def __init__(self, *, size: int, queue_size: int, wait_seconds: float = 1.0, niceness: int = 10) -> None:
        self.size = size
        self.capacity = size + queue_size  # running + queued for a thread
        self.wait_seconds = wait_seconds
        self.pending = 0  # places taken; touched only from the event loop's thread, so no lock is needed
        self._waiting: deque[asyncio.Future[None]] = deque()  # in order of arrival
        self.job_seconds = 0.0  # a moving average of the last jobs' durations (0 until one has run)
        self._executor = ThreadPoolExecutor(
            max_workers=size,
            thread_name_prefix="hashing",
            initializer=_lower_thread_priority,
            initargs=(niceness,),
        )

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def _take(self, current: _Place) -> None:
        """A place, at once if one is free, else one that comes free within `wait_seconds`."""
        if self.pending < self.capacity:  # then nobody waits: a freed place goes to a waiter first
            self.pending += 1
            metrics.HASHING_WAIT.observe(0.0)
            return
        if len(self._waiting) >= MAX_WAITING:
            metrics.HASHING_REFUSED.inc()
            metrics.HASHING_WAIT.observe(0.0)
            raise HashingBusyError
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting.append(waiter)
        current.waiter = waiter
        # Between half and all of the wait, at random: a flood's clients, refused together and
        # resending together, would otherwise come back in waves, each a burst of work for the loop.
        wait = self.wait_seconds * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not a secret)
        timer = loop.call_later(wait, self._expire, waiter)
        started = time.perf_counter()
        try:
            await waiter  # the place is handed over by _give_back: `pending` already counts it
        except HashingBusyError:
            metrics.HASHING_REFUSED.inc()
            raise
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_back()  # handed over as this request was being cancelled
            raise
        finally:
            metrics.HASHING_WAIT.observe(time.perf_counter() - started)
            current.waiter = None
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiter)

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(HashingBusyError())

    def _give_back(self) -> None:
        """Hand the place to a request waiting in line (the oldest, or under overload the newest), or free it."""
        servable = self.size * self.wait_seconds / self.job_seconds if self.job_seconds else float("inf")
        while self._waiting:
            waiter = self._waiting.pop() if len(self._waiting) > servable else self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.pending -= 1

    @contextlib.asynccontextmanager
    async def place(self, client_gone: Callable[[], Awaitable[object]] | None = None) -> AsyncIterator[None]:
        """Hold one place for the block: every `run` inside it uses that place.

        Taken before any other work of a request, so that a refusal costs nothing else.
        `client_gone`, when given, is awaited alongside: when it returns (the client closed its
        connection), a wait for a place or a queued job stops with ClientGoneError.
        """
        if _current_place.get() is not None:  # nested: the outer block's place serves
            yield
            return
        current = _Place()
        watcher = None
        if client_gone is not None:

            async def watch() -> None:
                await client_gone()
                current.client_gone()

            watcher = asyncio.create_task(watch())
        try:
            try:
                await self._take(current)
            except asyncio.CancelledError:
                if _dropped(current):
                    raise ClientGoneError from None
                raise
            token = _current_place.set(current)
            try:
                yield
            finally:
                _current_place.reset(token)
                self._give_back()
        finally:
            if watcher is not None:
                watcher.cancel()

    async def run(self, function: Callable[..., T], /, **kwargs: Any) -> T:
        """Run `function(**kwargs)` in a hashing thread, in the caller's place (or a new one)."""
        current = _current_place.get()
        if current is None:
            async with self.place():
                return await self.run(function, **kwargs)
        if current.gone:
            raise ClientGoneError
        current.job = self._executor.submit(_timed, functools.partial(function, **kwargs))
        try:
            outcome: tuple[T, float] = await asyncio.wrap_future(current.job)
            result, seconds = outcome
            self.job_seconds = seconds if not self.job_seconds else 0.8 * self.job_seconds + 0.2 * seconds
            return result
        except asyncio.CancelledError:
            if _dropped(current):
                logger.debug("a hashing job was dropped: its client went away")
                raise ClientGoneError from None
            raise
        finally:
            current.job = None


def _timed(job: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    return job(), time.perf_counter() - started


def _dropped(current: _Place) -> bool:
    """Whether a CancelledError came from the client going away, rather than the task being cancelled."""
    task = asyncio.current_task()
    return current.gone and task is not None and task.cancelling() == 0
