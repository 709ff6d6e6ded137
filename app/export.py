"""Exports for the Compare / Ablation pages: CSV, LaTeX, PNG.

PNG goes through plotly's ``to_image`` with kaleido 1.x, which drives a headless Chrome via
choreographer. Where no Chrome is bundled we point it at the system Chromium through
``BROWSER_PATH`` (the variable choreographer reads); any failure is turned into
:class:`ExportError` with a readable reason so the page can show it instead of a traceback.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# Streamlit's plotly template (the default in a Streamlit process) colours traces "#000001".."#000010", which
# its web page swaps for the theme's palette; an exported figure kept them, so every bar came out black.
# Its light theme's categorical palette, to export what the page shows:
STREAMLIT_PLACEHOLDER = re.compile(r"#0000(0[1-9]|10)\b", re.IGNORECASE)
STREAMLIT_CATEGORY_COLOURS = ("#0068c9", "#83c9ff", "#ff2b2b", "#ffabab", "#29b09d", "#7defa1", "#ff8700",
                              "#ffd16a", "#6d3fc0", "#d5dae5")


class ExportError(RuntimeError):
    """An export that could not be produced; the message is meant for the user."""


def find_browser() -> str | None:
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).exists():
        return env
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _concrete(value: Any) -> Any:
    if isinstance(value, str):
        return STREAMLIT_PLACEHOLDER.sub(lambda m: STREAMLIT_CATEGORY_COLOURS[int(m.group(1)) - 1], value)
    if isinstance(value, dict):
        return {k: _concrete(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_concrete(v) for v in value]
    return value


def export_figure(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` as the page shows it, for a file: Streamlit's placeholder colours replaced by its
    palette, on a plain white template instead of the Streamlit one (whose remaining placeholders would draw
    black text and grid)."""
    data = _concrete(fig.to_plotly_json())
    data.get("layout", {}).pop("template", None)
    out = go.Figure(data)
    out.update_layout(template="plotly_white", colorway=list(STREAMLIT_CATEGORY_COLOURS))
    return out


def figure_png(fig: go.Figure, width: int = 1100, height: int | None = None, scale: float = 1.0) -> bytes:
    browser = find_browser()
    if browser and not os.environ.get("BROWSER_PATH"):
        os.environ["BROWSER_PATH"] = browser
    try:
        return export_figure(fig).to_image(format="png", width=width, height=height or fig.layout.height or 450,
                                           scale=scale)
    except Exception as exc:  # noqa: BLE001 - kaleido raises many different types (missing Chrome, timeouts)
        hint = "" if browser else " No Chrome/Chromium was found; install one or set BROWSER_PATH to its executable."
        raise ExportError(f"PNG export failed ({type(exc).__name__}: {str(exc)[:200]}).{hint}") from exc


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


def to_latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A plain LaTeX tabular for a table whose cells are already formatted strings."""
    cols = list(df.columns)
    def esc(value: object) -> str:
        text = "" if value is None or (isinstance(value, float) and value != value) else str(value)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                     ("±", r"$\pm$"), ("+-", r"$\pm$")):
            text = text.replace(a, b)
        return text
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{esc(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\begin{tabular}{" + "l" * len(cols) + "}")
    lines.append(r"\toprule")
    lines.append(" & ".join(esc(c) for c in cols) + r" \\")
    lines.append(r"\midrule")
    for _, row in df.iterrows():
        lines.append(" & ".join(esc(row[c]) for c in cols) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
