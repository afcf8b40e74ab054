"""Executors run jobs by id: inline, on threads of this process, or in local worker processes.

One interface (``Executor``); the Ray executor of a later issue implements the same one.
``submit`` returns a future of the job's final ``Outcome``; retryable failures are retried
with exponential backoff until the job reaches a terminal state.

The thread and process executors batch (group commit): tickets submitted while every
worker is busy wait in a queue, and a worker that becomes free takes all of them (up to
``MAX_BATCH`` jobs or ``MAX_BATCH_BYTES`` of input) into one ``JobRunner.run_batch``, whose
commit is one transaction. Under light load each job runs alone, at once; under heavy load
the per-job cost of transactions and log appends shrinks with the batch.
"""

from __future__ import annotations

import functools
import multiprocessing
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from irmsia.errors import IrmsiaError
from irmsia.pipeline.job import TERMINAL
from irmsia.pipeline.runner import JobRunner, Outcome, Ticket

BACKOFF_SECONDS = (0.5, 2.0, 8.0)
MAX_BATCH = 32  # jobs committed together at most
MAX_BATCH_BYTES = 64 << 20  # input bytes held by one batch at most (a single larger job runs alone)

Answers = list[Outcome | IrmsiaError]


class Executor(Protocol):
    def submit(self, job_id: str, payload: bytes | None = None, size: int = 0) -> Future[Outcome]:
        """Run the job (from ``payload`` when given, else from its spool) to a terminal state."""
        ...

    def close(self) -> None: ...


def run_to_completion(
    runner: JobRunner, ticket: Ticket | str, sleep: Callable[[float], None] = time.sleep
) -> Outcome:
    """Run a job, retrying retryable failures, until it succeeds or fails for good."""
    ticket = Ticket(ticket) if isinstance(ticket, str) else ticket
    attempt = 0
    while True:
        outcome = runner.run(ticket.job_id, ticket.payload)
        if outcome.state in TERMINAL:
            return outcome
        sleep(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
        attempt += 1


class InlineExecutor:
    """Runs each job in the calling thread (tests, single-file CLI runs): no batching."""

    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner

    def submit(self, job_id: str, payload: bytes | None = None, size: int = 0) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        try:
            future.set_result(run_to_completion(self._runner, Ticket(job_id, payload, size)))
        except IrmsiaError as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class _Waiting:
    ticket: Ticket
    future: Future[Outcome]
    retries: int = 0


class _BatchingExecutor:
    """The queue, batching, retries and futures shared by the thread and process executors.

    A dispatcher thread hands batches to ``_launch`` while fewer than ``workers`` batches
    are running; ``_launch`` must call ``done(answers)`` (from any thread) when a batch ends.
    """

    def __init__(self, workers: int) -> None:
        self._workers = max(1, workers)
        self._queue: deque[_Waiting] = deque()
        self._lock = threading.Condition()
        self._running = 0
        self._timers: set[threading.Timer] = set()
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch, name="irmsia-jobs", daemon=True)
        self._dispatcher.start()

    def submit(self, job_id: str, payload: bytes | None = None, size: int = 0) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        self._enqueue(_Waiting(Ticket(job_id, payload, size or len(payload or b"")), future))
        return future

    def close(self) -> None:
        """Finish every queued and running job (retries included), then stop."""
        with self._lock:
            while self._queue or self._running or self._timers:
                self._lock.wait(0.1)
            self._closed = True
            self._lock.notify_all()
        self._dispatcher.join()
        self._shutdown()

    # --- to implement -------------------------------------------------------------------
    def _launch(self, tickets: Sequence[Ticket], done: Callable[[Answers | BaseException], None]) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    # --- internals ---------------------------------------------------------------------
    def _enqueue(self, waiting: _Waiting) -> None:
        with self._lock:
            if self._closed:
                waiting.future.set_exception(RuntimeError("the executor is closed"))
                return
            self._queue.append(waiting)
            self._lock.notify_all()

    def _take(self) -> list[_Waiting]:
        """The next batch: the oldest waiting job, then more while the limits allow."""
        batch = [self._queue.popleft()]
        size = batch[0].ticket.size
        while self._queue and len(batch) < MAX_BATCH and size + self._queue[0].ticket.size <= MAX_BATCH_BYTES:
            size += self._queue[0].ticket.size
            batch.append(self._queue.popleft())
        return batch

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (not self._queue or self._running >= self._workers):
                    self._lock.wait()
                if self._closed:
                    return
                batch = self._take()
                self._running += 1
            self._launch([w.ticket for w in batch], functools.partial(self._done, batch))

    def _done(self, batch: list[_Waiting], answers: Answers | BaseException) -> None:
        for index, waiting in enumerate(batch):
            answer = answers if isinstance(answers, BaseException) else answers[index]
            if isinstance(answer, BaseException):
                waiting.future.set_exception(answer)
            elif answer.state in TERMINAL:
                waiting.future.set_result(answer)
            else:
                self._retry_later(waiting)
        with self._lock:
            self._running -= 1
            self._lock.notify_all()

    def _retry_later(self, waiting: _Waiting) -> None:
        delay = BACKOFF_SECONDS[min(waiting.retries, len(BACKOFF_SECONDS) - 1)]
        waiting.retries += 1

        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
                self._queue.append(waiting)
                self._lock.notify_all()

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()


