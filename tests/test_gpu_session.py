"""The prepared GPU-machine check (benchmarks/gpu_session.sh) runs end to end, here on the CPU with tiny sizes,
so that a session lent a GPU does not spend its few minutes on a broken script; and the data slice it carries is
class-balanced and in the layout igat.data reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_data_slice_copies_the_first_files_of_each_class(tmp_path, monkeypatch):
    from benchmarks.data_slice import make_slice
    src = tmp_path / "tree"
    for split, n in (("train", 5), ("test", 3)):
        for cls in ("airplane", "automobile"):
            (src / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (i, 0, 0)).save(src / split / cls / f"{i:04d}.jpg")
    counts = make_slice(src, tmp_path / "out", train_per_class=2, test_per_class=5)
    assert counts == {"train": 4, "test": 6}  # a class with fewer files than asked gives them all
    out = tmp_path / "out" / "cifar10-jpeg"
    assert sorted(p.name for p in (out / "train" / "airplane").iterdir()) == ["0000.jpg", "0001.jpg"]

    from igat.data.cifar import load_cifar

    monkeypatch.setenv("IGAT_CACHE_DIR", str(tmp_path / "cache"))
    raw = load_cifar("cifar10", root=str(tmp_path / "out"), download=False)
    assert raw.train_y.tolist() == [0, 0, 1, 1] and raw.test_x.shape == (6, 3, 32, 32)


def test_gpu_session_smoke_runs_every_step(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp_path),
           "IGAT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), "smoke"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (out / "session.log").read_text()
    for step in ("speed-fp32-b8: ok", "study: ok", "theory: ok", "done"):
        assert step in log, log
    assert "loop+cl" in (out / "speed-fp32-b8.txt").read_text()
    study = json.loads((out / "study.json").read_text())
    assert study["seeds"]["0"]["arms"]["igat"]["done"]
    theory = json.loads((out / "theory.json").read_text())
    assert set(theory["seeds"]["0"]["arms"]) == {"base", "continued", "igat"}
    assert "| attack |" in (out / "study.md").read_text()


def test_gpu_session_refuses_an_unknown_mode():
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), "gpu"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: bash benchmarks/gpu_session.sh prepare|run|smoke" in proc.stderr


def test_gpu_session_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run([shellcheck, str(ROOT / "benchmarks" / "gpu_session.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
