"""End-to-end: `igat up` (embedded broker, a worker, the dashboard) driven by a real headless Chromium.

Launches two seeds of a small synthetic experiment from the Launch form (YAML import + form edits), follows
the first on the Live page from step progress inside its first epoch to its evaluation phase, watches both
reach ``succeeded`` on the Runs page, overlays their training curves on Compare (a switch draws them) and
exports its chart as a PNG whose pixels have the page's colours. Screenshots of every page go to
``test-output/screenshots/`` at the repo root. Uses Debian's /usr/bin/chromium through Playwright (never a browser download).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

# Sized so the first epoch lasts long enough to be seen in progress (100 steps of 2 ResNet-20 members on 32x32
# images: ~30 s on a 2-core CPU) and the evaluation too (PGD-20 on 128 examples).
TINY_YAML = """name: browser-smoke
device: cpu
tags: [browser]
data: {dataset: synthetic, synthetic_train_size: 6400, synthetic_test_size: 128, synthetic_image_size: 32, synthetic_classes: 4}
model: {num_members: 4}
defense: {name: standard}
optim: {name: sgd, lr: 0.05}
train: {epochs: 5, batch_size: 64, eval_examples: 32, eval_pgd_steps: 2, log_every: 1}
eval: {num_examples: 128, batch_size: 64, attacks: [{name: natural}, {name: pgd, params: {steps: 20}}]}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"igat up exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"dashboard not healthy after {timeout:.0f} s")


