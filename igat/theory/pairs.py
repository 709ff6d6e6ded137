"""Ambiguous pairs (Definition 4.3, spec §4.4): close examples with different labels.

Definition 4.3 keeps cross-class pairs with ||x_i - x_j||_2 <= tau, where eq. (10) gives

    tau = 1 / (J * B * sqrt(C) * (lambda~^2 - xi)),   J > 2, xi < lambda~^2.

Since J and xi are free, the practical mode takes the k closest cross-class pairs instead and
reports the J that would make the k-th distance the threshold (``implied_j``).

The search is exact and batched: rows are processed in chunks with ``torch.cdist`` (memory
``chunk_rows * n``), same-class and j <= i entries are masked, and a running top-k is merged
chunk by chunk. Distances of the selected pairs are recomputed directly because cdist's
matrix-multiply path loses precision for near-duplicates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PairSearch:
    """Result of the cross-class nearest-neighbour search over n examples."""

    pairs: Tensor  # [P, 2] int64 indices (i < j), y[i] != y[j], sorted by distance
    distances: Tensor  # [P] L2 distances of those pairs
    nn_index: Tensor  # [n] nearest example of another class (-1 if none)
    nn_distance: Tensor  # [n] its distance (inf if none)

    def __len__(self) -> int:
        return len(self.pairs)


def eq10_threshold(j: float, lambda_tilde: float, b: float, num_classes: int, xi: float = 0.0) -> float:
    """The distance threshold of eq. (10)."""
    if j <= 2:
        raise ValueError(f"J must be > 2 (Definition 4.3), got {j}")
    if b <= 0 or lambda_tilde <= 0:
        raise ValueError(f"B and lambda~ must be > 0, got B={b}, lambda~={lambda_tilde}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    gap = lambda_tilde**2 - xi
    if gap <= 0:
        raise ValueError(f"xi must be < lambda~^2 = {lambda_tilde**2:.6g}, got {xi}")
    return 1.0 / (j * b * math.sqrt(num_classes) * gap)


def implied_j(tau: float, lambda_tilde: float, b: float, num_classes: int, xi: float = 0.0) -> float:
    """The J for which eq. (10)'s threshold equals tau (inf for tau = 0)."""
    gap = lambda_tilde**2 - xi
    if gap <= 0 or b <= 0:
        raise ValueError(f"need B > 0 and xi < lambda~^2, got B={b}, lambda~={lambda_tilde}, xi={xi}")
    denom = tau * b * math.sqrt(num_classes) * gap
    return math.inf if denom == 0 else 1.0 / denom


def cross_class_pairs(
    x: Tensor,
    y: Tensor,
    k: int | None = 100,
    max_distance: float | None = None,
    chunk_elements: int = 1 << 24,
) -> PairSearch:
    """The k closest pairs (i < j, y_i != y_j) under L2, optionally only those within max_distance.

    ``k=None`` keeps every pair within ``max_distance`` (then max_distance is required).
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    if k is None and max_distance is None:
        raise ValueError("give k, max_distance or both (k=None with no max_distance would keep all n^2 pairs)")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = x.shape[0]
    flat = x.reshape(n, -1).float()
    y = y.to(flat.device)
    rows = max(1, chunk_elements // max(n, 1))
    best_d = torch.empty(0, device=flat.device)
    best_ij = torch.empty(0, 2, dtype=torch.long, device=flat.device)
    nn_index = torch.full((n,), -1, dtype=torch.long, device=flat.device)
    nn_dist = torch.full((n,), math.inf, device=flat.device)
    cols = torch.arange(n, device=flat.device)
    sq_norm = flat.square().sum(dim=1)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        d = torch.cdist(flat[s:e], flat)  # [b, n]
        d = d.masked_fill(y[s:e, None] == y[None, :], math.inf)
        # per-example nearest other-class neighbour (both directions of a pair count here)
        md, mi = d.min(dim=1)
        nn_dist[s:e] = md
        nn_index[s:e] = torch.where(torch.isfinite(md), mi, torch.full_like(mi, -1))
        # unordered pairs: keep j > i only
        d = d.masked_fill(cols[None, :] <= torch.arange(s, e, device=flat.device)[:, None], math.inf)
        if max_distance is not None:
            # cdist's float32 matrix-multiply path computes |a|^2 + |b|^2 - 2 a.b, whose rounding error
            # grows with |a|^2 + |b|^2 (a pair exactly at tau can come out above it, depending on the
            # chunk): keep every candidate within that error here, apply the exact threshold after
            # recomputing the kept distances in float64
            slack = 1e-5 * (sq_norm[s:e, None] + sq_norm[None, :])
            d = d.masked_fill(d.square() > max_distance**2 + slack, math.inf)
        fd = d.reshape(-1)
        if k is None:
            idx = torch.nonzero(torch.isfinite(fd)).squeeze(1)
        else:
            vals, idx = fd.topk(min(k, fd.numel()), largest=False)
            idx = idx[torch.isfinite(vals)]
        ij = torch.stack([idx // n + s, idx % n], dim=1)
        best_d = torch.cat([best_d, fd[idx]])
        best_ij = torch.cat([best_ij, ij])
        if k is not None and len(best_d) > k:
            best_d, keep = best_d.topk(k, largest=False)
            best_ij = best_ij[keep]
    # exact (float64) distances for the kept pairs, the exact threshold, then sort (ties broken by index)
    exact = ((flat[best_ij[:, 0]].double() - flat[best_ij[:, 1]].double()).norm(dim=1) if len(best_ij)
             else best_d.double())
    if max_distance is not None:
        inside = exact <= max_distance
        exact, best_ij = exact[inside], best_ij[inside]
    order = sorted(range(len(exact)), key=lambda t: (float(exact[t]), int(best_ij[t, 0]), int(best_ij[t, 1])))
    order_t = torch.tensor(order, dtype=torch.long, device=flat.device)
    valid = nn_index >= 0
    nn_exact = nn_dist.clone()
    nn_exact[valid] = (flat[valid].double() - flat[nn_index[valid]].double()).norm(dim=1).float()
    return PairSearch(best_ij[order_t].cpu(), exact[order_t].cpu(), nn_index.cpu(), nn_exact.cpu())
