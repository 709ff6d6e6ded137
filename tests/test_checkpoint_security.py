"""Checkpoints are hostile input: loaded with weights_only=True, bound to the run that wrote them."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from igat.cli import main as igat_main
from igat.training import Trainer, load_checkpoint
from igat.training.checkpoint import (
    FORMAT,
    CheckpointError,
    CheckpointMismatchError,
    config_hash,
    convert_checkpoint,
    save_checkpoint,
)
from tests.helpers import synthetic_config


class _Payload:
    """Unpickling this runs ``os.system`` (what a crafted .pt does); the test checks it never happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_malicious(path: Path, marker: Path) -> Path:
    torch.save({"format": FORMAT, "config": {}, "members": [], "evil": _Payload(marker)}, path)
    return path


def _cfg(tmp_path: Path, name: str = "ck", **over):
    train = {"epochs": 1, "batch_size": 64, "eval_examples": 0, **over.pop("train", {})}
    return synthetic_config(name=name, output_dir=str(tmp_path / name), train=train, **over)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ckpt")
    return Path(Trainer(_cfg(tmp, "base")).fit().checkpoint)


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = write_malicious(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    # The same payload through pickle proves the file really is armed.
    with pytest.raises(Exception):  # noqa: B017 - torch's own loader would run it; here we only check the marker
        pickle.loads(pickle.dumps(_Payload(marker)))
        raise RuntimeError("ran")
    assert marker.exists()


def test_malicious_checkpoint_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IGAT_RUNS_DIR", str(tmp_path))  # the config's output_dir must lie in the runs folder
    marker = tmp_path / "pwned"
    path = write_malicious(tmp_path / "evil.pt", marker)
    assert igat_main(["eval", str(path), "--attacks", "natural"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    # As a warm start named in a config: refused before any training.
    cfg = _cfg(tmp_path, "warm", train={"init_checkpoint": str(path)})
    cfg_path = tmp_path / "warm.yaml"
    cfg.save(cfg_path)
    assert igat_main(["train", str(cfg_path)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "Traceback" not in err
    assert not marker.exists()


def test_checkpoint_holds_only_tensors_and_plain_types(trained):
    ckpt = torch.load(trained, weights_only=True)  # raises if anything else is inside
    assert ckpt["format"] == FORMAT
    assert ckpt["binding"] == {"run_key": None, "config_hash": config_hash(ckpt["config"])}
    assert isinstance(ckpt["rng"]["numpy"]["key"], torch.Tensor)


def test_exact_resume_still_works_with_tensor_rng_state(tmp_path):
    """Two epochs in one go == one epoch, then a resume for the second (RNG states restored from tensors)."""
    straight = Trainer(_cfg(tmp_path, "straight", train={"epochs": 2})).fit()
    Trainer(_cfg(tmp_path, "resumed", train={"epochs": 1})).fit()
    np.random.seed(123)  # disturb every generator the checkpoint must restore
    torch.manual_seed(123)
    resumed = Trainer(_cfg(tmp_path, "resumed", train={"epochs": 2})).fit()
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for sa, sb in zip(a["members"], b["members"], strict=True):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def test_a_run_never_resumes_another_runs_checkpoint(tmp_path, trained):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "last.pt").write_bytes(trained.read_bytes())
    other = synthetic_config(name="other", seed=5, optim={"lr": 0.01}, train={"epochs": 1, "eval_examples": 0})
    with pytest.raises(CheckpointMismatchError, match="different training config"):
        Trainer(other, output_dir=out)
    # The same config but another run identity (a worker's run) is refused too.
    same = load_checkpoint(trained)["config"]
    from igat.config import ExperimentConfig

    with pytest.raises(CheckpointMismatchError, match="not by run-7"):
        Trainer(ExperimentConfig.from_dict(same), output_dir=out, run_key="run-7@x")
    # Fields that do not change the training may differ between attempts (more epochs, a new name).
    cfg = ExperimentConfig.from_dict({**same, "name": "renamed", "train": {**same["train"], "epochs": 2}})
    assert Trainer(cfg, output_dir=out).start_epoch == 1


def test_unbound_checkpoint_is_not_resumed(tmp_path, trained):
    ckpt = load_checkpoint(trained)
    del ckpt["binding"]
    out = tmp_path / "old"
    save_checkpoint(out / "last.pt", {k: v for k, v in ckpt.items() if k != "format"})
    from igat.config import ExperimentConfig

    with pytest.raises(CheckpointMismatchError, match="no run binding"):
        Trainer(ExperimentConfig.from_dict(ckpt["config"]), output_dir=out)


def test_cli_train_refuses_foreign_checkpoint_in_one_line(tmp_path, trained, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(trained.read_bytes())
    cfg = _cfg(tmp_path, "mine", seed=3)
    cfg_path = tmp_path / "mine.yaml"
    cfg.save(cfg_path)
    assert igat_main(["train", str(cfg_path), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "different training config" in err and "\n" not in err


def _legacy_copy(src: Path, dst: Path) -> Path:
    """The previous format: numpy RNG state as an ndarray tuple, no binding (what older versions wrote)."""
    ckpt = load_checkpoint(src)
    ckpt["format"] = "igat-checkpoint-v1"
    ckpt.pop("binding")
    ckpt["rng"]["numpy"] = np.random.get_state()
    ckpt["rng"]["python"] = __import__("random").getstate()
    torch.save(ckpt, dst)
    return dst


def test_legacy_checkpoint_is_refused_then_converted_once(tmp_path, trained, capsys):
    old = _legacy_copy(trained, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="igat checkpoint convert"):
        load_checkpoint(old)
    assert igat_main(["checkpoint", "convert", str(old)]) == 0
    ckpt = load_checkpoint(old)
    assert ckpt["format"] == FORMAT and ckpt["binding"]["run_key"] is None
    state = np.random.get_state()
    from igat.training.checkpoint import set_rng_state

    set_rng_state(ckpt["rng"])
    np.random.set_state(state)


def test_convert_refuses_a_malicious_file(tmp_path):
    marker = tmp_path / "pwned"
    path = write_malicious(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="cannot be converted safely"):
        convert_checkpoint(path)
    assert not marker.exists()


def test_interrupted_save_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    stale = tmp_path / "last.pt.tmp999999999"  # a pid that cannot be alive
    stale.write_bytes(b"torn")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(target, {"x": 1})
    assert not list(tmp_path.glob("last.pt.tmp*")), "the failed write and the dead writer's file are both removed"
