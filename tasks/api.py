"""The service API the dashboard and the CLI use: submit, cancel, retry, list, read.

Submitting validates the configs, creates the Experiment and its Run rows (status queued) in one
transaction and enqueues one Celery task per run (a group) by name, so callers never import torch
or the task code. Reads return SQLModel objects or pandas frames. Every function takes an
optional Celery ``app`` (default: ``tasks.celery_app.get_app()``); the database is
``tasks.store.database_url()``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, update
from sqlmodel import col, select

from tasks import runstate
from tasks.store import (
    FINAL_STATUSES,
    Artifact,
    EvalResult,
    Experiment,
    MemberStatRow,
    Metric,
    Run,
    RunStatus,
    get_engine,
    session,
    utcnow,
)

if TYPE_CHECKING:
    import pandas as pd
    from celery import Celery

    from igat.config import ExperimentConfig
    from igat.study import StudySpec

RUN = Run.__table__
TASK_FOR_KIND = {"train": "igat.train", "finetune": "igat.finetune", "eval": "igat.evaluate", "theory": "igat.theory",
                 "study": "igat.study"}
EXPERIMENT_KINDS = ("single", "seeds", "ablation", "sweep", "finetune", "eval", "theory", "study")


class SubmitError(ValueError):
    """Bad submit arguments (the message names the argument and the allowed values)."""


class NoBrokerError(ConnectionError):
    pass


def _app(app: Celery | None) -> Celery:
    if app is not None:
        return app
    from tasks.broker import configured_url
    from tasks.celery_app import get_app

    if configured_url() is None:
        raise NoBrokerError("no broker: start `igat up` (or `igat worker`, which starts an embedded one) for this "
                            "IGAT_HOME, or set IGAT_BROKER_URL=redis://host:6379/0")
    return get_app()


def _publisher(app: Celery | None) -> Celery:
    """The app, after checking that its broker answers (fail fast, before any row is written)."""
    celery = _app(app)
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=5)
    except Exception as exc:
        from kombu.utils.url import maybe_sanitize_url

        url = maybe_sanitize_url(str(celery.conf.broker_url))
        raise ConnectionError(f"the broker at {url} is unreachable ({exc}); is `igat up` / Redis running?") from exc
    return celery


def _as_config(cfg: ExperimentConfig | dict[str, Any] | str) -> ExperimentConfig:
    from igat.config import ExperimentConfig

    if isinstance(cfg, ExperimentConfig):
        return ExperimentConfig.from_dict(cfg.to_dict())  # re-validate (callers may have mutated it)
    if isinstance(cfg, str):
        return ExperimentConfig.from_text(cfg)
    if isinstance(cfg, dict):
        return ExperimentConfig.from_dict(cfg)
    raise SubmitError(f"configs must be ExperimentConfig, dict or YAML text, got {type(cfg).__name__}")


def _new_task_id(run_id: int) -> str:
    return f"igat-run-{run_id}-{uuid.uuid4().hex[:12]}"


def _publish(sigs: Sequence[Any], celery: Celery) -> None:
    with celery.producer_or_acquire() as producer:  # one connection for the whole group
        for sig in sigs:
            sig.apply_async(producer=producer)


def _broker_failed(celery: Celery, exc: Exception) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return f"could not enqueue: the broker at {maybe_sanitize_url(str(celery.conf.broker_url))} failed ({exc})"


def _enqueue(run_ids: Sequence[int], celery: Celery) -> None:
    """Give each run a fresh task id, then send the group. On a broker error the runs are failed."""
    if not run_ids:
        return
    engine = get_engine()
    with session() as s:
        runs = {r.id: r for r in s.exec(select(Run).where(col(Run.id).in_(list(run_ids)))).all()}
    sigs = []
    with engine.begin() as conn:
        for rid in run_ids:
            run = runs[rid]
            if run.kind not in TASK_FOR_KIND:
                raise SubmitError(f"run {rid} has kind {run.kind!r}; allowed: {', '.join(TASK_FOR_KIND)}")
            tid = _new_task_id(rid)
            conn.execute(update(RUN).where(RUN.c.id == rid).values(task_id=tid))
            sigs.append(celery.signature(TASK_FOR_KIND[run.kind], args=(rid,), task_id=tid))
    try:
        _publish(sigs, celery)
    except Exception as exc:
        msg = _broker_failed(celery, exc)
        with engine.begin() as conn:
            conn.execute(update(RUN).where(RUN.c.id.in_(list(run_ids)), RUN.c.status == RunStatus.queued)
                         .values(status=RunStatus.failed, error=msg, finished_at=utcnow()))
        raise ConnectionError(msg) from exc


# --- submitting ------------------------------------------------------------------------------------
def submit_runs(
    configs: Sequence[ExperimentConfig | dict[str, Any]],
    experiment_name: str,
    kind: str = "single",
    variants: Sequence[str] | None = None,
    *,
    run_kind: str = "train",
    parent_run_id: int | None = None,
    params: dict[str, Any] | None = None,
    notes: str = "",
    app: Celery | None = None,
) -> tuple[int, list[int]]:
    """Validate, create an Experiment with one queued Run per config, enqueue them. Returns
    ``(experiment_id, run_ids)``. ``kind``: single | seeds | ablation | sweep | finetune | eval |
    theory; ``run_kind``: train | finetune | eval | theory; ``variants``: one label per config."""
    if not configs:
        raise SubmitError("configs: give at least one config")
    if kind not in EXPERIMENT_KINDS:
        raise SubmitError(f"kind: {kind!r} is not one of {', '.join(EXPERIMENT_KINDS)}")
    if run_kind not in TASK_FOR_KIND:
        raise SubmitError(f"run_kind: {run_kind!r} is not one of {', '.join(TASK_FOR_KIND)}")
    if run_kind == "study":  # a study's row holds its spec, not a config: it has its own, checked, entry
        raise SubmitError("run_kind: queue studies with submit_study")
    if variants is not None and len(variants) != len(configs):
        raise SubmitError(f"variants: {len(variants)} labels for {len(configs)} configs; give one per config")
    name = (experiment_name or "").strip()
    if not name:
        raise SubmitError("experiment_name: must not be empty")
    parsed = [_as_config(c) for c in configs]  # raises ConfigError naming the field
    celery = _publisher(app)  # before any row is written: no broker, no orphaned queued runs
    params_json = json.dumps(params or {})
    with session() as s:
        exp = Experiment(name=name, kind=kind, notes=notes)
        s.add(exp)
        s.flush()
        runs = []
        for i, cfg in enumerate(parsed):
            variant = variants[i] if variants is not None else ""
            suffix = f"[{variant}]" if variant else (f"-seed{cfg.seed}" if kind == "seeds" or len(parsed) > 1 else "")
            run = Run(
                experiment_id=exp.id, name=f"{name}{suffix}", kind=run_kind, config_json=cfg.to_json(),
                preset=cfg.preset, dataset=cfg.data.dataset, defense=cfg.defense.name, igat=cfg.igat.enabled,
                seed=cfg.seed, tags=",".join(cfg.tags), variant=variant, status=RunStatus.queued,
                total_epochs=cfg.train.epochs if run_kind in ("train", "finetune") else 0,
                parent_run_id=parent_run_id, params_json=params_json,
            )
            s.add(run)
            runs.append(run)
        s.commit()
        exp_id, run_ids = int(exp.id), [int(r.id) for r in runs]
    _enqueue(run_ids, celery)
    return exp_id, run_ids


def _finetune_of(parent_run_id: int | None) -> dict[str, Any]:
    """submit_runs arguments for runs that fine-tune ``parent_run_id`` (none: trained from scratch).
    The finetune task falls back to the parent's checkpoint when the config names none."""
    if parent_run_id is None:
        return {}
    return {"run_kind": "finetune", "parent_run_id": int(parent_run_id)}


