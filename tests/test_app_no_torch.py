"""The dashboard never loads PyTorch for its pages (issue 16: the process grew from 237 MB to 744 MB on the
first Ablation visit, and the Launch page's config checks imported it too). Each page is rendered by AppTest in a
fresh interpreter on the fixture store, which then reports whether ``torch`` was imported. The Launch page checks,
estimates and queues a run through the torch-free specs (igat.specs), and the Studies page's launcher checks, costs
and queues a study the same way; only the worker trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests import test_app as fixtures
from tests.test_app import queued_messages

db = fixtures.db  # the fixture store, requested by name
queue = fixtures.queue  # a clean Redis database for the Celery queue

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
    launched = []
    if page == "launch" and query.get("queue"):  # the Launch tests' tiny run, queued
        from tests.test_app import launch_tiny  # torch-free to import, like the page

        launch_tiny(at).button(key="launch.queue").click().run()
        launched = [s.value for s in at.success if "Queued experiment" in s.value]
        problems += [e.value for e in at.error]
    if page == "studies" and query.get("queue"):  # open the launcher, see the cost, queue a study
        at.toggle(key="studies.open").set_value(True).run()
        launched += [i.value for i in at.info if "Estimated cost" in i.value]
        at.selectbox(key="studies.dataset").set_value("synthetic")
        at.text_input(key="studies.seeds").set_value("4, 5")
        at.text_input(key="studies.name").set_value("no-torch-study").run()
        at.button(key="studies.launch").click().run()
        launched += [s.value for s in at.success if "Queued study" in s.value]
        problems += [e.value for e in at.error]
    print(json.dumps({"torch": "torch" in sys.modules, "problems": problems, "launched": launched}))
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


def test_launch_checks_estimates_and_queues_without_torch(db, queue):
    rendered = render_in_fresh_process("launch", {})
    assert not rendered["problems"] and rendered["torch"] is False, rendered
    queued = render_in_fresh_process("launch", {"queue": "1"})
    assert queued["launched"] and not queued["problems"], queued
    assert queued["torch"] is False, "validating, estimating or queueing a run imported torch"
    assert queued_messages(queue) == 1


def test_study_launcher_costs_and_queues_without_torch(db, queue):
    queued = render_in_fresh_process("studies", {"queue": "1"})
    assert not queued["problems"], queued
    assert any("Estimated cost" in m for m in queued["launched"]) and any("Queued study" in m for m in queued["launched"])
    assert queued["torch"] is False, "checking, costing or queueing a study imported torch"
    assert queued_messages(queue) == 1
