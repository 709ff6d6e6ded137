"""Self-healing workers: every ``igat worker`` periodically re-queues the runs whose worker died.

A run's worker stamps ``run.heartbeat_at`` every ``IGAT_HEARTBEAT_SECONDS``. A worker killed
outright (SIGKILL, power loss, OOM) stops stamping, but its message stays unacknowledged in Redis
until the visibility timeout (48 h, because it must exceed the longest run). So each worker runs
:func:`sweep` every ``IGAT_STALE_CHECK_SECONDS``: runs with a heartbeat older than
``IGAT_STALE_AFTER`` are moved back to queued under a new task id and resume from their last
checkpoint on whichever worker is free. Several workers sweep the same store; each run is taken by
exactly one of them (a conditional UPDATE, ``runstate.take_for_requeue``).

Recovery bound (defaults): the last heartbeat is at most ``IGAT_STALE_AFTER`` (60 s) old before the
run counts as dead, and the next sweep comes within ``IGAT_STALE_CHECK_SECONDS`` (15 s): a crashed
run is re-queued at most 75 s after the crash, then starts at once on an idle worker.

The sweep runs on the worker's own timer (the main process's event loop with the prefork pool),
not in a thread: prefork forks a fresh pool process for every run, and forking while another thread
holds a lock (the database pool's, the broker client's) can leave the child deadlocked.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps

log = logging.getLogger("igat.tasks")


def sweep(app: Celery) -> list[int]:
    """One pass: re-queue this store's dead runs through ``app``'s broker; returns their ids. Never raises:
    a database or broker hiccup must not stop the worker, and the next pass tries again."""
    from tasks import api

    try:
        requeued = api.requeue_stale(app=app)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("stale-run check failed (retrying at the next one): %s", exc)
        return []
    if requeued:
        log.warning("re-queued runs whose worker died: %s", ", ".join(map(str, requeued)))
    return requeued


class StaleRunSweep(bootsteps.StartStopStep):
    """Worker bootstep: :func:`sweep` every ``IGAT_STALE_CHECK_SECONDS`` on the worker's timer."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        from tasks.jobs import JobSettings

        interval = JobSettings.from_env().stale_check_seconds
        self.tref = worker.timer.call_repeatedly(interval, sweep, (worker.app,), priority=10)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None


def install(app: Celery) -> None:
    """Make the workers of ``app`` sweep for dead runs."""
    app.steps["worker"].add(StaleRunSweep)
