"""One worker for all model work: requests queue, run one at a time, never interleave, and can be cancelled.

A model's hooks, its eager-attention switch and torch's own thread pool are shared state; two forward passes at
once could see each other's hooks. So every job that touches the model goes through one single-thread executor:
jobs run in the order they arrive, one at a time, while the server's event loop keeps answering other requests
(static files, listings, the queue's status). A job that raises returns its error to its caller and the worker goes
on.

Cancellation (``Worker.cancel``, or the caller going away): a queued job is dropped and never runs; a running job
is stopped cooperatively at its next *checkpoint*: the start of a forward pass through any block of the job's
model (a forward pre-hook on the root module, its children and every block of its ``ModuleList``s, installed for
the job's run only and removed in ``finally``; it reads one flag and changes nothing, so a run is bitwise the
same). The job then raises :class:`JobCancelled`, which unwinds the library's own ``finally`` blocks (every
intervention's hooks are removed), its caller gets that error, and the worker takes the next job. A job that
makes no forward pass after the cancel finishes, and its result is thrown away: its caller still gets the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

T = TypeVar("T")


class JobCancelled(RuntimeError):
    """A job cancelled before it finished (its caller gets this error, HTTP 409)."""


@dataclass
class Job:
    """One queued or running job."""

    id: int
    name: str
    modules: tuple[nn.Module, ...]
    """Modules whose forward passes are the job's checkpoints."""
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    running: bool = False
    future: Future[Any] | None = field(default=None, repr=False)

    def checkpoint(self) -> None:
        """Raise :class:`JobCancelled` when the job has been cancelled."""
        if self.cancelled.is_set():
            raise JobCancelled(f"job {self.id} ({self.name}) was cancelled")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": "running" if self.running else "queued",
                "cancelling": self.cancelled.is_set()}  # fmt: skip


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


def checkpoint_modules(root: nn.Module) -> tuple[nn.Module, ...]:
    """Where a running job can stop: the root, its children, and every block of a ``ModuleList`` under it."""
    blocks = [m for lst in root.modules() if isinstance(lst, nn.ModuleList) for m in lst]
    return tuple(dict.fromkeys([root, *root.children(), *blocks]))


class Worker:
    """A queue of jobs run one at a time on one thread (see the module docstring)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._ids = itertools.count(1)
        self._jobs: dict[int, Job] = {}
        self.stats = WorkerStats()

    def jobs(self) -> list[dict[str, Any]]:
        """The queued and running jobs, oldest first."""
        with self.stats.lock:
            return [j.to_dict() for j in self._jobs.values()]

    async def run(self, name: str, fn: Callable[..., T], *args: Any, modules: tuple[nn.Module, ...] = ()) -> T:
        """Queue ``fn(*args)``, wait for it, return its result or raise its error.

        ``modules``: where the job may be stopped once running (``checkpoint_modules``). When the caller goes
        away (its task is cancelled) the job is cancelled too.
        """
        job = Job(next(self._ids), name, modules)
        with self.stats.lock:
            self.stats.submitted += 1
            self._jobs[job.id] = job
        if self._pool is None:  # started on first use (and again after ``close``, for an app served anew)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mechscope-model")
        job.future = self._pool.submit(self._job, job, fn, *args)
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            if job.cancelled.is_set():  # cancelled by ``cancel`` while queued: an error for the caller
                raise JobCancelled(f"job {job.id} ({name}) was cancelled before it started") from None
            with contextlib.suppress(KeyError):  # (unless it has just finished)
                self.cancel(job.id)  # the caller left: drop the job, or stop it at its next checkpoint
            raise

    def cancel(self, job_id: int) -> str:
        """Cancel a job: ``'queued'`` (dropped, never runs) or ``'running'`` (stops at its next checkpoint)."""
        with self.stats.lock:
            job = self._jobs.get(job_id)
            if job is None:
                running = [j.id for j in self._jobs.values()]
                raise KeyError(f"no job {job_id} is queued or running (now: {running or 'none'}; see /api/status)")
            job.cancelled.set()
            assert job.future is not None
            if job.future.cancel():  # still queued
                del self._jobs[job.id]
                self.stats.cancelled += 1
                return "queued"
            return "running"

    def _job(self, job: Job, fn: Callable[..., T], *args: Any) -> T:
        with self.stats.lock:
            self.stats.running = job.name
            job.running = True
        t0 = time.perf_counter()
        outcome = "failed"
        try:
            job.checkpoint()
            with _checkpoints(job):
                out = fn(*args)
            job.checkpoint()  # cancelled after its last forward pass: the result is dropped
            outcome = "done"
            return out
        except JobCancelled:
            outcome = "cancelled"
            raise
        finally:
            with self.stats.lock:
                setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
                self.stats.running = None
                self.stats.busy_seconds += time.perf_counter() - t0
                self._jobs.pop(job.id, None)

    def close(self) -> None:
        """Cancel the queued jobs, stop the running one at its next checkpoint; a later ``run`` starts afresh."""
        for job_id in [j["id"] for j in self.jobs()]:
            with contextlib.suppress(KeyError):  # finished meanwhile
                self.cancel(job_id)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


@contextmanager
def _checkpoints(job: Job) -> Iterator[None]:
    """Forward pre-hooks that stop ``job`` once cancelled (they return None: activations are untouched)."""

    def check(module: nn.Module, args: Any) -> None:
        job.checkpoint()

    handles = [m.register_forward_pre_hook(check) for m in job.modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
