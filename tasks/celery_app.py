"""The Celery application: settings for long GPU jobs, queues ``gpu`` and ``cpu``.

``make_celery`` builds a fresh app (tests build one per test: a used app caches its broker
connection pools); ``app`` is the module-level app that ``igat worker`` / ``celery -A
tasks.celery_app worker`` run. Environment knobs (seconds unless noted):

* ``IGAT_BROKER_URL`` / ``IGAT_RESULT_BACKEND``: Redis URLs (backend defaults to the broker).
* ``IGAT_VISIBILITY_TIMEOUT`` (default 172800 = 48 h): a task not acknowledged within this time is
  delivered again, so it must exceed the longest run. A crashed worker's run does not wait for it:
  the other workers' periodic stale-run check re-queues it (tasks/recovery.py).
* ``IGAT_UNACKED_RESTORE_INTERVAL`` / ``IGAT_UNACKED_RESTORE_THROTTLE``: kombu's sweep for such
  messages (defaults 10 and 10: a scan about every 100 s).
* ``IGAT_MAX_TASKS_PER_CHILD`` (default 1): a fresh pool process per run returns GPU memory.
* ``IGAT_REDIS_PREFIX``: a prefix for every Redis key and channel (several labs, or test
  sessions, sharing one Redis database).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

from tasks.broker import configured_url

DEFAULT_LOCAL_REDIS = "redis://127.0.0.1:6379/0"
QUEUES = ("gpu", "cpu")
TASK_ROUTES = {
    "igat.train": {"queue": "gpu"},
    "igat.finetune": {"queue": "gpu"},
    "igat.evaluate": {"queue": "gpu"},
    "igat.theory": {"queue": "cpu"},
    "igat.study": {"queue": "gpu"},  # it trains and evaluates its phases itself
}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def transport_options() -> dict[str, int | str]:
    opts: dict[str, int | str] = {
        "visibility_timeout": _env_int("IGAT_VISIBILITY_TIMEOUT", 48 * 3600),
        "unacked_restore_interval": _env_int("IGAT_UNACKED_RESTORE_INTERVAL", 10),
        "unacked_restore_throttle": _env_int("IGAT_UNACKED_RESTORE_THROTTLE", 10),
    }
    if os.environ.get("IGAT_REDIS_PREFIX"):
        opts["global_keyprefix"] = os.environ["IGAT_REDIS_PREFIX"]
    return opts


def make_celery(broker_url: str | None = None, backend_url: str | None = None, **overrides) -> Celery:
    """A configured app with the igat tasks registered. Broker: argument, ``$IGAT_BROKER_URL``, a
    published embedded broker, else the local Redis default. ``overrides`` update the settings."""
    broker = broker_url or configured_url() or DEFAULT_LOCAL_REDIS
    backend = backend_url or os.environ.get("IGAT_RESULT_BACKEND") or broker
    app = Celery("igat", broker=broker, backend=backend, set_as_current=False)
    opts = transport_options()
    app.conf.update(
        task_acks_late=True,  # ack after the run: a crash redelivers instead of losing the run
        task_reject_on_worker_lost=True,  # a killed pool process puts the message back
        worker_prefetch_multiplier=1,  # never hold a second long run hostage behind the first
        task_track_started=True,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        task_default_queue="cpu",
        task_routes=TASK_ROUTES,
        broker_transport_options=opts,
        result_backend_transport_options={k: v for k, v in opts.items() if k in ("visibility_timeout", "global_keyprefix")},
        broker_connection_retry_on_startup=True,
        worker_max_tasks_per_child=_env_int("IGAT_MAX_TASKS_PER_CHILD", 1),
        worker_concurrency=1,  # one run per GPU; start one worker per GPU with CUDA_VISIBLE_DEVICES
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.conf.update(overrides)
    from tasks.jobs import register_tasks

    register_tasks(app)
    return app


_DEFAULT_APP: Celery | None = None


def get_app() -> Celery:
    """The process-wide app (created on first use, after the broker URL is known)."""
    global _DEFAULT_APP
    if _DEFAULT_APP is None:
        _DEFAULT_APP = make_celery()
    return _DEFAULT_APP


def __getattr__(name: str):
    # ``celery -A tasks.celery_app`` looks up ``app``/``celery``: create it lazily so importing this
    # module (the dashboard, the CLI) does not fix the broker URL before the embedded one is known.
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(name)