def submit_seeds(config: ExperimentConfig | dict[str, Any], seeds: Sequence[int], experiment_name: str | None = None,
                 app: Celery | None = None, *, parent_run_id: int | None = None) -> tuple[int, list[int]]:
    """The same config once per seed (an experiment of kind 'seeds'). With ``parent_run_id`` (the base
    run whose checkpoint the config's ``train.init_checkpoint`` names) the runs are fine-tune runs."""
    base = _as_config(config)
    seeds = list(seeds)
    if not seeds:
        raise SubmitError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise SubmitError(f"seeds: duplicates in {seeds}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= 2**31 - 1:
            raise SubmitError(f"seeds: {s!r} is not an integer in [0, 2147483647]")
    configs = [_as_config({**base.to_dict(), "seed": s}) for s in seeds]
    # Seeds of one setting share the method; Run.variant stays empty (it labels ablation variants,
    # which the reports group by), and the run names carry "-seed<N>".
    return submit_runs(configs, experiment_name or base.name, kind="seeds", app=app, **_finetune_of(parent_run_id))


def submit_ablation(config: ExperimentConfig | dict[str, Any], experiment_name: str | None = None,
                    app: Celery | None = None, *, parent_run_id: int | None = None) -> tuple[int, list[int]]:
    """The iGAT ablation of ``config`` (variants from ``igat.ablation.ablation_variants``). With
    ``parent_run_id`` every variant is a fine-tune run of that base (the paper's Table 3 procedure)."""
    base = _as_config(config)
    try:
        from igat.ablation import ablation_variants
    except ImportError as exc:
        raise RuntimeError(f"ablations are not available: cannot import igat.ablation.ablation_variants ({exc})") from None
    variants = ablation_variants(base)
    pairs = list(variants.items()) if isinstance(variants, dict) else list(variants)
    labels, configs = [], []
    for item in pairs:
        if isinstance(item, tuple | list) and len(item) == 2:
            label, cfg = item
        else:  # an object with .label/.name and .config
            label = getattr(item, "label", None) or getattr(item, "name", None)
            cfg = getattr(item, "config", None)
        if label is None or cfg is None:
            raise RuntimeError(f"igat.ablation.ablation_variants returned an item without label/config: {item!r}")
        labels.append(str(label))
        configs.append(cfg)
    return submit_runs(configs, experiment_name or f"{base.name}-ablation", kind="ablation", variants=labels, app=app,
                       **_finetune_of(parent_run_id))


def submit_sweep(config: ExperimentConfig | dict[str, Any], grid: dict[str, Sequence[Any]],
                 experiment_name: str | None = None, app: Celery | None = None) -> tuple[int, list[int]]:
    """The cartesian product of ``grid`` ({"dotted.field": [values]}) applied to ``config``."""
    from igat.config import with_overrides

    base = _as_config(config)
    if not grid or any(len(v) == 0 for v in grid.values()):
        raise SubmitError("grid: give at least one field with at least one value")
    keys = list(grid)
    configs, labels = [], []
    for combo in itertools.product(*(grid[k] for k in keys)):
        overrides = [f"{k}={json.dumps(v)}" for k, v in zip(keys, combo)]
        configs.append(with_overrides(base, overrides))
        labels.append(",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, combo)))
    return submit_runs(configs, experiment_name or f"{base.name}-sweep", kind="sweep", variants=labels, app=app)


def submit_finetune(base_run_id: int, config: ExperimentConfig | dict[str, Any] | None = None,
                    app: Celery | None = None) -> tuple[int, list[int]]:
    """iGAT fine-tuning of a trained run's checkpoint (config default: the base config with igat on)."""
    base = get_run(base_run_id)
    cfg = _as_config(config if config is not None else {**base.config, "igat": {**base.config.get("igat", {}), "enabled": True}})
    return submit_runs([cfg], f"{base.name}-igat", kind="finetune", run_kind="finetune", parent_run_id=base_run_id, app=app)


def submit_evaluation(run_id: int, eval_overrides: dict[str, Any] | None = None,
                      app: Celery | None = None) -> tuple[int, list[int]]:
    """Evaluate a trained run's checkpoint with its config's ``eval`` section updated by ``eval_overrides``."""
    base = get_run(run_id)
    data = base.config
    data["eval"] = {**data.get("eval", {}), **(eval_overrides or {})}
    return submit_runs([data], f"{base.name}-eval", kind="eval", run_kind="eval", parent_run_id=run_id, app=app)


def submit_theory(run_id: int, params: dict[str, Any] | None = None, app: Celery | None = None) -> tuple[int, list[int]]:
    """Theory diagnostics (``igat.theory.run_diagnostics``) of a trained run's checkpoint."""
    base = get_run(run_id)
    return submit_runs([base.config], f"{base.name}-theory", kind="theory", run_kind="theory", parent_run_id=run_id,
                       params=params or {}, app=app)


def submit_study(spec: StudySpec | dict[str, Any], name: str | None = None, app: Celery | None = None) -> tuple[int, int]:
    """Queue a study (``igat.study``): one Run of kind "study" holding the spec, in an Experiment of kind
    "study"; its phases become child runs as the worker reaches them. Returns ``(experiment_id, run_id)``.
    The spec and every config the study will train are checked first (ConfigError naming the field)."""
    from igat.config_input import name_problem
    from tasks.studyjob import check_study, study_base_config

    spec = check_study(spec)
    name = (name if name is not None else f"study-{spec.defense}-{spec.scale}").strip()
    if not name:
        raise SubmitError("name: must not be empty")
    if (problem := name_problem(name)) is not None:
        raise SubmitError(f"name: {problem}")
    base = study_base_config(spec)
    celery = _publisher(app)  # before any row is written
    with session() as s:
        exp = Experiment(name=name, kind="study", notes=f"igat study: {spec.defense}, {spec.scale}, seeds {spec.seeds}")
        s.add(exp)
        s.flush()
        run = Run(experiment_id=exp.id, name=name, kind="study", config_json=base.to_json(), preset=base.preset,
                  dataset=spec.dataset, defense=spec.defense, igat=False, seed=spec.seeds[0], tags="study",
                  status=RunStatus.queued, params_json=spec.model_dump_json())
        s.add(run)
        s.commit()
        exp_id, run_id = int(exp.id), int(run.id)
    _enqueue([run_id], celery)
    return exp_id, run_id


def study_of(run_id: int) -> int | None:
    """The id of the study ``run_id`` is a phase of (None: not a study's phase)."""
    parent = RUN.alias("parent")
    with get_engine().connect() as conn:
        return conn.execute(select(parent.c.id).select_from(RUN.join(parent, parent.c.id == RUN.c.parent_run_id))
                            .where(RUN.c.id == run_id, parent.c.kind == "study")).scalar()


# --- controlling -----------------------------------------------------------------------------------
def cancel_run(run_id: int, app: Celery | None = None) -> str:
    """Cancel a run: a queued one ends cancelled now (and its message is revoked), a running one stops
    at its next batch keeping its metrics and last checkpoint. Returns the status after the call.
    A phase of a study cancels the study (only the study's task trains it)."""
    engine = get_engine()
    study = study_of(run_id)
    if study is not None:
        return cancel_run(study, app)
    with engine.begin() as conn:
        row = conn.execute(RUN.select().where(RUN.c.id == run_id)).first()
        if row is None:
            raise KeyError(f"run {run_id} does not exist")
        if row.status in FINAL_STATUSES:
            return str(row.status)
        conn.execute(update(RUN).where(RUN.c.id == run_id).values(cancel_requested=True))
        was_queued = conn.execute(
            update(RUN).where(RUN.c.id == run_id, RUN.c.status == RunStatus.queued)
            .values(status=RunStatus.cancelled, finished_at=utcnow(), error="cancelled before it started")
        ).rowcount == 1
    if was_queued and row.task_id:
        try:  # the worker would skip it anyway (the claim sees cancel_requested); revoke saves a delivery
            _app(app).control.revoke(row.task_id)
        except Exception:  # no broker reachable: the DB state is what counts
            pass
    return RunStatus.cancelled if was_queued else RunStatus.running


def retry_run(run_id: int, app: Celery | None = None) -> int:
    """Queue a failed or cancelled run again; it resumes from its last checkpoint (a run that never started
    starts from scratch). The ended attempt's time is kept (``runstate.bank_attempt``). Returns the run id."""
    retryable = [RunStatus.failed, RunStatus.cancelled]
    run = get_run(run_id)  # KeyError when absent
    study = study_of(run_id)
    if study is not None:
        raise SubmitError(f"run {run_id} is a phase of study {study}; retry the study, which resumes this phase")
    if run.status not in retryable:
        raise SubmitError(f"run {run_id} is {run.status}; only failed or cancelled runs can be retried")
    celery = _publisher(app)
    with get_engine().begin() as conn:
        ok = conn.execute(
            update(RUN).where(RUN.c.id == run_id, RUN.c.status.in_(retryable))
            .values(status=RunStatus.queued, cancel_requested=False, error=None, attempts=0, finished_at=None,
                    worker=None, started_at=None, phase=None)
        ).rowcount == 1
    if not ok:  # someone else retried it in between
        raise SubmitError(f"run {run_id} is {get_run(run_id).status}; only failed or cancelled runs can be retried")
    runstate.bank_attempt(get_engine(), run_id, run.started_at, run.finished_at)
    _enqueue([run_id], celery)
    return run_id


def requeue_stale(stale_after: float | None = None, include_queued: bool = False, app: Celery | None = None) -> list[int]:
    """Re-enqueue runs whose worker died (running, heartbeat older than ``stale_after`` s) and, with
    ``include_queued``, queued runs (after the embedded broker restarted empty); end as cancelled the
    dead runs whose cancel was requested. Safe to repeat and to call from several workers at once:
    each run is taken by exactly one caller (``runstate.take_for_requeue``) and gets a new task id,
    so older copies of its message are ignored by the workers. Returns the ids this call re-enqueued."""
    from tasks.jobs import JobSettings

    stale_after = JobSettings.from_env().stale_after if stale_after is None else stale_after
    celery = _app(app)
    engine = get_engine()
    runstate.cancel_dead(engine, stale_after)
    taken = runstate.take_for_requeue(engine, stale_after, _new_task_id, kinds=tuple(TASK_FOR_KIND),
                                      include_queued=include_queued)
    if not taken:  # the common case in the workers' periodic check: no broker round trip at all
        return []
    sigs = [celery.signature(TASK_FOR_KIND[t.kind], args=(t.run_id,), task_id=t.task_id) for t in taken]
    try:
        _publish(sigs, celery)
    except Exception as exc:
        runstate.undo_requeue(engine, taken)  # still dead: the next sweep tries again
        raise ConnectionError(_broker_failed(celery, exc)) from exc
    for t in taken:  # the dead attempts ran until their last heartbeat; the next claim starts a new one
        if t.old_status == RunStatus.running:
            runstate.bank_attempt(engine, t.run_id, t.started_at, t.heartbeat_at)
    return [t.run_id for t in taken]


# --- reading ---------------------------------------------------------------------------------------
def get_run(run_id: int) -> Run:
    with session() as s:
        run = s.get(Run, run_id)
    if run is None:
        raise KeyError(f"run {run_id} does not exist")
    return run


def list_runs(experiment_id: int | None = None, status: str | Sequence[str] | None = None, kind: str | None = None,
              limit: int = 500, offset: int = 0) -> list[Run]:
    """Newest first."""
    q = select(Run)
    if experiment_id is not None:
        q = q.where(Run.experiment_id == experiment_id)
    if status:
        statuses = [status] if isinstance(status, str) else list(status)
        bad = [x for x in statuses if x not in RunStatus.__members__]
        if bad:
            raise SubmitError(f"status: {bad[0]!r} is not one of {', '.join(RunStatus.__members__)}")
        q = q.where(col(Run.status).in_(statuses))
    if kind:
        q = q.where(Run.kind == kind)
    q = q.order_by(col(Run.id).desc()).offset(offset).limit(limit)
    with session() as s:
        return list(s.exec(q).all())


def list_experiments(limit: int = 200) -> list[Experiment]:
    with session() as s:
        return list(s.exec(select(Experiment).order_by(col(Experiment.id).desc()).limit(limit)).all())


def metrics_frame(run_id: int, scope: str = "epoch", names: Sequence[str] | None = None,
                  after_step: int | None = None) -> pd.DataFrame:
    """Columns step, epoch, name, value (long format). ``after_step`` fetches only newer points
    (live charts append instead of reloading)."""
    import pandas as pd

    q = select(Metric.step, Metric.epoch, Metric.name, Metric.value).where(Metric.run_id == run_id, Metric.scope == scope)
    if names:
        q = q.where(col(Metric.name).in_(list(names)))
    if after_step is not None:
        q = q.where(Metric.step > after_step)
    with session() as s:
        rows = s.exec(q.order_by(col(Metric.step), col(Metric.name))).all()
    return pd.DataFrame(rows, columns=["step", "epoch", "name", "value"])


def eval_results_frame(run_ids: Sequence[int]) -> pd.DataFrame:
    """Columns run_id, target, combiner, attack, accuracy, num_examples, ci_low, ci_high (95 % Wilson interval),
    extra (dict)."""
    import pandas as pd

    with session() as s:
        rows = s.exec(select(EvalResult).where(col(EvalResult.run_id).in_(list(run_ids)))
                      .order_by(col(EvalResult.run_id), col(EvalResult.id))).all()
    return pd.DataFrame(
        [(r.run_id, r.target, r.combiner, r.attack, r.accuracy, r.num_examples, r.ci_low, r.ci_high, r.extra)
         for r in rows],
        columns=["run_id", "target", "combiner", "attack", "accuracy", "num_examples", "ci_low", "ci_high", "extra"],
    )


def member_stats_frame(run_id: int) -> pd.DataFrame:
    """Columns epoch, member, statistic, value."""
    import pandas as pd

    with session() as s:
        rows = s.exec(select(MemberStatRow.epoch, MemberStatRow.member, MemberStatRow.statistic, MemberStatRow.value)
                      .where(MemberStatRow.run_id == run_id)
                      .order_by(col(MemberStatRow.epoch), col(MemberStatRow.member))).all()
    return pd.DataFrame(rows, columns=["epoch", "member", "statistic", "value"])


def get_artifact(run_id: int, name: str) -> Any:
    """The newest artifact ``name`` of the run as parsed JSON (None when absent)."""
    with session() as s:
        art = s.exec(select(Artifact).where(Artifact.run_id == run_id, Artifact.name == name)
                     .order_by(col(Artifact.id).desc())).first()
    return None if art is None else art.data


def queue_lengths(app: Celery | None = None) -> dict[str, int]:
    """Messages waiting per queue (Redis LLEN)."""
    from tasks.celery_app import QUEUES

    celery = _app(app)
    with celery.connection_for_write() as conn:
        client = conn.default_channel.client
        return {q: int(client.llen(q)) for q in QUEUES}


def workers(app: Celery | None = None, timeout: float = 1.0) -> list[str]:
    """Host names of the workers answering a ping."""
    replies = _app(app).control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


# --- curating: names, notes, tags, archive, delete -------------------------------------------------
MAX_NOTES_LENGTH = 10_000


class RunEditError(ValueError):
    """A refused edit or deletion of a run (one line naming the field or the reason)."""


def _set_run_fields(run_id: int, **values: Any) -> None:
    with get_engine().begin() as conn:
        if conn.execute(update(RUN).where(RUN.c.id == run_id).values(**values)).rowcount != 1:
            raise KeyError(f"run {run_id} does not exist")


def rename_run(run_id: int, name: str) -> str:
    """Give the run a new name (a plain name: ``igat.config_input.name_problem``); returns the stored name."""
    from igat.config_input import name_problem

    new = (name or "").strip()
    if not new:
        raise RunEditError("name: must not be empty")
    if (problem := name_problem(new)) is not None:
        raise RunEditError(f"name: {problem}")
    _set_run_fields(run_id, name=new)
    return new


def clean_notes(notes: str) -> str:
    """Notes as stored: free text with line breaks and tabs, no other control characters, at most
    MAX_NOTES_LENGTH characters (RunEditError naming the field otherwise)."""
    from igat.config_input import text_problem

    text = (notes or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(text) > MAX_NOTES_LENGTH:
        raise RunEditError(f"notes: at most {MAX_NOTES_LENGTH} characters, got {len(text)}")
    if (problem := text_problem(text.replace("\n", " ").replace("\t", " "))) is not None:
        raise RunEditError(f"notes: {problem}")
    return text


def set_run_notes(run_id: int, notes: str) -> str:
    """Replace the run's notes (see :func:`clean_notes`); returns the stored text."""
    text = clean_notes(notes)
    _set_run_fields(run_id, notes=text)
    return text


def clean_tags(tags: str | Sequence[str]) -> str:
    """Tags as stored: comma-separated plain names (``name_problem``), blanks and repeats dropped, at most
    MAX_TAGS of at most MAX_TAG_LENGTH characters each (RunEditError naming the tag otherwise)."""
    from igat.config_input import MAX_TAG_LENGTH, MAX_TAGS, name_problem

    items = tags.split(",") if isinstance(tags, str) else [str(t) for t in tags]
    cleaned: list[str] = []
    for tag in (t.strip() for t in items):
        if tag and tag not in cleaned:
            cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise RunEditError(f"tags: at most {MAX_TAGS} tags, got {len(cleaned)}")
    for tag in cleaned:
        if len(tag) > MAX_TAG_LENGTH:
            raise RunEditError(f"tags: {tag[:40]!r} has {len(tag)} characters; at most {MAX_TAG_LENGTH}")
        if (problem := name_problem(tag)) is not None:
            raise RunEditError(f"tags: {problem}")
    return ",".join(cleaned)


def set_run_tags(run_id: int, tags: str | Sequence[str]) -> str:
    """Replace the run's tags ("a, b" or ["a", "b"]; see :func:`clean_tags`); returns the stored string."""
    text = clean_tags(tags)
    _set_run_fields(run_id, tags=text)
    return text


def archive_run(run_id: int, archived: bool = True) -> bool:
    """Archive (hide from the Runs table by default; nothing is removed) or unarchive a run."""
    _set_run_fields(run_id, archived=bool(archived))
    return bool(archived)


@dataclasses.dataclass(frozen=True)
class DeletionPlan:
    """What :func:`delete_run` removes (or why it refuses): the counts of the run's rows, the run's own folder
    under the root the worker writes to (``folder``, None when there is none) and a path it leaves alone."""

    run_id: int
    name: str
    status: str
    metric_rows: int
    results: int
    member_stats: int
    artifacts: int
    folder: Path | None
    folder_bytes: int
    kept: str | None  # e.g. a checkpoint outside the run's folder (another run's, or outside the runs root)
    blocked: str | None  # why the run cannot be deleted now; None: it can

    def rows_text(self) -> str:
        return (f"{self.metric_rows} metric rows, {self.results} results, {self.member_stats} member statistics, "
                f"{self.artifacts} artifacts")


def size_text(n_bytes: float) -> str:
    """A byte count for people: 512 B, 1.5 KB, 23.4 MB, 1.2 GB."""
    if n_bytes < 1024:
        return f"{int(n_bytes)} B"
    for unit in ("KB", "MB", "GB"):
        n_bytes /= 1024
        if n_bytes < 1024 or unit == "GB":
            break
    return f"{n_bytes:.1f} {unit}"


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            pass
    return total


def run_folder(run_id: int, kind: str) -> Path:
    """The folder the worker writes this run's files to: ``$IGAT_HOME/runs/<id>`` (a study:
    ``$IGAT_HOME/studies/<id>``)."""
    if kind == "study":
        from tasks.study_artifacts import study_dir  # not tasks.studyjob: it pulls torch into the dashboard

        return study_dir(run_id)
    from tasks.jobs import run_dir

    return run_dir(run_id)


def _owned_folder(run_id: int, kind: str) -> Path | None:
    """The run's own folder if it exists and really lies in the worker's root (not a link leading elsewhere)."""
    folder = run_folder(run_id, kind)
    if not folder.exists() or folder.is_symlink() or not folder.is_dir():
        return None
    root = folder.parent.resolve()
    return folder if folder.resolve().parent == root else None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (OSError, ValueError):
        return False


def deletion_plan(run_id: int) -> DeletionPlan:
    """What deleting ``run_id`` would remove, and ``blocked`` when it cannot be deleted (queued or running, or
    other runs name it as their parent: a fine-tune's base, an evaluated run, a study's phases)."""
    run = get_run(run_id)  # KeyError when absent
    counts = {}
    with session() as s:
        for key, model in (("metric_rows", Metric), ("results", EvalResult), ("member_stats", MemberStatRow),
                           ("artifacts", Artifact)):
            counts[key] = int(s.exec(select(func.count()).select_from(model).where(model.run_id == run_id)).one())
        children = s.exec(select(Run.id, Run.kind).where(Run.parent_run_id == run_id).order_by(col(Run.id))).all()
    blocked = None
    if run.status not in FINAL_STATUSES:
        blocked = f"run {run_id} is {run.status}; cancel it first (igat runs cancel {run_id})"
    elif children:
        listed = ", ".join(f"{cid} ({kind})" for cid, kind in children)
        blocked = f"run {run_id} is the parent of run{'s' if len(children) > 1 else ''} {listed}; delete those first"
    folder = _owned_folder(run_id, run.kind)
    kept = None
    if run.checkpoint_path:
        checkpoint = Path(run.checkpoint_path)
        own = run_folder(run_id, run.kind)
        if not _inside(checkpoint, own):
            where = "another run's folder" if _inside(checkpoint, own.parent) else f"outside {own.parent}"
            kept = f"the checkpoint {checkpoint} is in {where}, not this run's folder {own}; it is left in place"
    return DeletionPlan(run_id=run_id, name=run.name, status=str(run.status), folder=folder,
                        folder_bytes=_folder_bytes(folder) if folder else 0, kept=kept, blocked=blocked, **counts)


def delete_run(run_id: int, delete_files: bool = True) -> DeletionPlan:
    """Delete a finished run: its metric rows, results, member statistics, artifacts and the run row in one
    transaction, then (``delete_files``) its own folder under the worker's root (``run_folder``); a checkpoint
    anywhere else is never touched. Refuses queued or running runs and runs other runs depend on
    (RunEditError saying what to do). Returns the plan it carried out."""
    plan = deletion_plan(run_id)
    if plan.blocked:
        raise RunEditError(plan.blocked)
    with get_engine().begin() as conn:
        for model in (Metric, EvalResult, MemberStatRow, Artifact):
            table = model.__table__
            conn.execute(table.delete().where(table.c.run_id == run_id))
        # The status is checked again in the same transaction: a retry in between makes this delete nothing.
        if conn.execute(RUN.delete().where(RUN.c.id == run_id, RUN.c.status.in_(list(FINAL_STATUSES)))).rowcount != 1:
            raise RunEditError(f"run {run_id} is no longer finished; cancel it first (igat runs cancel {run_id})")
    if delete_files and plan.folder is not None:
        shutil.rmtree(plan.folder)
    return plan
