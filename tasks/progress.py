"""Where a running run is and how long it has left, as the workers report it to the dashboard.

* The phase text (``run.phase``): "training: epoch 1/3, step 4 of 8", "evaluating: PGD on ensemble/average,
  2 of 5 (3,072 of 10,000 examples)".
* The time left: the artifact ``eta`` = {"seconds", "scope", "written_at"}; the dashboard counts it down from
  ``written_at``. ``scope`` is "run" (everything left) or "training" (the training only: the evaluation that
  follows has no time estimate on this device). A linear extrapolation of the progress bar cannot do this: the
  final evaluation (AutoAttack, SignHunter on the test set) often costs more than the training, and a bar that
  gives it a fixed share predicts seconds where minutes remain.
* The evaluation's progress and time are measured in member passes (``igat.protocols``' cost model) rather
  than in rows: one AutoAttack row costs thousands of natural rows. Before the first measured batch the time
  comes from the cost model's measured seconds per pass (CPU only); after it, from this attempt's own rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from tasks import runstate
from tasks.store import utcnow

ETA_ARTIFACT = "eta"
SCOPE_RUN = "run"
SCOPE_TRAINING = "training"


def write_eta(engine: Engine, run_id: int, seconds: float | None, scope: str) -> None:
    runstate.put_artifact(engine, run_id, ETA_ARTIFACT,
                          {"seconds": seconds, "scope": scope, "written_at": utcnow().isoformat()})


def eta_left(record: dict[str, Any] | None, now: datetime) -> float | None:
    """Seconds left by a stored ``eta`` record, counted down since it was written (never below 0)."""
    if not record or record.get("seconds") is None:
        return None
    try:
        written = datetime.fromisoformat(record["written_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(float(record["seconds"]) - (now - written).total_seconds(), 0.0)


def training_phase(epoch: int, total_epochs: int, step: int, steps: int, probe: str) -> str:
    """"training: epoch 1/3, step 4 of 8" (1-based epoch and step); the last step says what follows it."""
    text = f"training: epoch {epoch}/{total_epochs}, step {step} of {steps}"
    return text + (f", then the end-of-epoch probe ({probe})" if step >= steps and probe else "")


def probe_text(train: dict[str, Any]) -> str:
    """The per-epoch probe of a config's ``train`` section, e.g. "natural + PGD-10 on 512 test examples"."""
    examples, steps = int(train.get("eval_examples") or 0), int(train.get("eval_pgd_steps") or 0)
    if not examples:
        return ""
    return f"natural{f' + PGD-{steps}' if steps else ''} on {examples:,} test examples"


def seconds_left(elapsed: float, done: float, left: float) -> float | None:
    """Linear extrapolation of ``left`` units of work from ``done`` units in ``elapsed`` seconds."""
    return None if done <= 0 else elapsed * left / done


# The measured pace replaces the cost model's once this share of the evaluation is done: the first rows
# (natural accuracy: forward passes only) are dominated by per-row overheads and would predict far too long.
MEASURED_SHARE = 0.02


class EvalClock:
    """An evaluation's progress (0..1, by cost) and time left. ``costs``: member passes per planned row key;
    ``done``: keys already stored (a resumed evaluation); ``prior``: seconds per member pass before enough is
    measured (None: unknown on this device, so the first measurement is used)."""

    def __init__(self, costs: dict[str, float], done: set[str], prior: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.costs, self.prior, self.clock = costs, prior, clock
        self.total = sum(costs.values()) or 1.0
        self.finished = sum(c for k, c in costs.items() if k in done)
        self.measured = 0.0  # passes computed by this attempt (finished rows + the current row's part)
        self.current: str | None = None
        self.part = 0.0  # share of the current row done
        self.t0: float | None = None  # the first row's start: setting up the evaluation is not its pace

    def start(self, key: str) -> None:
        self.current, self.part = key, 0.0
        if self.t0 is None:
            self.t0 = self.clock()

    def batch(self, share: float) -> None:
        """``share`` of the current row's examples just finished."""
        before = self.part
        self.part = min(self.part + share, 1.0)
        self.measured += (self.part - before) * self.costs.get(self.current or "", 0.0)

    def finish(self, key: str) -> None:
        cost = self.costs.get(key, 0.0)
        self.measured += (1.0 - self.part) * cost if key == self.current else 0.0
        self.finished += cost
        self.current, self.part = None, 0.0

    def _done(self) -> float:
        return self.finished + self.part * self.costs.get(self.current or "", 0.0)

    def fraction(self) -> float:
        return min(self._done() / self.total, 1.0)

    def seconds_left(self) -> float | None:
        left = max(self.total - self._done(), 0.0)
        enough = self.measured >= MEASURED_SHARE * self.total or (self.prior is None and self.measured > 0)
        if enough and self.t0 is not None:
            return seconds_left(self.clock() - self.t0, self.measured, left)
        return None if self.prior is None else left * self.prior
