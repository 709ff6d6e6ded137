"""iGAT Lab dashboard: the Streamlit entry script (``streamlit run app/main.py`` or ``igat up``).

Only the navigation lives here; each page is a file in ``app/views`` and shared code is in
``app/common.py`` and friends (pages never import this script).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/main.py` puts app/ (not the repo root) on sys.path; make `import app.*`,
# `igat` and `tasks` importable from a source checkout too.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app.common import (  # noqa: E402
    PAGE_ABLATION,
    PAGE_COMPARE,
    PAGE_LAUNCH,
    PAGE_LIVE,
    PAGE_MEMBERS,
    PAGE_RUNS,
    PAGE_STUDIES,
    PAGE_THEORY,
    VIEWS_DIR,
    favicon,
)

st.set_page_config(page_title="iGAT Lab", page_icon=favicon(), layout="wide")

experiments = [
    st.Page(PAGE_RUNS, title="Runs", icon=":material/list:", default=True),
    st.Page(PAGE_LAUNCH, title="Launch", icon=":material/rocket_launch:"),
    st.Page(PAGE_LIVE, title="Live training", icon=":material/monitoring:"),
    st.Page(PAGE_STUDIES, title="Studies", icon=":material/query_stats:"),
]
analysis = [
    st.Page(PAGE_COMPARE, title="Compare", icon=":material/compare_arrows:"),
    st.Page(PAGE_MEMBERS, title="Members", icon=":material/groups:"),
    st.Page(PAGE_ABLATION, title="Ablation", icon=":material/science:"),
]
# The Theory page is written separately; list it whenever it is installed.
if (VIEWS_DIR / Path(PAGE_THEORY).name).exists():
    analysis.append(st.Page(PAGE_THEORY, title="Theory", icon=":material/functions:"))

st.navigation({"Experiments": experiments, "Analysis": analysis}).run()
