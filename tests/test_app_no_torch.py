"""The dashboard's reading pages never load PyTorch (issue 16: the process grew from 237 MB to 744 MB on the
first Ablation visit). Each page is rendered by AppTest in a fresh interpreter on the fixture store, which
then reports whether ``torch`` was imported. Only launching (the Launch page, a study's launcher) validates
configs against the defense registry, whose implementations need PyTorch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests import test_app as fixtures

db = fixtures.db  # the fixture store, requested by name

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    from streamlit.testing.v1 import AppTest
    page, query = sys.argv[1], json.loads(sys.argv[2])
    at = AppTest.from_file(sys.argv[3], default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page != "runs":
        at.switch_page(f"views/{page}.py")
        at.run()
    problems = [e.value for e in at.exception] + [e.value for e in at.error if "hit an error" in e.value]
    print(json.dumps({"torch": "torch" in sys.modules, "problems": problems}))
""")


def render_in_fresh_process(page: str, query: dict[str, str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, page, json.dumps(query), fixtures.MAIN], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reading_pages_do_not_import_torch(db):
    ids = db["ids"]
    pages = [("runs", {}), ("live", {"run": str(ids["running"])}),
             ("compare", {"runs": f"{ids['adp0']},{ids['igat0']},{ids['hard']}"}),
             ("members", {"run": str(ids["igat0"])}), ("ablation", {}), ("studies", {})]
    loaded = {}
    for page, query in pages:
        result = render_in_fresh_process(page, query)
        assert not result["problems"], (page, result["problems"])
        loaded[page] = result["torch"]
    assert not any(loaded.values()), f"pages that imported torch: {[p for p, t in loaded.items() if t]}"
