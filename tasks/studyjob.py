"""The ``igat.study`` task: a study (``igat.study.run_study``) as one Run row of kind "study".

The study row holds the :class:`~igat.study.StudySpec` in ``params_json`` and gets what every run gets from
``tasks.jobs.execute``: a claim, heartbeats, re-queueing when its worker dies, cancel and retry. Its work
lives in ``$IGAT_HOME/studies/<run id>`` (``study.json`` + one folder per trained phase), so a redelivered or
retried study continues from the first missing piece (``run_study`` is resumable).

Each trained phase (``seed0/pretrain``, ``seed0/base``, ``seed0/continued``, ``seed0/igat``, ...) is a child
Run row (kind "train", ``parent_run_id`` = the study) fed by the same metric writer as a train job
(:class:`tasks.study_phase.PhaseCallback`, a ``DBCallback``), so its curves are live on the dashboard. Children are never
re-queued on their own (``runstate.not_study_phase``): only the study trains them. A cancel of the study
(or of one of its phases, which ``api.cancel_run`` redirects to the study) stops the training at the next
batch, or an evaluation at the next phase boundary.

The study row's ``phase`` and ``progress`` say where it is; the analysis is stored as the artifact
``study_analysis`` after every finished evaluation (partial results) and at the end, with the markdown
report as ``study_report``. After the evaluation the Section-4 diagnostics of every arm
(``igat.theory.study``) are stored as ``study_theory`` for the Theory page.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from tasks import runstate
from tasks.jobs import JobError, run_key, run_params
from tasks.store import Run, RunStatus, utcnow
from tasks.study_artifacts import ANALYSIS_ARTIFACT, FOLDER_ARTIFACT, REPORT_ARTIFACT, study_dir

if TYPE_CHECKING:
    from igat.config import ExperimentConfig
    from igat.study import StudySpec
    from tasks.jobs import _Context

log = logging.getLogger("igat.tasks")
RUN = Run.__table__
OWNER_FILE = "owner.json"
# One evaluation (PGD-20 on the study's test images, every combiner) costs about one training epoch at
# cpu-mini (500 images x 21 passes x 2 combiners vs 5,000 images x 4 passes); the progress bar counts it so.
EVAL_UNITS = 1.0


# --- validating a spec ----------------------------------------------------------------------------------
def warm_start_of(spec: StudySpec) -> str | None:
    """The defense the study's bases start from (``igat.study.warm_start_of``, the rule run_study uses)."""
    from igat.study import warm_start_of as library_rule

    return library_rule(spec)


def check_study(data: StudySpec | dict[str, Any]) -> StudySpec:
    """The validated spec, or ConfigError naming the field: the spec itself, the defense, and every config the
    study will train (the recipe, its warm start, each arm), so a bad ``overrides`` entry fails at submit."""
    from pydantic import ValidationError

    from igat.config import ConfigError
    from igat.registry import UnknownNameError
    from igat.specs.defenses import DEFENSE_SPECS
    from igat.study import StudySpec, arm_config, recipe_config

    raw = data.model_dump(mode="json") if isinstance(data, StudySpec) else data
    if not isinstance(raw, dict):
        raise ConfigError([("study", f"must be a mapping of fields, got {type(raw).__name__}")])
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError.from_validation(exc) from None
    try:
        DEFENSE_SPECS.get(spec.defense)
    except UnknownNameError as exc:
        raise ConfigError([("defense", str(exc))]) from None
    try:
        base = recipe_config(spec.defense, spec, spec.seeds[0])
        warm = warm_start_of(spec)
        if warm:
            recipe_config(warm, spec, spec.seeds[0])
        for arm in spec.arms:  # the checkpoint path is only recorded here, not opened
            arm_config(arm, base, spec, "base-checkpoint.pt")
    except ConfigError as exc:
        # Every study config is the scale's recipe plus the user's overrides: a refusal comes from those.
        raise ConfigError([("overrides", f"{field}: {msg}") for field, msg in exc.errors]) from None
    return spec