@pytest.fixture
def igat_up(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    pytest.importorskip("playwright.sync_api")
    port = free_port()
    home = tmp_path / "igat-home"
    env = {k: v for k, v in os.environ.items() if k not in ("IGAT_BROKER_URL", "IGAT_DATABASE_URL", "IGAT_RESULT_BACKEND")}
    env.update(IGAT_HOME=str(home), PYTHONUNBUFFERED="1")
    log = (tmp_path / "igat-up.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "igat", "up", "--port", str(port), "--no-browser"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc, 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        # igat up stops its broker, worker and dashboard on SIGTERM; its process group is ours to end.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
        log.close()
        print((tmp_path / "igat-up.log").read_text()[-3000:])


def settle(page, extra: float = 1.0) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_selector("[data-testid=stApp]", timeout=60_000)
    time.sleep(0.5)
    page.wait_for_selector("[data-testid=stStatusWidget]", state="detached", timeout=120_000)
    time.sleep(extra)


def follow_progress(page, until: str, timeout: float) -> list[str]:
    """The Live page's progress-bar texts, read every half second as its fragment refreshes, until one contains
    ``until`` (or the run ended, or ``timeout`` seconds passed)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bar = page.locator("[data-testid=stProgress]").first
        try:
            text = bar.inner_text(timeout=2_000)
        except Exception:  # noqa: BLE001 - between two fragment runs the bar may be briefly absent
            text = ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if until in text or text.startswith(("succeeded", "failed", "cancelled")):
            break
        time.sleep(0.5)
    return seen


def shot(page, name: str, out_dir: Path) -> None:
    path = out_dir / f"{name}.png"
    page.screenshot(path=str(path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / path.name)


# Two real training runs and their evaluations: ~3 minutes on an idle 2-core CPU, several times that on a busy one.
@pytest.mark.timeout(2700)
def test_launch_watch_and_compare_in_a_real_browser(igat_up, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base = igat_up
    out = tmp_path / "screenshots"
    out.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            # Every asset (favicon included) must come from the dashboard itself: it runs without the internet.
            elsewhere: list[str] = []
            page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else elsewhere.append(r.url))

            # Empty Runs page: says what to do and links to Launch.
            page.goto(base + "/")
            settle(page)
            expect(page.get_by_text("No runs yet")).to_be_visible()

            # Launch: import a tiny config as YAML, then edit fields of the form.
            page.goto(base + "/launch")
            settle(page)
            page.get_by_text("YAML import / export").click()
            area = page.get_by_label("…or paste YAML / JSON")
            area.fill(TINY_YAML)
            area.press("Tab")  # commit the text area
            settle(page)
            page.get_by_role("button", name="Load into the form").click()
            settle(page)
            expect(page.get_by_text("Loaded config 'browser-smoke' from YAML")).to_be_visible()
            for label, value in (("Members (N)", "2"), ("Epochs", "1"), ("Steps per epoch", "100")):
                field = page.get_by_role("spinbutton", name=label, exact=True)
                field.fill(value)
                field.press("Tab")  # commit the edit: the page reruns with it
                settle(page)
            seeds = page.get_by_role("textbox", name="Seeds", exact=True)
            seeds.fill("0, 1")
            seeds.press("Tab")
            settle(page)
            # The YAML download is the form as it is now, edits included (nothing was queued or saved yet).
            with page.expect_download() as download:
                page.get_by_role("button", name="Download this config (YAML)").click()
            exported = yaml.safe_load(Path(download.value.path()).read_text())
            assert exported["model"]["num_members"] == 2 and exported["train"]["epochs"] == 1
            assert exported["train"]["steps_per_epoch"] == 100 and exported["name"] == "browser-smoke"
            shot(page, "launch", out)
            page.get_by_role("button", name="Queue", exact=True).click()
            settle(page)
            note = page.get_by_text(re.compile(r"Queued experiment #\d+: run\(s\) #\d+"))
            expect(note).to_be_visible()
            run_ids = [int(i) for i in re.findall(r"#(\d+)", note.inner_text().split("run(s)", 1)[1])]
            assert len(run_ids) == 2, note.inner_text()
            run_id, other_id = run_ids

            # Live: the bar moves inside the first epoch (step k of 100), then says the run is evaluating.
            page.goto(base + f"/live?run={run_id}")
            settle(page)
            seen = follow_progress(page, until="evaluating", timeout=1800)
            steps = [int(m.group(1)) for t in seen if (m := re.search(r"epoch 1/1, step (\d+) of 100", t))]
            assert any(0 < k < 100 for k in steps), f"no step progress inside the first epoch in {seen[:20]}"
            assert any("evaluating" in t for t in seen), seen[-5:]
            shot(page, "live-evaluating", out)

            # Runs: the status badges refresh (fragment) until both runs succeeded.
            page.goto(base + f"/?run={run_id}")
            settle(page)
            expect(page.get_by_text("succeeded 2")).to_be_visible(timeout=1_800_000)
            settle(page)
            shot(page, "runs", out)

            # Live curves of the finished run.
            page.goto(base + f"/live?run={run_id}")
            settle(page, 2.0)
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            shot(page, "live", out)

            # Compare: the grouped bar chart, Table 1, and both runs' training curves on one chart.
            page.goto(base + f"/compare?runs={run_id},{other_id}")
            settle(page, 2.0)
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            expect(page.get_by_text(re.compile("Table 1: accuracy"))).to_be_visible()
            expect(page.get_by_text("2 run(s) selected")).to_be_visible()
            assert page.locator(".js-plotly-plot .bars path").count() >= 2  # natural and PGD bars (average + max)
            # The curves are a second chart, drawn on request (a fragment reruns just that section).
            page.get_by_text("Draw the training curves of the 2 run(s)").click()
            settle(page, 2.0)
            curves = page.locator(".js-plotly-plot", has=page.locator("text=/2 run\\(s\\)/"))
            expect(curves).to_have_count(1)
            assert curves.locator(".scatterlayer .trace").count() == 2, "the two runs' curves are not overlaid"
            legend = curves.locator(".legend .traces .legendtext").all_text_contents()  # SVG text: no innerText
            assert [t.split()[0] for t in legend] == [f"#{run_id}", f"#{other_id}"], legend
            shot(page, "compare", out)
            # The exported PNG has the page's colours, not black bars.
            page.get_by_text("Export: Table 1 / Table 2").click()  # the export section is built when opened
            page.get_by_role("button", name="Render PNG").click()
            settle(page)
            with page.expect_download() as download:
                page.get_by_role("button", name="Download PNG").click()
            png = Image.open(Path(download.value.path())).convert("RGB")
            colours = png.getcolors(maxcolors=1 << 20)
            assert len(colours) > 1, "the PNG is all one colour"
            blue = sum(n for n, (r, g, b) in colours if abs(r - 0x00) <= 8 and abs(g - 0x68) <= 8 and abs(b - 0xC9) <= 8)
            assert blue > png.width * png.height // 200, "no bar in the page's first colour (#0068c9)"

            # Members: per-member robustness of the final evaluation.
            page.goto(base + f"/members?run={run_id}")
            settle(page, 2.0)
            expect(page.get_by_role("heading", name="Per-member robustness (final evaluation)")).to_be_visible()
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            shot(page, "members", out)
            assert not elsewhere, f"fetched from outside the dashboard: {sorted(set(elsewhere))}"
        finally:
            browser.close()
