"""Helpers shared by CLI commands: config loading with readable errors, progress output."""

from __future__ import annotations

import sys
from pathlib import Path

from igat.config import ConfigError, ExperimentConfig, with_overrides
from igat.training.callbacks import Callback


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def load_config(path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML/JSON config and apply ``field.path=value`` overrides; raises ConfigError."""
    p = Path(path)
    if not p.exists():
        raise ConfigError([("CONFIG", f"file not found: {p}")])
    cfg = ExperimentConfig.load(p)
    return with_overrides(cfg, overrides) if overrides else cfg


def format_config_error(exc: ConfigError) -> str:
    return "invalid configuration:\n" + "\n".join(f"  {field}: {msg}" for field, msg in exc.errors)


class ProgressBar(Callback):
    """A tqdm bar per epoch, with the latest loss and the epoch's test probe."""

    def __init__(self, total_epochs: int) -> None:
        self.total_epochs = total_epochs
        self.bar = None
        self.steps_per_epoch = 0

    def on_run_start(self, info):
        self.steps_per_epoch = info["steps_per_epoch"]
        src = info.get("data_source", "")
        resumed = f", resuming after epoch {info['start_epoch']}" if info["start_epoch"] else ""
        print(f"training on {info['device']} ({src}){resumed}; checkpoints in {info['output_dir']}", file=sys.stderr)
        self._bar(info["start_epoch"] + 1)  # started now, so its rate counts the steps before the first log

    def _bar(self, epoch: int):
        from tqdm import tqdm

        if self.bar is None or self.bar.desc != f"epoch {epoch}/{self.total_epochs}":
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{self.total_epochs}", file=sys.stderr,
                            leave=False, dynamic_ncols=True)
        return self.bar

    def on_step(self, epoch, step, metrics):
        bar = self._bar(epoch)
        done = (step - 1) % max(self.steps_per_epoch, 1) + 1
        bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.3f}", refresh=False)
        bar.update(max(done - bar.n, 0))  # update(), not n = ...: tqdm's rate and ETA need the increments

    def on_epoch_end(self, epoch, metrics, member_stats):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        probe = ", ".join(f"{k[5:]}={v:.3f}" for k, v in metrics.items() if k.startswith("test_") and "member_" not in k)
        print(f"epoch {epoch}/{self.total_epochs}: loss={metrics.get('train_loss', float('nan')):.4f} "
              f"{probe} ({metrics['epoch_seconds']:.1f}s)", file=sys.stderr)
        if epoch < self.total_epochs:
            self._bar(epoch + 1)
