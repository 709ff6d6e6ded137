"""Config diff for the Compare page: flatten run configs and keep only the fields that differ."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists of mappings are flattened with their index."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{path}.{i}."))
        else:
            out[path] = value
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def config_diff(configs: dict[str, dict[str, Any]], ignore: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows = fields whose value is not the same in every config; columns = the configs' labels.

    A field missing from one config counts as different (shown as "—").
    """
    flat = {label: flatten(cfg) for label, cfg in configs.items()}
    fields = sorted({f for f_map in flat.values() for f in f_map})
    rows = []
    for field in fields:
        if any(field == p or field.startswith(p + ".") for p in ignore):
            continue
        cells = [_cell(f_map.get(field)) for f_map in flat.values()]
        if len(set(cells)) > 1:
            rows.append([field, *cells])
    return pd.DataFrame(rows, columns=["field", *flat.keys()])


# Above this many configs the diff is shown transposed (one row per run), so it does not grow sideways.
WIDE_CONFIGS = 6


def display_diff(diff: pd.DataFrame) -> pd.DataFrame:
    """The diff as shown: fields as rows for a few runs; for many runs one row per run and a column per differing
    field (50 runs as 50 columns cannot be read)."""
    if diff.empty or diff.shape[1] - 1 <= WIDE_CONFIGS:
        return diff
    return diff.set_index("field").T.rename_axis("run").reset_index().rename_axis(None, axis=1)
