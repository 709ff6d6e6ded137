import yaml

from igat.cli import main
from igat.config import ExperimentConfig
from igat.training import load_checkpoint
from tests.helpers import synthetic_config


def test_config_command_prints_recommended_defaults(capsys):
    assert main(["config", "--defense", "pgd_at"]) == 0
    cfg = ExperimentConfig.from_dict(yaml.safe_load(capsys.readouterr().out))
    assert cfg.defense.name == "pgd_at" and cfg.defense.params["steps"] == 10


def test_train_command_trains_and_summarises(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IGAT_RUNS_DIR", str(tmp_path))  # the config's output_dir must lie in the runs folder
    cfg = synthetic_config(output_dir=str(tmp_path / "out"))
    path = tmp_path / "c.yaml"
    cfg.save(path)
    assert main(["train", str(path), "--set", "train.epochs=2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint:" in out and "test_nat_acc_average" in out
    assert load_checkpoint(tmp_path / "out")["epoch"] == 2


def test_train_command_rejects_bad_config_naming_the_field(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  num_members: 0\ndefense:\n  name: pgd_at\n  params:\n    eps: -1\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.num_members" in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_list_command(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "pgd_at" in out and "average" in out


def test_commands_that_train_nothing_start_without_torch():
    """`igat config`, `igat list` and every command's parser load no PyTorch (a second or more per call on a
    2-core CPU; `igat submit` and `igat runs` only talk to the queue and the store)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = ("import contextlib, io, json, sys\n"
              "from igat.cli import build_parser, main\n"
              "build_parser()\n"
              "out = io.StringIO()\n"
              "with contextlib.redirect_stdout(out):\n"
              "    codes = [main(['config', '--defense', 'dverge', '--igat']), main(['list'])]\n"
              "print(json.dumps({'codes': codes, 'torch': 'torch' in sys.modules, 'listed': 'autoattack' in out.getvalue()}))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0], "torch": False, "listed": True}
