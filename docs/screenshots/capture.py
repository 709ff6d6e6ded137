"""Retake the README screenshots from a running dashboard (``igat up``) that holds a real experiment.

Each page is opened with the runs it should show, left to settle (Streamlit's script run over, charts drawn)
and captured at 1400 x 1000 into this folder. The README says which experiment the pictures show; this
script only takes them.

Usage:
  python docs/screenshots/capture.py --base http://127.0.0.1:8601 --run 2 --compare 2,3 --members 3 --ablation 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"


def settle(page, extra: float) -> None:
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=120_000)
    page.wait_for_selector("[data-testid=stStatusWidget]", state="detached", timeout=120_000)
    time.sleep(extra)  # Plotly draws after the script run ends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the dashboard's URL")
    ap.add_argument("--run", type=int, required=True, help="the run shown on Runs and Live")
    ap.add_argument("--compare", required=True, help="comma-separated run ids for Compare")
    ap.add_argument("--members", type=int, required=True, help="an iGAT run for Members")
    ap.add_argument("--ablation", type=int, required=True, help="an ablation experiment id")
    ap.add_argument("--overlay", default="", help="comma-separated run ids overlaid on Live")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    shots = [("launch", "/launch", 1.0, None),
             ("runs", f"/?run={args.run}", 1.0, None),
             ("live", f"/live?run={args.run}", 3.0, "overlay"),
             ("compare", f"/compare?runs={args.compare}", 3.0, None),
             ("members", f"/members?run={args.members}", 3.0, None),
             ("ablation", f"/ablation?exps={args.ablation}", 3.0, None)]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name, path, extra, action in shots:
            page.goto(args.base + path)
            settle(page, extra)
            if action == "overlay" and args.overlay:
                box = page.get_by_role("combobox", name="Runs to draw with this one")
                for rid in args.overlay.split(","):
                    box.click()
                    box.fill(f"#{rid} ")  # the multiselect filters its options by the typed text
                    page.keyboard.press("Enter")
                    settle(page, 0.5)
                page.keyboard.press("Escape")
                settle(page, extra)
            page.screenshot(path=str(OUT / f"{name}.png"))
            print(f"{name}: {OUT / (name + '.png')}")
        browser.close()


if __name__ == "__main__":
    main()