def study_base_config(spec: StudySpec) -> ExperimentConfig:
    """The first seed's base recipe: what the study row records as its config (defense, data, model)."""
    from igat.study import recipe_config

    return recipe_config(spec.defense, spec, spec.seeds[0])


# --- what a study costs, and how far it is ----------------------------------------------------------------
@dataclass(frozen=True)
class StudyPlan:
    seeds: tuple[int, ...]
    warm_start: str | None
    pretrain_epochs: int
    base_max_epochs: int
    arms: tuple[str, ...]
    arm_epochs: int

    @property
    def phases_per_seed(self) -> tuple[str, ...]:
        return (*(("pretrain",) if self.warm_start else ()), "base", *self.arms)

    @property
    def training_runs(self) -> int:
        return len(self.seeds) * len(self.phases_per_seed)

    @property
    def evaluations(self) -> int:
        return len(self.seeds) * (1 + len(self.arms))

    @property
    def max_epochs(self) -> int:
        per_seed = (self.pretrain_epochs if self.warm_start else 0) + self.base_max_epochs
        return len(self.seeds) * (per_seed + len(self.arms) * self.arm_epochs)

    @property
    def units(self) -> float:
        return self.max_epochs + self.evaluations * EVAL_UNITS

    def summary(self) -> str:
        return (f"{self.training_runs} training runs ({len(self.seeds)} seeds x {', '.join(self.phases_per_seed)}) "
                f"and {self.evaluations} evaluations; at most {self.max_epochs} epochs in all")


def study_plan(spec: StudySpec) -> StudyPlan:
    return StudyPlan(seeds=tuple(spec.seeds), warm_start=warm_start_of(spec),
                     pretrain_epochs=int(spec.resolved("pretrain_epochs")),
                     base_max_epochs=int(spec.resolved("base_max_epochs")), arms=tuple(spec.arms),
                     arm_epochs=int(spec.resolved("arm_epochs")))


def study_progress(plan: StudyPlan, state: dict[str, Any], current: tuple[str, float] | None = None) -> float:
    """Done share of the plan's epochs and evaluations, from ``study.json``'s state and the phase in training
    now (``current``: its label, e.g. "seed0/igat", and the epochs it has completed, fractional). A base that
    plateaued early counts as its full ``base_max_epochs``."""

    def live(label: str, cap: float) -> float | None:
        return min(max(current[1], 0.0), cap) if current and current[0] == label else None

    done = 0.0
    for seed in plan.seeds:
        st = state.get("seeds", {}).get(str(seed), {})
        if plan.warm_start:
            done += plan.pretrain_epochs if "pretrain" in st else live(f"seed{seed}/pretrain", plan.pretrain_epochs) or 0
        base = st.get("base", {})
        now = live(f"seed{seed}/base", plan.base_max_epochs)
        done += plan.base_max_epochs if base.get("done") else now if now is not None else len(base.get("history", []))
        for arm in plan.arms:
            finished = st.get("arms", {}).get(arm, {}).get("done")
            done += plan.arm_epochs if finished else live(f"seed{seed}/{arm}", plan.arm_epochs) or 0
        done += EVAL_UNITS * len(st.get("eval", {}))
    return min(done / plan.units, 1.0) if plan.units else 0.0


def phase_done(state: dict[str, Any], label: str) -> bool:
    """Whether the phase ``label`` ("seed<S>/<pretrain|base|arm>") is complete in the study's state."""
    seed, _, part = label.partition("/")
    st = state.get("seeds", {}).get(seed.removeprefix("seed"), {})
    if part == "pretrain":
        return "pretrain" in st
    if part == "base":
        return bool(st.get("base", {}).get("done"))
    return bool(st.get("arms", {}).get(part, {}).get("done"))


def read_state(root: Path) -> dict[str, Any]:
    from igat.study import STATE_FILE

    path = root / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


