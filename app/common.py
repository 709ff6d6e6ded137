"""Helpers shared by every dashboard page: the cached DB engine, the page guard, query params.

Pages import from here (never from the entry script ``app/main.py``), so a page can be
re-executed by Streamlit without re-running the navigation code.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import streamlit as st
from sqlalchemy.engine import Engine

log = logging.getLogger("igat.app")

APP_DIR = Path(__file__).resolve().parent
VIEWS_DIR = APP_DIR / "views"

# Page files, relative to the entry script; st.page_link / st.switch_page accept these paths.
PAGE_LAUNCH = "views/launch.py"
PAGE_RUNS = "views/runs.py"
PAGE_LIVE = "views/live.py"
PAGE_COMPARE = "views/compare.py"
PAGE_MEMBERS = "views/members.py"
PAGE_ABLATION = "views/ablation.py"
PAGE_THEORY = "views/theory.py"
PAGE_STUDIES = "views/studies.py"

# How often (seconds) live views poll the store while something is still queued or running.
REFRESH_SECONDS = 3.0


@st.cache_resource(show_spinner=False)
def _engine_for(url: str) -> Engine:
    from tasks.store import make_engine

    return make_engine(url)


def get_engine() -> Engine:
    """One engine per Streamlit server process and database URL (cached across reruns)."""
    from tasks.store import database_url

    return _engine_for(database_url())


@st.cache_resource(show_spinner=False)
def favicon() -> Any:
    """The tab icon, drawn here (a shield) and served by the dashboard itself: a Material-icon page_icon makes
    the browser fetch it from fonts.gstatic.com, and the dashboard must work without the internet."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    shield = [(32, 4), (56, 12), (54, 36), (32, 60), (10, 36), (8, 12)]
    draw = ImageDraw.Draw(image)
    draw.polygon(shield, fill=(0, 104, 201, 255))
    draw.line([(20, 32), (29, 41), (45, 23)], fill=(255, 255, 255, 255), width=6)
    return image


def short_error(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_page(body: Callable[[], None]) -> None:
    """Run a page body; an unexpected exception becomes a short st.error, not a stack trace.

    Streamlit's own control flow (st.rerun, st.stop, st.switch_page) raises BaseException
    subclasses, which pass through untouched.
    """
    try:
        body()
    except Exception as exc:  # noqa: BLE001 - the whole point is to catch everything a page may raise
        log.error("page failed: %s", traceback.format_exc())
        st.error(f"This page hit an error and stopped: {short_error(exc)}. "
                 "The details are in the dashboard's server log.")


def guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """Decorator form of :func:`run_page` for fragments and callbacks."""

    def wrapper(*args: Any, **kwargs: Any) -> None:
        run_page(lambda: fn(*args, **kwargs))

    wrapper.__name__ = getattr(fn, "__name__", "guarded")
    wrapper.__qualname__ = getattr(fn, "__qualname__", "guarded")
    return wrapper


def parse_id_list(text: str | None) -> list[int]:
    """``"1,2, 3"`` -> [1, 2, 3]; ignores blanks and anything that is not a positive integer."""
    ids: list[int] = []
    for part in (text or "").replace(" ", ",").split(","):
        if part.strip().isdigit():
            value = int(part)
            if value > 0 and value not in ids:
                ids.append(value)
    return ids


def query_int(name: str) -> int | None:
    ids = parse_id_list(st.query_params.get(name))
    return ids[0] if ids else None


def set_query(name: str, value: str | int | list[int] | None) -> None:
    """Write (or clear) one query parameter so the current view has a shareable URL."""
    if value is None or value == [] or value == "":
        if name in st.query_params:
            del st.query_params[name]
        return
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if st.query_params.get(name) != text:
        st.query_params[name] = text


REMEMBERED = "remembered."  # session-state prefix of what pages remember (remember / recall)


def remember(name: str, value: Any) -> None:
    """Keep a page's selection (a run, runs to compare) for the rest of the browser session. A widget's value is
    dropped when the user visits another page, and the sidebar's links carry no query string, so without this a
    page forgot what was picked on it as soon as the user looked elsewhere."""
    st.session_state[REMEMBERED + name] = value


def recall(name: str, default: Any = None) -> Any:
    """What :func:`remember` kept for ``name`` in this session (``default`` when nothing)."""
    return st.session_state.get(REMEMBERED + name, default)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:  # None, NaN, clock skew
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def eta_text(eta_s: float | None, scope: str) -> str:
    """The time left; "+ evaluation" when the worker's estimate covers only the training (tasks.progress)."""
    text = fmt_duration(eta_s)
    return f"{text} + evaluation" if text and scope == "training" else text


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def empty_state(message: str, page: str = PAGE_LAUNCH, label: str = "Launch a run", icon: str = ":material/rocket_launch:") -> None:
    """An empty page that says what to do next, with a link to the page that does it."""
    st.info(message)
    st.page_link(page, label=label, icon=icon)
