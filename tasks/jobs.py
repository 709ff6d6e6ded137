"""The Celery tasks: train, fine-tune (iGAT), evaluate, theory diagnostics and studies, one run each.

Every task takes a run id and is idempotent by it: it claims the run with a conditional UPDATE
(a duplicate or stale delivery does nothing), trains into ``$IGAT_HOME/runs/<run_id>`` with a
checkpoint per epoch, resumes from ``last.pt`` when the message is redelivered after a crash, and
ends the run as succeeded / failed (message stored) / cancelled. Nothing a run does - a bad config,
a missing checkpoint, NaNs - escapes as an exception that could take the worker down.

Knobs (environment): IGAT_HEARTBEAT_SECONDS (10), IGAT_STALE_AFTER (60: a running run whose
heartbeat is older is considered dead and may be taken over), IGAT_STALE_CHECK_SECONDS (15: how often
every worker looks for such runs, see tasks/recovery.py), IGAT_MAX_ATTEMPTS (3 worker losses),
IGAT_METRIC_FLUSH_ROWS (500), IGAT_METRIC_FLUSH_SECONDS (2), IGAT_CANCEL_POLL_SECONDS (0.5).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from tasks import runstate
from tasks.runstate import Claim
from tasks.store import EvalResult, Run, RunStatus, get_engine, igat_home, utcnow

log = logging.getLogger("igat.tasks")
RUN = Run.__table__
EVAL = EvalResult.__table__
TRAIN_SHARE = 0.9  # of the progress bar; the final evaluation is the rest
# Attacks each member gets in the final evaluation, as `igat eval` (the ensemble gets every configured attack):
# AutoAttack or SignHunter on every member would multiply the paper protocol's cost by the number of members.
MEMBER_ATTACKS = ("natural", "pgd")


def _env_float(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class JobSettings:
    heartbeat_seconds: float = 10.0
    # A crashed run is re-queued at most stale_after + stale_check_seconds after its last heartbeat
    # (75 s): within the 2-minute recovery goal, yet six missed heartbeats before a live run counts as dead.
    stale_after: float = 60.0
    stale_check_seconds: float = 15.0
    max_attempts: int = 3
    flush_rows: int = 500
    flush_seconds: float = 2.0
    cancel_poll_seconds: float = 0.5

    @classmethod
    def from_env(cls) -> JobSettings:
        hb = _env_float("IGAT_HEARTBEAT_SECONDS", cls.heartbeat_seconds, 0.05)
        stale = _env_float("IGAT_STALE_AFTER", max(cls.stale_after, 3 * hb), 0.1)
        if stale < 2 * hb:
            raise ValueError(f"IGAT_STALE_AFTER ({stale}) must be at least twice IGAT_HEARTBEAT_SECONDS ({hb})")
        return cls(
            heartbeat_seconds=hb,
            stale_after=stale,
            stale_check_seconds=_env_float("IGAT_STALE_CHECK_SECONDS", cls.stale_check_seconds, 0.1),
            max_attempts=int(_env_float("IGAT_MAX_ATTEMPTS", cls.max_attempts, 1)),
            flush_rows=int(_env_float("IGAT_METRIC_FLUSH_ROWS", cls.flush_rows, 1)),
            flush_seconds=_env_float("IGAT_METRIC_FLUSH_SECONDS", cls.flush_seconds, 0.0),
            cancel_poll_seconds=_env_float("IGAT_CANCEL_POLL_SECONDS", cls.cancel_poll_seconds, 0.0),
        )


def run_dir(run_id: int) -> Path:
    return igat_home() / "runs" / str(run_id)


class JobError(RuntimeError):
    """A run-level problem with a message meant for the user (stored as the run's error)."""


def _error_text(exc: BaseException) -> str:
    from igat.config import ConfigError

    if isinstance(exc, ConfigError):
        what = "params" if exc.errors and all(f.startswith("params.") for f, _ in exc.errors) else "config"
        return f"invalid {what}: {exc}"
    if isinstance(exc, JobError):
        return str(exc)
    from igat.training.checkpoint import CheckpointError

    if isinstance(exc, CheckpointError):  # the user's file was refused: the message says why, no traceback
        return str(exc)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    return f"{type(exc).__name__}: {exc}\n\n{tb}"


def _load_config(run: Any):
    import json

    from igat.config import ConfigError, ExperimentConfig

    try:
        data = json.loads(run.config_json)
    except (TypeError, ValueError) as exc:
        raise ConfigError([("config", f"not valid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([("config", "the top level must be a mapping of fields")])
    return ExperimentConfig.from_dict(data)


def _get_run(engine: Engine, run_id: int):
    with engine.connect() as conn:
        return conn.execute(select(RUN).where(RUN.c.id == run_id)).first()


class _Context:
    """What one claimed attempt needs: engine, run row, attempt number, settings."""

    def __init__(self, engine: Engine, run_id: int, attempt: int, settings: JobSettings) -> None:
        self.engine, self.run_id, self.attempt, self.settings = engine, run_id, attempt, settings
        self._last_cancel_poll = 0.0

    @property
    def run(self):
        return _get_run(self.engine, self.run_id)

    def cancel_requested(self) -> bool:
        """For the evaluation phase (training polls through DBCallback.should_stop)."""
        now = time.monotonic()
        if now - self._last_cancel_poll < self.settings.cancel_poll_seconds:
            return False
        self._last_cancel_poll = now
        row = self.run
        return row is None or bool(row.cancel_requested) or row.attempts != self.attempt


def _checkpoint_of(engine: Engine, run: Any, params: dict[str, Any]) -> str:
    """The checkpoint an eval/theory/fine-tune run works on: params.checkpoint or the parent's."""
    path = params.get("checkpoint")
    if not path and run.parent_run_id is not None:
        parent = _get_run(engine, run.parent_run_id)
        if parent is None:
            raise JobError(f"parent run {run.parent_run_id} does not exist")
        path = parent.checkpoint_path
        if not path:
            raise JobError(f"parent run {run.parent_run_id} has no checkpoint yet (status {parent.status})")
    if not path:
        raise JobError("no checkpoint to work on: give params.checkpoint or a parent run")
    if not Path(path).exists():
        raise JobError(f"checkpoint not found: {path}")
    return str(path)


# --- the phases ----------------------------------------------------------------------------------
def _stored_results(ctx: _Context, planned: set[str]):
    """The run's stored results this evaluation plans (by eval_key), as EvalRows; other rows of the run (another
    checkpoint or settings, or stored before rows had keys) are deleted first, so the run ends with exactly
    the planned results."""
    import json

    from igat.evaluation import EvalRow

    with ctx.engine.begin() as conn:
        rows = conn.execute(select(EVAL).where(EVAL.c.run_id == ctx.run_id)).all()
        stale = [r.id for r in rows if r.eval_key not in planned]
        if stale:
            conn.execute(delete(EVAL).where(EVAL.c.id.in_(stale)))
    return {r.eval_key: EvalRow(r.target, r.combiner, r.attack, r.accuracy, r.num_examples,
                                json.loads(r.extra_json or "{}"), ci_low=r.ci_low, ci_high=r.ci_high,
                                eval_key=r.eval_key)
            for r in rows if r.eval_key in planned}


def _insert_result(ctx: _Context, row) -> None:
    """Store one result the moment it is computed. A copy of the run that already stored this key (a redelivered
    message racing a live attempt) wins; the unique (run_id, eval_key) index turns ours into a no-op."""
    import json

    from sqlalchemy.exc import IntegrityError

    payload = {"run_id": ctx.run_id, "target": row.target, "combiner": row.combiner, "attack": row.attack,
               "accuracy": float(row.accuracy), "num_examples": int(row.num_examples),
               "ci_low": row.ci_low, "ci_high": row.ci_high, "eval_key": row.eval_key,
               "extra_json": json.dumps(row.extra, default=runstate._json_default), "created_at": utcnow()}
    try:
        with ctx.engine.begin() as conn:
            conn.execute(insert(EVAL), [payload])
    except IntegrityError:
        log.info("run %s: result %s was already stored", ctx.run_id, row.eval_key)


def _evaluate_into_store(ctx: _Context, ensemble, config, dataset, device, progress_from: float,
                         checkpoint: str | Path) -> int:
    """Run ``config.eval`` on the ensemble (saved as ``checkpoint``), storing each result as it is computed.

    Resumable: results already stored for this run under the same key (same checkpoint content, data,
    settings and row) are kept and not computed again, so a retried, cancelled-then-retried or
    crash-recovered evaluation only computes what is missing. The run's phase reads "evaluating: PGD on
    ensemble/average, 2 of 5" while it runs. Returns the number of results."""
    from igat.evaluation import checkpoint_digest, evaluate_ensemble, evaluation_settings, phase_text, plan_rows
    from igat.protocols import protocol_of
    from igat.training import TrainingCancelled
    from tasks.progress import SCOPE_RUN, EvalClock, write_eta

    ev = config.eval
    if not ev.attacks:
        return 0
    x, y = dataset.test_tensors(ev.num_examples)
    settings = evaluation_settings(checkpoint_digest(checkpoint), config, dataset.source, len(x), config.seed,
                                   ev.batch_size, device)
    plan = plan_rows(list(ev.attacks), ev.combiners, ensemble.num_members, len(x), ev.per_member, MEMBER_ATTACKS,
                     settings)
    done = _stored_results(ctx, {p.eval_key for p in plan})
    total, stored = len(plan), [len(done)]
    protocol = protocol_of(config)
    costs, per_pass = eval_costs(plan, config, torch_device_type(device))
    clock = EvalClock(costs, set(done), per_pass)
    current: dict[str, Any] = {"text": "", "examples": 0, "seen": 0, "written": 0.0}

    def report(force: bool = False) -> None:
        """Phase, cost-weighted progress and time left; at most every flush_seconds inside a row."""
        if not force and time.monotonic() - current["written"] < ctx.settings.flush_seconds:
            return
        current["written"] = time.monotonic()
        seen = f" ({current['seen']:,} of {current['examples']:,} examples)" if current["seen"] else ""
        runstate.set_fields(ctx.engine, ctx.run_id, ctx.attempt, heartbeat_at=utcnow(), phase=current["text"] + seen,
                            progress=progress_from + (1.0 - progress_from) * clock.fraction())
        write_eta(ctx.engine, ctx.run_id, clock.seconds_left(), SCOPE_RUN)

    def on_start(planned, index: int, count: int) -> None:
        clock.start(planned.eval_key)
        current.update(text=phase_text(planned, index, count), examples=planned.num_examples, seen=0)
        report(force=True)

    def on_batch(n: int) -> None:
        current["seen"] += n
        clock.batch(n / max(current["examples"], 1))
        report()

    def progress(row) -> None:
        row.extra.setdefault("protocol", protocol)
        row.extra.setdefault("data_source", dataset.source)
        _insert_result(ctx, row)
        stored[0] += 1
        clock.finish(row.eval_key)
        report(force=True)
        if ctx.cancel_requested():
            raise TrainingCancelled(f"cancelled during evaluation after {stored[0]} of {total} results "
                                    "(they are kept; a retry computes only the rest)")

    rows = evaluate_ensemble(ensemble, x, y, combiners=ev.combiners, attacks=ev.attacks, batch_size=ev.batch_size,
                             per_member=ev.per_member, seed=config.seed, device=device, progress=progress,
                             engine=config.model.engine, settings=settings, done=done, on_start=on_start,
                             on_batch=on_batch, member_attacks=MEMBER_ATTACKS)
    runstate.set_fields(ctx.engine, ctx.run_id, ctx.attempt, phase=None)
    return len(rows)


def torch_device_type(device: Any) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]


def eval_costs(plan: list[Any], config: Any, device_type: str) -> tuple[dict[str, float], float | None]:
    """Member passes of each planned row (igat.protocols' cost model) and the seconds per pass measured for the
    device (None where there is no measured figure: the clock then waits for its own first batch)."""
    from igat.protocols import SECONDS_PER_MEMBER_PASS, estimate_rows, size_scale

    costs = {p.eval_key: estimate_rows([p], config, "cpu").member_passes for p in plan}
    per_pass = SECONDS_PER_MEMBER_PASS.get(device_type)
    return costs, None if per_pass is None else per_pass * size_scale(config)


def eval_estimate(config: Any, device_type: str) -> float | None:
    """The final evaluation's estimated seconds on the device (None: no attacks, or no measured figure there)."""
    from igat.protocols import estimate_seconds

    if not config.eval.attacks:
        return None
    return estimate_seconds(config, device_type, MEMBER_ATTACKS).seconds


def run_key(run: Any) -> str:
    """The identity a run's checkpoints are bound to: its id and creation time, so a run of a recreated
    store that reuses an id never resumes the checkpoint of the old store's run with that id."""
    created = run.created_at.strftime("%Y%m%dT%H%M%S%f") if run.created_at else "unknown"
    return f"run-{run.id}@{created}"


def _bound_trainer(trainer_cls, config, cb, out: Path, key: str):
    """A Trainer that resumes only this run's own checkpoint. A folder holding another run's checkpoint
    (left by a deleted or recreated store) is moved aside, kept for the user, and the run starts fresh."""
    from igat.training.checkpoint import CheckpointMismatchError

    try:
        return trainer_cls(config, [cb], output_dir=out, resume=True, run_key=key)
    except CheckpointMismatchError as exc:
        aside = out.with_name(f"{out.name}.foreign-{utcnow().strftime('%Y%m%dT%H%M%S')}")
        out.rename(aside)
        log.warning("%s; moved that folder to %s and starting this run fresh", exc, aside)
        return trainer_cls(config, [cb], output_dir=out, resume=True, run_key=key)


def _train(ctx: _Context, finetune: bool) -> dict[str, Any]:
    from igat.training import Trainer
    from tasks.callbacks import DBCallback, truncate_after

    run = ctx.run
    config = _load_config(run)
    if finetune:
        if not config.igat.enabled:
            raise JobError("a fine-tune run needs igat.enabled: true in its config")
        if not config.train.init_checkpoint:
            config.train.init_checkpoint = _checkpoint_of(ctx.engine, run, run_params(run))
            runstate.set_fields(ctx.engine, ctx.run_id, ctx.attempt, config_json=config.to_json())
    s = ctx.settings
    has_eval = bool(config.eval.attacks)
    share = TRAIN_SHARE if has_eval else 1.0
    cb = DBCallback(ctx.engine, ctx.run_id, ctx.attempt, config.train.epochs, flush_rows=s.flush_rows,
                    flush_seconds=s.flush_seconds, cancel_poll_seconds=s.cancel_poll_seconds, progress_share=share)
    out = run_dir(ctx.run_id)
    trainer = _bound_trainer(Trainer, config, cb, out, run_key(run))
    cb.eval_seconds = eval_estimate(config, torch_device_type(trainer.device)) if has_eval else None
    # Points written after the checkpoint we resume from (or all, when starting over) are dropped:
    # the resumed run writes them again, so the series has neither gaps nor duplicates.
    truncate_after(ctx.engine, ctx.run_id, trainer.start_epoch, trainer.ctx.step)
    attempts = runstate.get_artifact(ctx.engine, ctx.run_id, "attempts") or []
    attempts.append({"attempt": ctx.attempt, "worker": run.worker, "start_epoch": trainer.start_epoch,
                     "start_step": trainer.ctx.step, "started_at": utcnow().isoformat(), "device": str(trainer.device)})
    runstate.put_artifact(ctx.engine, ctx.run_id, "attempts", attempts)
    runstate.set_fields(ctx.engine, ctx.run_id, ctx.attempt, total_epochs=config.train.epochs, epoch=trainer.start_epoch,
                        checkpoint_path=str(out / "last.pt") if trainer.start_epoch else None)
    try:
        result = trainer.fit()
    finally:
        try:
            cb.flush()  # keep the metrics so far, also when cancelled or failing
        except Exception:
            log.exception("run %s: could not flush the last metrics", ctx.run_id)
    if cb.superseded:
        raise _Superseded()
    n_eval = (_evaluate_into_store(ctx, trainer.ensemble, config, trainer.dataset, trainer.device, share, result.checkpoint)
              if has_eval else 0)
    return {"checkpoint": result.checkpoint, "epochs": result.epochs_completed, "eval_rows": n_eval,
            "metric_rows": cb.rows_written, "seconds": result.seconds, "resumed_from_epoch": trainer.start_epoch}


def _evaluate(ctx: _Context) -> dict[str, Any]:
    from igat.data import load_dataset
    from igat.training import load_ensemble
    from igat.training.builders import resolve_device

    run = ctx.run
    config = _load_config(run)
    checkpoint = _checkpoint_of(ctx.engine, run, run_params(run))
    device = resolve_device(config.device)
    ensemble, _ckpt_config, _ = load_ensemble(checkpoint, device)
    dataset = load_dataset(config.data, config.seed)
    runstate.set_fields(ctx.engine, ctx.run_id, ctx.attempt, checkpoint_path=checkpoint)
    n = _evaluate_into_store(ctx, ensemble, config, dataset, device, 0.0, checkpoint)
    return {"checkpoint": checkpoint, "eval_rows": n}


def _theory(ctx: _Context) -> dict[str, Any]:
    run = ctx.run
    params = run_params(run)
    checkpoint = _checkpoint_of(ctx.engine, run, params)
    try:
        import igat.theory as theory
    except ImportError as exc:
        raise JobError(f"theory diagnostics are not available: cannot import igat.theory ({exc})") from None
    fn = getattr(theory, "run_diagnostics", None)
    if fn is None:
        raise JobError("theory diagnostics are not available: igat.theory has no run_diagnostics(checkpoint_path, params)")
    runstate.set_fields(ctx.engine, ctx.run_id, ctx.attempt, checkpoint_path=checkpoint)
    result = fn(checkpoint, {k: v for k, v in params.items() if k != "checkpoint"})
    if not isinstance(result, dict):
        raise JobError(f"igat.theory.run_diagnostics returned {type(result).__name__}, expected a dict")
    runstate.put_artifact(ctx.engine, ctx.run_id, "theory", result)
    return {"checkpoint": checkpoint, "keys": sorted(result)}


def run_params(run: Any) -> dict[str, Any]:
    import json

    try:
        data = json.loads(getattr(run, "params_json", None) or "{}")
    except ValueError:
        raise JobError("run.params_json is not valid JSON") from None
    if not isinstance(data, dict):
        raise JobError("run.params_json must be a JSON object")
    return data


class _Superseded(Exception):
    """Another worker took this run over while we were still on it: leave its state alone."""


def _study(ctx: _Context) -> dict[str, Any]:
    from tasks.studyjob import run_study_phase  # the study's own module (igat.study, child runs, progress)

    return run_study_phase(ctx)


PHASES = {
    "igat.train": lambda ctx: _train(ctx, finetune=False),
    "igat.finetune": lambda ctx: _train(ctx, finetune=True),
    "igat.evaluate": _evaluate,
    "igat.theory": _theory,
    "igat.study": _study,
}


def execute(task_name: str, run_id: int, worker: str, task_id: str | None, settings: JobSettings | None = None,
            engine: Engine | None = None) -> dict[str, Any]:
    """Claim run ``run_id`` and run the phase; never raises for run-level problems.

    Returns ``{"run_id", "status", ...}``; status ``busy`` means a live copy runs elsewhere (the
    Celery task retries later, in case that copy's worker dies)."""
    from igat.training import TrainingCancelled

    settings = settings or JobSettings.from_env()
    engine = engine or get_engine()
    try:
        run_id = int(run_id)
    except (TypeError, ValueError):
        log.error("task %s got a run id that is not an integer: %r", task_name, run_id)
        return {"run_id": run_id, "status": "invalid"}
    claim = runstate.claim(engine, run_id, worker, task_id, settings.stale_after, settings.max_attempts)
    if claim.outcome != Claim.claimed:
        log.info("run %s: %s (status %s), nothing to do", run_id, claim.outcome, claim.status)
        return {"run_id": run_id, "status": str(claim.outcome)}
    ctx = _Context(engine, run_id, claim.attempt, settings)
    log.info("run %s: attempt %d on %s", run_id, claim.attempt, worker)
    with runstate.Heartbeat(engine, run_id, claim.attempt, settings.heartbeat_seconds):
        try:
            summary = PHASES[task_name](ctx)
        except _Superseded:
            return {"run_id": run_id, "status": "superseded"}
        except TrainingCancelled as exc:
            row = ctx.run
            if row is not None and row.attempts != ctx.attempt:
                return {"run_id": run_id, "status": "superseded"}
            runstate.finish(engine, run_id, RunStatus.cancelled, error=str(exc), attempt=ctx.attempt)
            return {"run_id": run_id, "status": "cancelled"}
        except BaseException as exc:  # noqa: BLE001 - a run's failure is data, not a worker crash
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise  # worker shutdown: leave the run 'running'; the redelivered message resumes it
            log.warning("run %s failed: %s", run_id, exc)
            runstate.finish(engine, run_id, RunStatus.failed, error=_error_text(exc), attempt=ctx.attempt)
            return {"run_id": run_id, "status": "failed", "error": str(exc)[:500]}
    runstate.finish(engine, run_id, RunStatus.succeeded, attempt=ctx.attempt)
    return {"run_id": run_id, "status": "succeeded", **summary}


def register_tasks(app) -> None:
    """Bind the igat tasks to ``app`` (each app gets its own task objects)."""

    def make(name: str):
        def task(self, run_id: int) -> dict[str, Any]:
            settings = JobSettings.from_env()
            result = execute(name, run_id, self.request.hostname or f"pid{os.getpid()}", self.request.id, settings)
            if result["status"] == Claim.busy:
                # A duplicate delivery while the run is alive elsewhere. Retry instead of dropping:
                # if that worker dies, this copy (same task id) takes the run over once it is stale.
                raise self.retry(countdown=settings.stale_after, max_retries=None)
            return result

        task.__name__ = task.__qualname__ = name.replace(".", "_")
        return app.task(name=name, bind=True, shared=False, acks_late=True, reject_on_worker_lost=True)(task)

    for name in PHASES:
        make(name)