_SEED_PREFIX = re.compile(r"^seed (\d+):")


def phase_text(message: str, plan: StudyPlan) -> str:
    """``run_study``'s progress line with the seed's position: "seed 1 (2/3): arm igat ..."."""
    m = _SEED_PREFIX.match(message)
    if m is None or int(m.group(1)) not in plan.seeds:
        return message
    seed = int(m.group(1))
    return f"seed {seed} ({plan.seeds.index(seed) + 1}/{len(plan.seeds)}):" + message[m.end():]


# --- the folder -----------------------------------------------------------------------------------------
def bound_study_dir(run: Any) -> Path:
    """``$IGAT_HOME/studies/<id>``, owned by this run. A folder another run left there (a recreated store
    reusing the id) is moved aside, kept for the user, so a study never resumes another's work."""
    root = study_dir(int(run.id))
    key = run_key(run)
    owner = root / OWNER_FILE
    if root.exists() and any(root.iterdir()):
        try:
            mine = json.loads(owner.read_text()).get("run_key") == key
        except (OSError, ValueError, AttributeError):
            mine = False
        if not mine:
            aside = root.with_name(f"{root.name}.foreign-{utcnow().strftime('%Y%m%dT%H%M%S')}")
            root.rename(aside)
            log.warning("study %s: %s held another run's study; moved it to %s", run.id, root, aside)
    root.mkdir(parents=True, exist_ok=True)
    owner.write_text(json.dumps({"run_key": key}))
    return root


