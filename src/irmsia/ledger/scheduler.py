"""Run the ledger's periodic jobs (sign checkpoints, anchor them, verify) on background threads.

Framework-free: the app's lifespan calls :meth:`Scheduler.start` and :meth:`Scheduler.stop`;
each job is a plain callable injected with its interval, so nothing here knows about use
cases, sessions or HTTP. A job's failure is logged (error class only, never its message's
arguments) and the job runs again at its next interval; one slow job never delays another.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from irmsia.errors import IrmsiaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    """``run`` every ``interval_seconds`` (first run one interval after start); 0 disables it."""

    name: str
    interval_seconds: float
    run: Callable[[], object]


class Scheduler:
    """One daemon thread per enabled job; :meth:`stop` wakes and joins them."""

    def __init__(self, jobs: Sequence[PeriodicJob]) -> None:
        self.jobs = [job for job in jobs if job.interval_seconds > 0]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def start(self) -> None:
        """Start the jobs' threads (no-op when already running)."""
        if self._threads:
            return
        self._stop.clear()
        for job in self.jobs:
            thread = threading.Thread(target=self._loop, args=(job,), name=f"irmsia-{job.name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every job to stop and wait up to ``timeout`` seconds for each running one to finish."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _loop(self, job: PeriodicJob) -> None:
        while not self._stop.wait(job.interval_seconds):
            try:
                job.run()
            except IrmsiaError as exc:
                log.warning("ledger job %s failed: %s", job.name, exc.code)
            except Exception as exc:  # noqa: BLE001 - worker loop edge: keep the job alive, log the type only
                log.error("ledger job %s failed unexpectedly: %s", job.name, type(exc).__name__)
