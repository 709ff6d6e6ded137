"""Spectral quantities of Assumption 4.2 (spec §4.3).

For an MLP, p^(k)_i = dz_i/dx_k, so p^(k) is column k of the logit Jacobian J(x) = dz/dx (C x d)
and P_h = sum_k p^(k) p^(k)^T = J J^T. With P_h = M M^T:  ||M||_2 = sigma_max(J) and
||M^+||_2 = 1 / sigma_min+(J) (smallest non-zero singular value). B_0 and B of the assumption are
their maxima over the examples. The same definition applies to any differentiable classifier
(ResNets included): it costs C backward passes per batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def logit_jacobian(model: nn.Module, x: Tensor) -> Tensor:
    """[B, C, d] Jacobian of the logits w.r.t. the (flattened) input, one backward pass per class.

    Per-example rows are exact because examples do not interact in eval mode.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = model(x)
        if z.dim() != 2:
            raise ValueError(f"model must return logits [B, C], got {tuple(z.shape)}")
        rows = []
        for c in range(z.shape[1]):
            (g,) = torch.autograd.grad(z[:, c].sum(), x, retain_graph=c < z.shape[1] - 1)
            rows.append(g.reshape(len(x), -1))
    return torch.stack(rows, dim=1).detach()


def jacobian_singular_values(model: nn.Module, x: Tensor, batch_size: int = 32) -> Tensor:
    """[n, min(C, d)] singular values of J(x), descending, in float64."""
    was_training = model.training
    model.eval()
    try:
        out = [torch.linalg.svdvals(logit_jacobian(model, x[s : s + batch_size]).double())
               for s in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).cpu()


def spectral_norms(singular_values: Tensor, rtol: float = 1e-7) -> tuple[Tensor, Tensor]:
    """(||M||_2, ||M^+||_2) per example from the singular values of J.

    sigma_min+ is the smallest singular value above rtol * sigma_max (the numerical rank cut-off
    that pinv uses), so ||M^+|| stays finite when J is rank deficient; inf when J = 0.
    """
    smax = singular_values[:, 0]
    cutoff = rtol * smax
    masked = torch.where(singular_values > cutoff[:, None], singular_values, torch.full_like(singular_values, torch.inf))
    smin = masked.amin(dim=1)
    inv = torch.where(torch.isfinite(smin) & (smin > 0), 1.0 / smin, torch.full_like(smin, torch.inf))
    return smax, inv


def spectral_bounds(model: nn.Module, x: Tensor, batch_size: int = 32) -> dict[str, Tensor | float]:
    """Per-example ||M_h||, ||M_h^+||, and B_0 = max ||M_h||, B = max ||M_h^+|| over x."""
    sv = jacobian_singular_values(model, x, batch_size)
    m_norm, m_pinv = spectral_norms(sv)
    return {"m_norm": m_norm, "m_pinv_norm": m_pinv, "B0": float(m_norm.max()), "B": float(m_pinv.max()),
            "rank": (sv > 1e-7 * sv[:, :1]).sum(dim=1)}
