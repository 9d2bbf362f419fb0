"""One worker for all model work: requests queue, run one at a time, and never interleave.

A model's hooks, its eager-attention switch and torch's own thread pool are shared state; two forward passes at
once could see each other's hooks. So every job that touches the model goes through one single-thread executor:
jobs run in the order they arrive, one at a time, while the server's event loop keeps answering other requests
(static files, listings, the queue's status). A job that raises returns its error to its caller and the worker goes
on; a job whose caller goes away before it starts (the browser navigated, the client disconnected) is cancelled
and never runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class WorkerStats:
    """Counts since the server started (``/api/status`` shows them)."""

    submitted: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    busy_seconds: float = 0.0
    running: str | None = None
    """The job running now (its name), or None when idle."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "submitted": self.submitted,
                "done": self.done,
                "failed": self.failed,
                "cancelled": self.cancelled,
                "busy_seconds": round(self.busy_seconds, 3),
                "queued": self.submitted - self.done - self.failed - self.cancelled - (self.running is not None),
                "running": self.running,
            }


class Worker:
    """A queue of jobs run one at a time on one thread (see the module docstring)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self.stats = WorkerStats()

    async def run(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """Queue ``fn(*args)``, wait for it, return its result or raise its error (cancelled if the caller leaves)."""
        with self.stats.lock:
            self.stats.submitted += 1
        if self._pool is None:  # started on first use (and again after ``close``, for an app served anew)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mechscope-model")
        future = self._pool.submit(self._job, name, fn, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancel():  # still queued: it will never run
                with self.stats.lock:
                    self.stats.cancelled += 1
            raise

    def _job(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        with self.stats.lock:
            self.stats.running = name
        t0 = time.perf_counter()
        try:
            out = fn(*args)
        except BaseException:
            with self.stats.lock:
                self.stats.failed += 1
            raise
        else:
            with self.stats.lock:
                self.stats.done += 1
            return out
        finally:
            with self.stats.lock:
                self.stats.running = None
                self.stats.busy_seconds += time.perf_counter() - t0

    def close(self) -> None:
        """Cancel the queued jobs and let the running one finish; a later ``run`` starts a fresh thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