# --- the running study --------------------------------------------------------------------------------------
class StudyTracker:
    """Connects ``run_study`` to the store: the ``progress`` and ``callbacks_for`` hooks of one attempt."""

    def __init__(self, ctx: _Context, spec: StudySpec, root: Path) -> None:
        self.ctx, self.engine, self.study_id, self.attempt = ctx, ctx.engine, ctx.run_id, ctx.attempt
        self.spec, self.root, self.plan = spec, root, study_plan(spec)
        self.state: dict[str, Any] = read_state(root)
        self.message = "starting"
        self.current: tuple[str, float] | None = None
        self.epoch_note = ""
        self._published = 0  # evaluations in the stored analysis (none stored before the first one)
        self._last_write = 0.0
        self._last_poll = 0.0
        self._stop = False
        study = ctx.run
        self.experiment_id, self.worker = study.experiment_id, study.worker

    # --- run_study's hooks ---------------------------------------------------------------------------
    def say(self, message: str) -> None:
        """A new phase starts: the finished ones' children succeed, new evaluations are published, and a
        cancel requested meanwhile stops here (an evaluation cannot be interrupted otherwise)."""
        from igat.training import TrainingCancelled

        row = self._study_row()
        if row is None or row.attempts != self.attempt or row.status != RunStatus.running:
            raise TrainingCancelled("the study was taken over by another worker")
        if row.cancel_requested:
            raise TrainingCancelled(f"cancelled before: {message}")
        self.state = read_state(self.root)
        self.reconcile()
        self.publish_analysis()
        self.message, self.current, self.epoch_note = phase_text(message, self.plan), None, ""
        self.write(force=True)

    def callbacks_for(self, label: str, cfg: ExperimentConfig) -> list[Any]:
        # The metric writer needs the library's training side (PyTorch): imported here, in the worker, so checking
        # and planning a study (the dashboard's Studies launcher) stays torch-free.
        from tasks.study_phase import PhaseCallback

        # The base is trained one epoch per call (to test the plateau): its row counts up to the maximum.
        total = self.plan.base_max_epochs if label.endswith("/base") else cfg.train.epochs
        child = self.attach_child(label, cfg, total)
        return [PhaseCallback(self, label, child, total)]

    # --- progress ---------------------------------------------------------------------------------------
    def training(self, label: str, epochs_done: float, epoch_note: str = "", force: bool = False) -> None:
        self.current, self.epoch_note = (label, epochs_done), epoch_note
        self.write(force)

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < max(self.ctx.settings.flush_seconds, 1.0):
            return
        self._last_write = now
        text = self.message + (f", {self.epoch_note}" if self.epoch_note else "")
        runstate.set_fields(self.engine, self.study_id, self.attempt, phase=text, heartbeat_at=utcnow(),
                            progress=study_progress(self.plan, self.state, self.current))

    def publish_analysis(self) -> None:
        """Store the analysis of what is evaluated so far (the dashboard shows partial results)."""
        from igat.study import analyse

        evaluated = sum(len(s.get("eval", {})) for s in self.state.get("seeds", {}).values())
        if evaluated <= self._published or "spec" not in self.state:
            return
        try:
            runstate.put_artifact(self.engine, self.study_id, ANALYSIS_ARTIFACT, analyse(self.state))
        except Exception:  # noqa: BLE001 - a display artifact must not stop the study; the end stores it again
            log.exception("study %s: could not store the partial analysis", self.study_id)
            return
        self._published = evaluated

    def finish(self, analysis: dict[str, Any]) -> None:
        from igat.study import format_report

        runstate.put_artifact(self.engine, self.study_id, ANALYSIS_ARTIFACT, analysis)
        runstate.put_artifact(self.engine, self.study_id, REPORT_ARTIFACT, {"markdown": format_report(analysis)})
        self.state = read_state(self.root)
        self.end_children(RunStatus.succeeded, None)
        verdicts = sorted({c["igat_minus_continued"]["verdict"] for c in analysis["cells"] if "igat_minus_continued" in c})
        self.message, self.current, self.epoch_note = (
            f"finished: {len(analysis['seeds_done'])} seeds; verdicts: {', '.join(verdicts) or 'none'}", None, "")
        self.write(force=True)

    # --- cancel ----------------------------------------------------------------------------------------
    def _study_row(self) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(RUN.c.cancel_requested, RUN.c.attempts, RUN.c.status)
                                .where(RUN.c.id == self.study_id)).first()

    def study_stop(self) -> bool:
        """Whether training must stop: the study's cancel flag, or the study lost to another worker."""
        now = time.monotonic()
        if self._stop or now - self._last_poll < self.ctx.settings.cancel_poll_seconds:
            return self._stop
        self._last_poll = now
        row = self._study_row()
        self._stop = (row is None or row.attempts != self.attempt or row.status != RunStatus.running
                      or bool(row.cancel_requested))
        return self._stop

    # --- children --------------------------------------------------------------------------------------
    def attach_child(self, label: str, cfg: ExperimentConfig, total_epochs: int) -> int:
        """The phase's child row (created on first use, found on resume), marked running for this attempt."""
        now = utcnow()
        values = {"config_json": cfg.to_json(), "status": RunStatus.running, "attempts": self.attempt,
                  "worker": self.worker, "cancel_requested": False, "error": None, "finished_at": None,
                  "heartbeat_at": now, "total_epochs": total_epochs}
        with self.engine.begin() as conn:
            child = conn.execute(select(RUN.c.id).where(RUN.c.parent_run_id == self.study_id, RUN.c.name == label,
                                                        RUN.c.kind == "train")).scalar()
            if child is not None:
                conn.execute(update(RUN).where(RUN.c.id == child).values(**values))
                conn.execute(update(RUN).where(RUN.c.id == child, RUN.c.started_at.is_(None)).values(started_at=now))
                return int(child)
            res = conn.execute(RUN.insert().values(
                **values, experiment_id=self.experiment_id, name=label, kind="train", preset=cfg.preset,
                dataset=cfg.data.dataset, defense=cfg.defense.name, igat=cfg.igat.enabled, seed=cfg.seed,
                tags=",".join(cfg.tags), variant=label.partition("/")[2], parent_run_id=self.study_id,
                created_at=now, started_at=now, progress=0.0, epoch=0,
                params_json=json.dumps({"study_id": self.study_id, "phase": label})))
            return int(res.inserted_primary_key[0])

    def _running_children(self) -> list[tuple[int, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(RUN.c.id, RUN.c.name).where(
                RUN.c.parent_run_id == self.study_id, RUN.c.status == RunStatus.running,
                RUN.c.attempts == self.attempt)).all()
        return [(int(r.id), str(r.name)) for r in rows]

    def reconcile(self) -> None:
        """Children whose phase the state records as complete have succeeded."""
        for child, label in self._running_children():
            if phase_done(self.state, label):
                runstate.finish(self.engine, child, RunStatus.succeeded, attempt=self.attempt)

    def end_children(self, status: RunStatus, error: str | None) -> None:
        """End this attempt's running children: complete phases succeed, the others take ``status``."""
        for child, label in self._running_children():
            done = phase_done(self.state, label) or status == RunStatus.succeeded
            runstate.finish(self.engine, child, RunStatus.succeeded if done else status,
                            error=None if done else error, attempt=self.attempt)

    def abort(self, exc: BaseException) -> None:
        """The study stops with ``exc``: its unfinished children end the same way (cancelled or failed).
        Nothing is touched when another worker owns the study now, or when this worker is shutting down
        (the study stays running and resumes when the message comes back)."""
        from igat.training import TrainingCancelled

        if isinstance(exc, KeyboardInterrupt | SystemExit):
            return
        row = self._study_row()
        if row is None or row.attempts != self.attempt:
            return
        self.state = read_state(self.root)
        cancelled = isinstance(exc, TrainingCancelled)
        status = RunStatus.cancelled if cancelled else RunStatus.failed
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        self.end_children(status, f"the study was {'cancelled' if cancelled else 'stopped by an error'}: {first}")


def store_study_theory(engine: Any, study_id: int, root: Path, say: Any) -> None:
    """Section-4 diagnostics of the study's arms (``igat.theory.study``, cheap defaults: a few hundred
    examples), stored as the artifact the Theory page reads. A failure is logged and stored as an error
    note: the study's own results stand without it. Runs again on a retry (it is not resumable; minutes)."""
    from igat.theory.constants import STUDY_ARTIFACT_NAME
    from igat.theory.study import study_theory
    from igat.training import TrainingCancelled

    say("theory diagnostics of the arms (curvature, ambiguous pairs, 0-1 loss)")
    try:
        result = study_theory(root, progress=say)
    except TrainingCancelled:  # a cancel requested meanwhile (raised by ``say``) ends the study as usual
        raise
    except Exception as exc:  # noqa: BLE001 - diagnostics must not fail a finished study
        log.exception("study %s: theory diagnostics failed", study_id)
        result = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    runstate.put_artifact(engine, study_id, STUDY_ARTIFACT_NAME, result)


def run_study_phase(ctx: _Context) -> dict[str, Any]:
    """The body of the ``igat.study`` task (``tasks.jobs.execute`` claims, heartbeats and ends the row)."""
    from igat.config import ConfigError
    from igat.study import run_study

    run = ctx.run
    try:
        spec = check_study(run_params(run))
    except ConfigError as exc:
        raise JobError(f"invalid study: {exc}") from None
    root = bound_study_dir(run)
    runstate.put_artifact(ctx.engine, ctx.run_id, FOLDER_ARTIFACT, {"path": str(root)})
    tracker = StudyTracker(ctx, spec, root)
    tracker.write(force=True)
    try:
        analysis = run_study(spec, root, progress=tracker.say, callbacks_for=tracker.callbacks_for)
        store_study_theory(ctx.engine, ctx.run_id, root, tracker.say)
    except BaseException as exc:
        tracker.abort(exc)
        raise
    tracker.finish(analysis)
    return {"study_dir": str(root), "seeds_done": analysis["seeds_done"], "cells": len(analysis["cells"])}
