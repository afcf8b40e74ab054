"""Executors run jobs by id: in threads of this process, or in local worker processes.

One interface (``Executor``); the Ray executor of a later issue implements the same one.
``submit`` returns a future of the job's final ``Outcome``; retryable failures are retried
with exponential backoff inside the worker until the job reaches a terminal state.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Protocol

from irmsia.pipeline.job import TERMINAL
from irmsia.pipeline.runner import JobRunner, Outcome

BACKOFF_SECONDS = (0.5, 2.0, 8.0)


class Executor(Protocol):
    def submit(self, job_id: str) -> Future[Outcome]: ...

    def close(self) -> None: ...


def run_to_completion(runner: JobRunner, job_id: str, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Run a job, retrying retryable failures, until it succeeds or fails for good."""
    attempt = 0
    while True:
        outcome = runner.run(job_id)
        if outcome.state in TERMINAL:
            return outcome
        sleep(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
        attempt += 1


class InlineExecutor:
    """Runs each job in the calling thread (tests, single-file CLI runs)."""

    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner

    def submit(self, job_id: str) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        future.set_result(run_to_completion(self._runner, job_id))
        return future

    def close(self) -> None:
        """Nothing to release."""


class ThreadExecutor:
    """Runs jobs on a pool of threads in this process (the server's default)."""

    def __init__(self, runner: JobRunner, workers: int) -> None:
        self._runner = runner
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="irmsia-job")

    def submit(self, job_id: str) -> Future[Outcome]:
        return self._pool.submit(run_to_completion, self._runner, job_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


# --- worker processes -------------------------------------------------------------------
_WORKER_RUNNER: JobRunner | None = None


def _init_worker(settings_env: dict[str, str]) -> None:
    """Build this worker process's own object graph from the settings (no shared state)."""
    global _WORKER_RUNNER
    from irmsia.bootstrap import build_container
    from irmsia.config import load_settings

    _WORKER_RUNNER = build_container(load_settings(settings_env), upgrade=False, executor="inline").runner


def _ready() -> None:
    """A no-op task: submitting one per worker makes the pool start them all now."""


def _run_in_worker(job_id: str) -> Outcome:
    assert _WORKER_RUNNER is not None, "worker not initialised"
    return run_to_completion(_WORKER_RUNNER, job_id)


class ProcessExecutor:
    """Runs jobs in local worker processes; each builds its own container from the settings."""

    def __init__(self, settings_env: dict[str, str], workers: int) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited sockets or threads
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(settings_env,)
        )
        # Warm up in the background: a worker starts (imports, builds its container) when the
        # pool first needs it, which would otherwise delay the first jobs by seconds.
        for _ in range(workers):
            self._pool.submit(_ready)

    def submit(self, job_id: str) -> Future[Outcome]:
        return self._pool.submit(_run_in_worker, job_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
