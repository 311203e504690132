"""Background threads and their dependencies: keep going through an outage, back off, and log it once
(when it starts) and again when it ends."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

# Standard library only: the sandbox package (which imports nothing of Django) uses it too.

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0


class Outage:
    """One dependency of one background thread: is it failing, since when, and how long to wait.

    `failed(exc)` logs the first failure of an outage (one line: type and message) and returns the
    delay before the next try, doubling from `first_delay_s` up to `max_delay_s`; `recovered()`
    logs the end of an outage (how long it lasted, how many tries failed). So a dependency that is
    down for an hour costs two log lines, not one per try.
    """

    def __init__(
        self,
        dependency: str,
        *,
        logger: logging.Logger,
        first_delay_s: float = FIRST_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
    ) -> None:
        self.dependency = dependency
        self.logger = logger
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.failures = 0
        self.since: float | None = None
        self._lock = threading.Lock()

    @property
    def ongoing(self) -> bool:
        """True between a failure and the next success."""
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Record one failed try; the seconds to wait before the next one."""
        with self._lock:
            self.failures += 1
            first = self.since is None
            if first:
                self.since = time.monotonic()
            failures = self.failures
        if first:
            # One line, no traceback: a traceback formatted in a thread parses source (Python 3.11's
            # carets use `ast`), which has raced the main thread's own parsing in CPython 3.11.7.
            self.logger.warning(
                "%s failing (%s: %s); retrying with backoff, logged again when it recovers",
                self.dependency,
                type(exc).__name__,
                exc,
            )
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** min(failures - 1, 16)))

    def recovered(self) -> None:
        """Record a successful try; logs the end of an outage."""
        if self.since is None:
            return
        with self._lock:
            since, failures = self.since, self.failures
            self.since, self.failures = None, 0
        if since is not None:
            self.logger.warning(
                "%s recovered after %.1f s (%d failed tries)",
                self.dependency,
                time.monotonic() - since,
                failures,
            )


def loop_forever(
    step: Callable[[], object],
    *,
    outage: Outage,
    interval_s: float,
    stop: threading.Event | None = None,
) -> None:
    """Run `step` every `interval_s` until `stop` is set, surviving any exception it raises.

    A failing pass is recorded on `outage` (logged once per outage) and the loop waits its backoff
    instead of the interval; the first pass that works again logs the recovery.
    """
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - a background thread outlives every failure; logged once
            stop.wait(outage.failed(exc))
            continue
        outage.recovered()
        stop.wait(interval_s)
