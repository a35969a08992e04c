"""Password hashing off the event loop, admitted by the wait it will have.

bcrypt is slow on purpose (about 0.2-0.3 s of CPU at cost 12). Run inside `async def` it would
freeze every other request for that long; run in an unbounded thread pool, a burst of
registrations queues without limit and every caller waits for all of it. Here hashing gets its own
threads (bcrypt releases the GIL, so N threads use N cores), at a lower CPU priority than the event
loop and PostgreSQL.

Admission is decided by time, not by a count of places. Every request that needs a hash has an
**expected wait**: the hashing work ahead of it divided by the threads, at the pace of the last
hashes (a decaying average, so a busier machine or a dearer hash shows within a few jobs). While
everyone in line can start within `max_wait_seconds` (HASH_MAX_WAIT_SECONDS), the line is served in
order and nobody is refused: eight or twelve clients on two cores wait a second or two and are all
answered. When more work has come than the threads can do in that time, some of it will be
refused whatever the order. Then the newest request is served first (its wait is short, and one
that has just arrived is the one whose client is surely still there), and a request whose wait has
reached the target is refused: 503, with a `Retry-After` saying when the line ahead of a newcomer
will have drained to the target. So an answered request waits at most the target plus one hash,
and under a flood most answers come in a hash or two, not after a full line.

- A refusal costs time, not CPU: it comes once a request has waited its target (or, when even the
  front of the line could not start in time, after half to all of `hold_seconds`, at random). A
  refusal answered at once is resent at once by an impatient client, and thousands of those a
  second once starved the hashing threads.
- Between the line and the threads there are a few places (a job running and one queued for each
  thread by default): only those jobs are handed to the threads, so the line's order is the order
  of service, and the jobs already committed to the threads are at most a hash or so of work.
- The job of a client that has gone away is dropped if it has not started, and so is its place in
  line: a closed connection frees its place at once rather than after a hash nobody will read.
"""

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

from app.core import metrics

T = TypeVar("T")

logger = logging.getLogger(__name__)

# More waiting requests than this (per worker) are refused at once: a bound on what a flood holds.
MAX_WAITING = 1000
# Retry-After never says more than this: past it, a client is better off trying than believing us.
MAX_RETRY_AFTER_SECONDS = 60


class HashingBusyError(Exception):
    """The request would have waited longer than the target for a hashing thread: try again later."""

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(f"the hashing line is full: retry after {retry_after} s")
        self.retry_after = retry_after


class ClientGoneError(Exception):
    """The client closed its connection before its hashing job started; the job was dropped."""


def _lower_thread_priority(niceness: int) -> None:
    # On Linux, a nice value belongs to a thread: the hashing threads yield the CPU to the event
    # loop (cheap requests) and to PostgreSQL, and take every cycle nobody else wants. Relative to
    # the process's own (a server started with `nice` keeps its threads below it), at most 19.
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + niceness, 19))


class _Place:
    """A place held by one request: its jobs run one after another in it."""

    def __init__(self) -> None:
        self.gone = False
        self.waiter: asyncio.Future[None] | None = None  # while waiting in line (or for a refusal)
        self.job: Future[Any] | None = None  # while a job is queued or running

    def client_gone(self) -> None:
        self.gone = True
        if self.waiter is not None:
            self.waiter.cancel()
        if self.job is not None:
            self.job.cancel()  # only succeeds while the job waits for a thread


class _Waiter:
    """A request in line, with the time it came."""

    __slots__ = ("arrived", "future")

    def __init__(self, future: asyncio.Future[None], arrived: float) -> None:
        self.future = future
        self.arrived = arrived


_current_place: contextvars.ContextVar[_Place | None] = contextvars.ContextVar("hashing_place", default=None)


