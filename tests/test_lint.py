import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is a dev dependency; install with pip install -e '.[dev]'")
    proc = subprocess.run([ruff, "check", "igat", "tasks", "app", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_library_has_no_web_or_queue_imports():
    # igat/ is the pure-PyTorch library: the dashboard and the queue are thin layers over it.
    forbidden = ("streamlit", "celery", "redis", "sqlmodel", "sqlalchemy", "plotly", "tasks", "app")
    offenders = []
    for path in (ROOT / "igat").rglob("*.py"):
        if path.parts[-2] == "cli":  # the CLI may start workers/dashboard lazily
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            for mod in forbidden:
                if stripped.startswith((f"import {mod}", f"from {mod} ", f"from {mod}.")):
                    offenders.append(f"{path.relative_to(ROOT)}: {stripped}")
    assert not offenders, offenders
