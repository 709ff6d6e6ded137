"""Train like ``igat train`` but also keep every epoch's metrics and per-member statistics.

``igat train`` shows a progress bar and stores only the last epoch's metrics in the checkpoint;
the per-member statistics (iGAT's allocation counts per member and class, rank histogram,
per-member natural/adversarial accuracy on the training batches) reach callbacks only. This
script adds ``HistoryCallback`` and writes them to ``<output_dir>/history.json``.

    OMP_NUM_THREADS=1 python benchmarks/train_with_history.py benchmarks/configs/adp-igat.yaml \
        --device cpu [--set FIELD=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from igat.cli.common import ProgressBar, load_config
from igat.training import Trainer
from igat.training.callbacks import HistoryCallback


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    args = ap.parse_args(argv)
    overrides = list(args.overrides) + ([f"device={args.device}"] if args.device else [])
    cfg = load_config(args.config, overrides)
    history = HistoryCallback()
    started = time.time()
    trainer = Trainer(cfg, [ProgressBar(cfg.train.epochs), history])
    result = trainer.fit()
    out = {
        "config": cfg.to_dict(),
        "data_source": trainer.dataset.source,
        "wall_seconds": time.time() - started,  # includes data loading and model construction
        "fit_seconds": result.seconds,
        "checkpoint": result.checkpoint,
        "epochs": [{"epoch": e, **m} for e, m in history.epochs],
        "member_stats": [{"epoch": e, **asdict(s)} for e, s in history.member_stats],
    }
    path = Path(trainer.output_dir) / "history.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"\ncheckpoint: {result.checkpoint}\nhistory: {path}\nfit: {result.seconds:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
