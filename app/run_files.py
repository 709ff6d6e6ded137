"""What the Runs page offers to download for one run: its config (YAML), its results (CSV) and its checkpoint.

The config is dumped from the stored JSON with ``yaml.safe_dump`` (what ``ExperimentConfig.to_yaml`` writes),
not re-validated: the download is the config exactly as the run used it, even one a later version would refuse.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.engine import Engine

from tasks.store import EvalResult, Run

MAX_CHECKPOINT_BYTES = 500 * 1024 * 1024  # larger checkpoints are copied from their path, not through a browser
RESULT_COLUMNS = ["run_id", "target", "combiner", "attack", "accuracy", "num_examples", "ci_low", "ci_high",
                  "created_at", "extra_json"]


def config_yaml(engine: Engine, run_id: int) -> str | None:
    """The run's stored config as YAML (None: no such run)."""
    run = Run.__table__
    with engine.connect() as conn:
        text = conn.execute(select(run.c.config_json).where(run.c.id == run_id)).scalar()
    return None if text is None else yaml.safe_dump(json.loads(text), sort_keys=False)


def results_csv(engine: Engine, run_id: int) -> str:
    """Every stored EvalResult row of the run (ensemble and members) with its 95 % Wilson interval, as CSV."""
    ev = EvalResult.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(*(ev.c[name] for name in RESULT_COLUMNS)).where(ev.c.run_id == run_id)
                            .order_by(ev.c.id)).all()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for row in rows:
        writer.writerow(["" if v is None else v.isoformat() if hasattr(v, "isoformat") else v for v in row])
    return out.getvalue()


@dataclass(frozen=True)
class CheckpointOffer:
    """Whether the checkpoint can be downloaded: ``path`` when it can, else ``message`` says why not."""

    path: Path | None
    size: int
    message: str


def checkpoint_offer(checkpoint_path: str, limit: int | None = None) -> CheckpointOffer:
    """The run's checkpoint file if it exists and is at most ``limit`` bytes (default MAX_CHECKPOINT_BYTES);
    the file itself is read only when the user downloads it (:func:`read_checkpoint`)."""
    from tasks.api import size_text

    limit = MAX_CHECKPOINT_BYTES if limit is None else limit
    if not checkpoint_path:
        return CheckpointOffer(None, 0, "this run has no checkpoint")
    path = Path(checkpoint_path)
    try:
        size = path.stat().st_size if path.is_file() else -1
    except OSError:
        size = -1
    if size < 0:
        return CheckpointOffer(None, 0, f"the checkpoint {path} is not there (moved or deleted)")
    if size > limit:
        return CheckpointOffer(None, size, f"the checkpoint is {size_text(size)}, more than the {size_text(limit)} "
                                           f"a browser download allows here; copy it from {path}")
    return CheckpointOffer(path, size, f"{path.name}, {size_text(size)}")


def read_checkpoint(path: Path) -> bytes:
    return path.read_bytes()
