"""What one kind of Streamlit element costs a full page load in headless Chromium on this machine.

A one-page Streamlit app draws a title and then, by the ``?v=`` query, nothing more ("base") or 20 elements of one
kind (number inputs, the same with help tooltips, selectboxes, radios, multiselects, buttons, checkboxes, text
inputs, Markdown), one or five small Plotly charts, or one or two dataframes. Each variant is loaded ``--visits``
times, the variants interleaved, and timed like ``dashboard_pages.py`` (the page's own clock, checked every animation
frame, until the script run is over and every chart drawn). Printed per variant: the median wall time and the CPU
seconds of the browser and server processes during a visit, each also as the difference to "base".

It says which elements are worth drawing only on request: a page pays for each element, and once per load for
each lazily loaded component (Plotly, the dataframe grid) it uses.

Usage:
  python benchmarks/streamlit_elements.py [--visits 8] [--variants base,num20,...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dashboard_pages as B  # noqa: E402

APP = '''
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

v = st.query_params.get("v", "base")
st.title("elements")
rng = np.random.default_rng(0)
if v == "num20":
    for i in range(20): st.number_input(f"n{i}", key=f"n{i}", value=1.0)
elif v == "num20help":
    for i in range(20): st.number_input(f"n{i}", key=f"n{i}", value=1.0, help="some help text")
elif v == "sel20":
    for i in range(20): st.selectbox(f"s{i}", ["a", "b", "c"], key=f"s{i}")
elif v == "radio20":
    for i in range(20): st.radio(f"r{i}", ["a", "b", "c"], key=f"r{i}", horizontal=True)
elif v == "ms20":
    for i in range(20): st.multiselect(f"m{i}", ["a", "b", "c"], key=f"m{i}")
elif v == "btn20":
    for i in range(20): st.button(f"b{i}", key=f"b{i}")
elif v == "chk20":
    for i in range(20): st.checkbox(f"c{i}", key=f"c{i}")
elif v == "text20":
    for i in range(20): st.text_input(f"x{i}", key=f"x{i}")
elif v == "md20":
    for i in range(20): st.markdown(f"**text {i}** some words")
elif v == "plot1":
    st.plotly_chart(go.Figure(go.Scatter(x=list(range(50)), y=rng.random(50))), key="p0")
elif v == "plot5":
    for i in range(5): st.plotly_chart(go.Figure(go.Scatter(x=list(range(50)), y=rng.random(50))), key=f"p{i}")
elif v == "df":
    st.dataframe(pd.DataFrame(rng.random((50, 20))))
elif v == "df2":
    st.dataframe(pd.DataFrame(rng.random((50, 20))))
    st.dataframe(pd.DataFrame(rng.random((10, 8))))
'''
VARIANTS = "base,num20,num20help,sel20,radio20,ms20,btn20,chk20,text20,md20,plot1,plot5,df,df2"


def cpu_seconds() -> float:
    """User + system CPU seconds of every Chromium and Python process (the browser, this script, the server)."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] and ("chrom" in proc.info["name"] or "python" in proc.info["name"]):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visits", type=int, default=8)
    ap.add_argument("--variants", default=VARIANTS)
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if "base" not in variants:
        variants.insert(0, "base")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="igat-elements-") as work:
        script = Path(work) / "elements.py"
        script.write_text(APP)
        server, base = B.start_streamlit(script, Path(work))
        try:
            B.wait_healthy(base, 60, "the elements page's server")
            wall: dict[str, list[float]] = {v: [] for v in variants}
            cpu: dict[str, list[float]] = {v: [] for v in variants}
            with sync_playwright() as p:
                browser = B.launch_browser(p)
                page = B.new_page(browser)
                for v in variants:  # each variant's code and data once, untimed
                    B.settle_seconds(page, f"{base}/?v={v}")
                for _ in range(args.visits):
                    for v in variants:
                        before = cpu_seconds()
                        wall[v].append(B.settle_seconds(page, f"{base}/?v={v}"))
                        cpu[v].append(cpu_seconds() - before)
                browser.close()
        finally:
            B.stop(server)
    w0, c0 = statistics.median(wall["base"]), statistics.median(cpu["base"])
    print(f"medians of {args.visits} full loads per variant, interleaved\n")
    print("| variant | wall (s) | wall - base (s) | CPU (s) | CPU - base (s) |\n|---|---|---|---|---|")
    for v in variants:
        w, c = statistics.median(wall[v]), statistics.median(cpu[v])
        print(f"| {v} | {w:.3f} | {w - w0:+.3f} | {c:.3f} | {c - c0:+.3f} |")


if __name__ == "__main__":
    main()
