"""Small, JSON-ready summaries of value distributions (for storage and plotting)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def finite(values: Tensor) -> Tensor:
    v = values.detach().double().flatten().cpu()
    return v[torch.isfinite(v)]


def histogram(values: Tensor, bins: int = 30, log: bool = False) -> dict[str, list[float] | bool]:
    """Counts over equal-width bins (of log10 values when ``log``) of the finite values."""
    v = finite(values)
    if log:
        v = v[v > 0].log10()
    if len(v) == 0:
        return {"edges": [], "counts": [], "log10": log}
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:  # all equal: one bin around the value
        lo, hi = lo - 0.5, hi + 0.5
    counts = torch.histc(v, bins=bins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, bins + 1)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts], "log10": log}


def distribution(values: Tensor, bins: int = 30, log_hist: bool = False) -> dict[str, Any]:
    """mean/std/max, quantiles and a histogram; counts of non-finite values are kept visible."""
    v = finite(values)
    n_total = values.numel()
    out: dict[str, Any] = {"n": int(len(v)), "n_nonfinite": int(n_total - len(v))}
    if len(v):
        out.update(mean=float(v.mean()), std=float(v.std()) if len(v) > 1 else 0.0, min=float(v.min()),
                   max=float(v.max()), quantiles={str(q): float(torch.quantile(v, q)) for q in QUANTILES})
    else:
        out.update(mean=None, std=None, min=None, max=None, quantiles={})
    out["histogram"] = histogram(v, bins, log_hist)
    return out


def jsonable(obj: Any) -> Any:
    """Recursively convert tensors/tuples to lists and non-finite floats to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item"):  # numpy scalars
        return jsonable(obj.item())
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
