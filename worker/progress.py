"""Progress and lease of a claimed run, written to its database row.

:class:`RunProgress` is the ``progress`` callback given to ``genscope.analyze``: it writes at
most once per ``progress_interval_seconds`` (and always the final 1.0), renewing the lease with
each write; an update that arrives too soon is kept pending, not dropped.
:meth:`RunProgress.heartbeat` runs a thread that writes the pending update shortly after and
renews the lease while a long measure reports nothing. Every write is guarded by the claim
(``status='running'`` and this task id, :func:`backend.run_state.renew`): if recovery gave the
run to another worker, the next write raises :class:`ClaimLost`, which derives from
``BaseException`` so that the engine's per-measure error handling cannot swallow it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from backend import run_state
from backend.core.db import get_engine, utcnow

log = logging.getLogger("genscope.worker")


class ClaimLost(BaseException):
    """The run is no longer this task's (its lease expired and it was re-queued)."""


class RunProgress:
    """Throttled progress writer for one claimed run."""

    def __init__(
        self,
        database_url: str,
        run_id: str,
        task_id: str,
        *,
        interval: float,
        lease_seconds: float,
    ) -> None:
        self.engine = get_engine(database_url)
        self.run_id = run_id
        self.task_id = task_id
        self.interval = interval
        self.lease = timedelta(seconds=lease_seconds)
        self._last_write = -float("inf")
        self._last_fraction = 0.0
        self._last_renew = time.monotonic()
        self._pending: tuple[float, str] | None = None
        self._lock = threading.Lock()  # one write at a time
        self._state = threading.Lock()  # guards the throttle state
        self.lost = False

    def _write(self, **values: object) -> None:
        self._last_renew = time.monotonic()
        with self._lock, self.engine.begin() as conn:
            held = run_state.renew(
                conn,
                run_id=self.run_id,
                task_id=self.task_id,
                lease_until=utcnow() + self.lease,
                **values,
            )
        if not held:
            self.lost = True
            raise ClaimLost(self.run_id)

    def __call__(self, fraction: float, message: str) -> None:
        """The engine's progress callback: ``fraction`` in [0, 1] and a short message.

        A call inside the throttle interval is kept as pending, not dropped: the heartbeat
        thread writes it a moment later, so a long measure that follows a quick one still shows.
        """
        fraction = min(max(float(fraction), 0.0), 1.0)
        with self._state:
            fraction = max(fraction, self._last_fraction)  # never show progress going back
            self._last_fraction = fraction
            due = time.monotonic() - self._last_write >= self.interval or fraction >= 1.0
            self._pending = None if due else (fraction, message)
        if due:
            self._write_progress(fraction, message)

    def _write_progress(self, fraction: float, message: str) -> None:
        self._last_write = time.monotonic()
        self._write(progress=fraction, message=(message or "")[:500])

    def flush(self) -> None:
        """Write a pending progress update, or just renew the lease."""
        with self._state:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._write_progress(*pending)
        elif time.monotonic() - self._last_renew >= self.lease.total_seconds() / 3.0:
            self.renew()

    def renew(self) -> None:
        """Extend the lease without touching the progress."""
        self._write()

    @contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Flush pending progress and renew the lease from a thread while the body runs."""
        stop = threading.Event()
        period = max(min(self.lease.total_seconds() / 3.0, max(self.interval, 0.25)), 0.05)

        def beat() -> None:
            while not stop.wait(period):
                try:
                    self.flush()
                except ClaimLost:
                    log.warning("run %s was taken from this worker (lease expired)", self.run_id)
                    return
                except Exception:
                    log.exception("lease renewal of run %s failed; retrying", self.run_id)

        thread = threading.Thread(target=beat, name=f"lease-{self.run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
