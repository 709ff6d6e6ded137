"""Checkpoints: everything needed to resume exactly, and to rebuild the ensemble for evaluation.

Format (a dict saved with torch.save):
  format, config (the ExperimentConfig as JSON), epoch (completed epochs), global_step,
  members (per-member state dicts, loadable into a plain ResNet20), extra (jointly trained modules),
  optimizers, schedulers, rng (python/numpy/torch/loader/attack generators), defense (its state),
  metrics (last epoch's metrics), binding (the run that wrote it: run key and config hash).

Security: a checkpoint is a file from a user, so it is hostile until proven otherwise. It is read
with ``torch.load(weights_only=True)`` only, so it may hold tensors and plain Python types (dict,
list, tuple, str, int, float, bool, None) and nothing else; the RNG states are stored as tensors for
that reason. A file that needs any other object is refused with :class:`CheckpointError`, and its
contents never run. Checkpoints written before this format (``igat-checkpoint-v1``, numpy RNG state)
are converted once by ``igat checkpoint convert`` (:func:`convert_checkpoint`), which itself admits
only numpy's array reconstruction besides the plain types.

Binding: a run resumes only from a checkpoint it wrote. ``binding`` holds the writer's run key
(``None`` for command-line runs, ``"<id>@<created>"`` for a stored run) and a hash of the config
fields that define the training (:func:`config_hash`); :func:`check_binding` refuses a mismatch.

Writes are atomic (tmp file + rename) so a crash never leaves a torn checkpoint; an interrupted write's
temporary file is removed on failure, and stale ones of dead processes at the next save.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from igat.errors import CheckpointError  # defined torch-free (the CLI catches it), raised here

FORMAT = "igat-checkpoint-v2"
LEGACY_FORMATS = ("igat-checkpoint-v1",)
LAST = "last.pt"
# Fields that do not change what the training computes: renaming, re-tagging, moving a run, picking a
# device, extending its epochs, logging, checkpoint cadence and the evaluation settings may all change
# between attempts without invalidating the checkpoint.
_UNBOUND_FIELDS: tuple[tuple[str, ...], ...] = (
    ("name",), ("tags",), ("device",), ("output_dir",), ("eval",), ("train", "epochs"), ("train", "log_every"),
    ("train", "checkpoint_every"), ("model", "engine"),
)


class CheckpointMismatchError(CheckpointError):
    """The checkpoint in a run's output directory was written by a different run or config."""


# --- RNG state as tensors (weights_only-loadable) ------------------------------------------------------
def _python_entry(state: tuple) -> dict[str, Any]:
    version, mt, gauss = state
    return {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss}


def _numpy_entry(state: tuple) -> dict[str, Any]:
    name, key, pos, has_gauss, cached = state
    return {"name": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": _python_entry(random.getstate()),
        "numpy": _numpy_entry(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state(entry: Any) -> tuple:
    if isinstance(entry, dict):
        return (entry["version"], tuple(int(v) for v in entry["state"].tolist()), entry["gauss"])
    return entry  # legacy tuple


def _numpy_state(entry: Any) -> tuple:
    if isinstance(entry, dict):
        key = np.asarray(entry["key"].tolist(), dtype=np.uint32)
        return (entry["name"], key, entry["pos"], entry["has_gauss"], entry["cached_gaussian"])
    return entry  # legacy tuple with an ndarray


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_python_state(state["python"]))
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- binding ------------------------------------------------------------------------------------------
def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (16 hex digits) of the config fields that define the training (``_UNBOUND_FIELDS`` dropped)."""
    data = json.loads(json.dumps(config))
    for path in _UNBOUND_FIELDS:
        node = data
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def binding_for(config: dict[str, Any], run_key: str | None) -> dict[str, Any]:
    return {"run_key": run_key, "config_hash": config_hash(config)}


def check_binding(ckpt: dict[str, Any], path: Path, config: dict[str, Any], run_key: str | None) -> None:
    """Refuse to resume from ``ckpt`` unless the same run (key) with the same training config wrote it."""
    binding = ckpt.get("binding")
    if not isinstance(binding, dict):
        raise CheckpointMismatchError(f"{path} records no run binding, so it cannot be resumed safely; "
                                      "start over (igat train --no-resume) or use another output directory")
    if binding.get("run_key") != run_key:
        writer = binding.get("run_key") or "a command-line run"
        me = run_key or "this command-line run"
        raise CheckpointMismatchError(f"{path} was written by {writer}, not by {me}; a run never resumes from "
                                      "another run's checkpoint (use another output directory)")
    want = config_hash(config)
    if binding.get("config_hash") != want:
        raise CheckpointMismatchError(
            f"{path} was written with a different training config (hash {binding.get('config_hash')} vs {want}); "
            "start over with --no-resume, use another output directory, or change only name/tags/device/eval/"
            "train.epochs between attempts")


# --- save / load ----------------------------------------------------------------------------------------
def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``last.pt.tmp<pid>`` files left by processes that died mid-write (never another live writer's)."""
    for tmp in path.parent.glob(path.name + ".tmp*"):
        pid_text = tmp.name[len(path.name) + 4:]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save({"format": FORMAT, **payload}, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read an iGAT Lab checkpoint safely (tensors and plain types only); :class:`CheckpointError` otherwise."""
    path = _resolve(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        hint = ""
        if "numpy" in str(exc):
            hint = (" If it is a checkpoint of an older iGAT Lab that you trust, convert it once with "
                    f"`igat checkpoint convert {path}`.")
        raise CheckpointError(f"{path} was refused: it holds objects other than tensors and plain types, "
                              f"and checkpoints are never unpickled.{hint}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'empty'})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (FORMAT, *LEGACY_FORMATS):
        raise CheckpointError(f"{path} is not an iGAT Lab checkpoint (format {FORMAT})")
    return ckpt


def _legacy_globals() -> list[Any]:
    """The numpy globals a v1 checkpoint's numpy RNG state needs: array reconstruction and dtypes, no code."""
    from numpy import dtypes

    reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    return [reconstruct, np.ndarray, np.dtype, dtypes.UInt32DType]


def convert_checkpoint(src: str | Path, dst: str | Path | None = None) -> Path:
    """Rewrite a v1 checkpoint (numpy RNG state) in the current format, bound to a command-line run.

    The source is read with ``weights_only=True`` plus numpy's array reconstruction only, so even this
    conversion never runs code from the file. ``dst`` defaults to ``src`` (replaced atomically).
    """
    path = _resolve(src)
    try:
        with torch.serialization.safe_globals(_legacy_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} was refused: it holds objects beyond tensors, plain types and numpy arrays, "
                              "so it is not an iGAT Lab checkpoint and cannot be converted safely") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (FORMAT, *LEGACY_FORMATS):
        raise CheckpointError(f"{path} is not an iGAT Lab checkpoint")
    rng = dict(ckpt.get("rng", {}))
    if "python" in rng and not isinstance(rng["python"], dict):
        rng["python"] = _python_entry(rng["python"])
    if "numpy" in rng and not isinstance(rng["numpy"], dict):
        rng["numpy"] = _numpy_entry(rng["numpy"])
    ckpt["rng"] = rng
    ckpt.pop("format", None)
    ckpt.setdefault("binding", binding_for(ckpt.get("config", {}), None))
    out = save_checkpoint(Path(dst) if dst else path, ckpt)
    load_checkpoint(out)  # proves the result is weights_only-loadable
    return out