class ThreadExecutor(_BatchingExecutor):
    """Runs batches of jobs on a pool of threads in this process (the server's default)."""

    def __init__(self, runner: JobRunner, workers: int) -> None:
        self._runner = runner
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="irmsia-job")
        super().__init__(workers)

    def _launch(self, tickets: Sequence[Ticket], done: Callable[[Answers | BaseException], None]) -> None:
        def work() -> None:
            try:
                answers: Answers | BaseException = self._runner.run_batch(tickets)
            except BaseException as exc:  # noqa: BLE001  (handed to the waiting futures)
                answers = exc
            done(answers)

        self._pool.submit(work)

    def _shutdown(self) -> None:
        self._pool.shutdown(wait=True)


# --- worker processes -------------------------------------------------------------------
_WORKER_RUNNER: JobRunner | None = None


def _init_worker(settings_env: dict[str, str]) -> None:
    """Build this worker process's own object graph from the settings (no shared state).

    Ctrl-C in a terminal interrupts the whole process group: the worker ignores it and the
    server, which shuts the pool down after its running jobs, decides when to stop.
    """
    global _WORKER_RUNNER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from irmsia.bootstrap import build_container
    from irmsia.config import load_settings

    _WORKER_RUNNER = build_container(load_settings(settings_env), upgrade=False, executor="inline").runner


def _ready() -> None:
    """A no-op task: submitting one per worker makes the pool start them all now."""


def _run_batch_in_worker(tickets: Sequence[Ticket]) -> Answers:
    assert _WORKER_RUNNER is not None, "worker not initialised"
    return _WORKER_RUNNER.run_batch(tickets)


class ProcessExecutor(_BatchingExecutor):
    """Runs batches of jobs in local worker processes; each builds its own container from the
    settings. In-memory inputs travel to the worker with the batch."""

    def __init__(self, settings_env: dict[str, str], workers: int) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited sockets or threads
        self._pool = ProcessPoolExecutor(
            max_workers=max(1, workers),
            mp_context=context,
            initializer=_init_worker,
            initargs=(settings_env,),
        )
        # Warm up in the background: a worker starts (imports, builds its container) when the
        # pool first needs it, which would otherwise delay the first jobs by seconds.
        self._warm = [self._pool.submit(_ready) for _ in range(max(1, workers))]
        super().__init__(workers)

    def wait_ready(self) -> None:
        """Block until every worker process has started (benchmarks call this before timing)."""
        for future in self._warm:
            future.result()

    def _launch(self, tickets: Sequence[Ticket], done: Callable[[Answers | BaseException], None]) -> None:
        future = self._pool.submit(_run_batch_in_worker, list(tickets))

        def finished(f: Future[Answers]) -> None:
            error = f.exception()
            done(error if error is not None else f.result())

        future.add_done_callback(finished)

    def _shutdown(self) -> None:
        self._pool.shutdown(wait=True)