class HashingPool:
    def __init__(
        self,
        *,
        size: int,
        max_wait_seconds: float = 2.0,
        queue_size: int | None = None,
        hold_seconds: float = 1.0,
        niceness: int = 10,
    ) -> None:
        self.size = size
        # Places handed to the threads: running + queued for a thread (one per thread by default).
        self.capacity = size + (size if queue_size is None else queue_size)
        self.max_wait_seconds = max_wait_seconds
        self.hold_seconds = hold_seconds
        self.pending = 0  # places taken; touched only from the event loop's thread, so no lock is needed
        self._line: deque[_Waiter] = deque()  # in order of arrival
        self.job_seconds = 0.0  # a decaying average of the last jobs' durations (0 until one has run)
        self._started: dict[int, float] = {}  # the jobs running now: when each started (written by the threads)
        self._job_ids = itertools.count()
        self._executor = ThreadPoolExecutor(
            max_workers=size,
            thread_name_prefix="hashing",
            initializer=_lower_thread_priority,
            initargs=(niceness,),
        )

    @property
    def waiting(self) -> int:
        return len(self._line)

    # The expected wait ------------------------------------------------------------------------

    def _work_ahead_of_line(self, now: float) -> float:
        """Seconds of hashing the places hold: what is left of the running jobs, and a whole job for
        each place whose job has not started (queued for a thread, or its request still reading
        the database before it hashes)."""
        job = self.job_seconds
        started = tuple(self._started.values())  # one C-level copy: the threads add and remove entries
        running = min(len(started), self.pending)
        left = sum(max(job - (now - t), 0.0) for t in started[:running])
        return left + (self.pending - running) * job

    def expected_wait(self, position: int | None = None, *, now: float | None = None) -> float:
        """Seconds before the job of the request at `position` in line (0: the next to be served;
        None: a newcomer at the back) would start, were the line served in order."""
        if position is None:
            position = len(self._line)
        if self.pending + position < self.size:
            return 0.0  # a thread is free for it
        now = time.perf_counter() if now is None else now
        return (self._work_ahead_of_line(now) + position * self.job_seconds) / self.size

    def _in_order_in_time(self, now: float) -> bool:
        """Whether everyone in line would start within the target if served in order."""
        work = self._work_ahead_of_line(now)
        for position, waiter in enumerate(self._line):
            if self.pending + position >= self.size:
                start = now + (work + position * self.job_seconds) / self.size
                if start > waiter.arrived + self.max_wait_seconds:
                    return False
        return True

    def retry_after(self) -> int:
        """Whole seconds until a newcomer at the back of the line would be within the target."""
        over = self.expected_wait() - self.max_wait_seconds
        return min(max(1, math.ceil(over)), MAX_RETRY_AFTER_SECONDS)

    # Places --------------------------------------------------------------------------------------

    async def _take(self, current: _Place) -> None:
        """A place, at once if one is free and nobody waits, else in line within the target."""
        if self.pending < self.capacity and not self._line and self.expected_wait(0) <= self.max_wait_seconds:
            self.pending += 1
            metrics.HASHING_WAIT.observe(0.0)
            return
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        # Where it would stand: at the back while the line, itself included, can be served in order
        # within the target; else at the front, as the line is then served newest first. If even
        # the front cannot start in time (the target is shorter than the jobs already handed to
        # the threads), or a flood fills the line, it is refused, after a pause that costs no CPU.
        in_order = self._in_order_in_time(now) and self.expected_wait(now=now) <= self.max_wait_seconds
        if len(self._line) >= MAX_WAITING or (not in_order and self.expected_wait(0, now=now) > self.max_wait_seconds):
            await self._refuse_after_a_pause(current, loop)
        waiter = _Waiter(loop.create_future(), now)
        self._line.append(waiter)
        current.waiter = waiter.future
        # Refused when its wait reaches the target, less the wait that still follows a place.
        queued = (self.capacity - self.size) * self.job_seconds / self.size
        timer = loop.call_later(max(self.max_wait_seconds - queued, 0.0), self._expire, waiter.future)
        try:
            await waiter.future  # the place is handed over by _give_back: `pending` already counts it
        except HashingBusyError:
            metrics.HASHING_REFUSED.inc()
            raise
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self._give_back()  # handed over as this request was being cancelled
            raise
        finally:
            metrics.HASHING_WAIT.observe(time.perf_counter() - now)
            current.waiter = None
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._line.remove(waiter)

    async def _refuse_after_a_pause(self, current: _Place, loop: asyncio.AbstractEventLoop) -> NoReturn:
        # Half to all of the pause, at random: a flood's clients, refused together and resending
        # together, would otherwise come back in waves.
        pause: asyncio.Future[None] = loop.create_future()
        current.waiter = pause
        timer = loop.call_later(self.hold_seconds * random.uniform(0.5, 1.0), self._expire, pause)  # noqa: S311
        started = time.perf_counter()
        try:
            await pause  # only ever ends with HashingBusyError (or the client going away)
        except HashingBusyError:
            metrics.HASHING_REFUSED.inc()
            raise
        finally:
            metrics.HASHING_WAIT.observe(time.perf_counter() - started)
            current.waiter = None
            timer.cancel()
        raise HashingBusyError(self.retry_after())

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(HashingBusyError(self.retry_after()))

    def _give_back(self) -> None:
        """Hand the place to a request in line (the oldest, or when the line cannot be served in
        order within the target, the newest), or free it."""
        newest_first = bool(self._line) and not self._in_order_in_time(time.perf_counter())
        while self._line:
            waiter = self._line.pop() if newest_first else self._line.popleft()
            if not waiter.future.done():
                waiter.future.set_result(None)
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
        current.job = self._executor.submit(self._timed, next(self._job_ids), functools.partial(function, **kwargs))
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

    def _timed(self, job_id: int, job: Callable[[], T]) -> tuple[T, float]:
        started = self._started[job_id] = time.perf_counter()
        try:
            return job(), time.perf_counter() - started
        finally:
            del self._started[job_id]


def _dropped(current: _Place) -> bool:
    """Whether a CancelledError came from the client going away, rather than the task being cancelled."""
    task = asyncio.current_task()
    return current.gone and task is not None and task.cancelling() == 0
