"""Helpers shared by CLI commands: config loading with readable errors, progress output."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from igat.config import ConfigError, ExperimentConfig, with_overrides
from igat.config_input import config_error_line


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def load_config(path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML/JSON config and apply ``field.path=value`` overrides; raises ConfigError."""
    cfg = ExperimentConfig.load(path)
    return with_overrides(cfg, overrides) if overrides else cfg


def format_config_error(exc: ConfigError) -> str:
    """One line, whatever the config held: scripts and people read the first line of stderr."""
    return config_error_line(exc.errors)


# --- where a command-line run may write ------------------------------------------------------------
RUNS_DIR_ENV = "IGAT_RUNS_DIR"


def runs_root() -> Path:
    """The folder `igat train` / `igat ablate` write runs into: $IGAT_RUNS_DIR, else ./runs."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs").resolve()


def output_dir_for(cfg: ExperimentConfig, cli_output_dir: str | None = None) -> Path:
    """The checkpoint folder of a command-line run.

    ``--output-dir`` is typed by the user and used as given. A config file may come from anyone (a
    colleague, the dashboard, a download), so its ``output_dir`` must resolve - symlinks and ``..``
    included - to a sub-folder of :func:`runs_root`; the default is ``<runs root>/<name>-seed<seed>``,
    safe because names are plain."""
    if cli_output_dir:
        return Path(cli_output_dir)
    root = runs_root()
    if cfg.output_dir is None:
        return root / f"{cfg.name}-seed{cfg.seed}"
    target = Path(cfg.output_dir).resolve()
    if target == root or not target.is_relative_to(root):
        raise ConfigError([("output_dir", f"{cfg.output_dir} resolves to {target}, not a folder inside the runs "
                            f"folder {root}; use a path inside it, set {RUNS_DIR_ENV}, or pass --output-dir")])
    return target


def check_init_checkpoint(cfg: ExperimentConfig, output_dir: Path, resume: bool) -> None:
    """Refuse a warm-start checkpoint that is not there before any data is loaded (a resumed run
    continues from its own last.pt and does not read it)."""
    path = cfg.train.init_checkpoint
    if not path or (resume and (output_dir / "last.pt").is_file()):
        return
    p = Path(path)
    if not (p.is_file() or (p.is_dir() and (p / "last.pt").is_file())):
        raise ConfigError([("train.init_checkpoint", f"checkpoint not found: {path}")])


def prepare_output_dir(path: Path, field: str = "output_dir") -> None:
    """Create ``path`` and prove it writable now rather than after the first epoch."""
    if path.exists() and not path.is_dir():
        raise ConfigError([(field, f"{path} exists and is not a directory")])
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError([(field, f"{path} is not writable: {exc.strerror or exc}")]) from None
