"""Parameters of the theory diagnostics: torch-free, so the dashboard can validate a form."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from igat.config import ConfigError

__all__ = ["TheoryParams", "parse_params"]


class TheoryParams(BaseModel):
    """Knobs of the diagnostics; bad values raise ConfigError naming ``params.<field>``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    num_examples: int = Field(200, ge=1, le=10000, description="test examples for curvature (equidistant)")
    delta_mode: Literal["pgd", "sign", "random"] = Field("pgd", description="how delta of eq. (2) is chosen")
    eps: float = Field(8 / 255, gt=0.0, le=1.0, description="L-inf radius of delta (random: L2 norm eps*sqrt(d))")
    pgd_steps: int = Field(10, ge=1, le=1000, description="PGD iterations for delta_mode=pgd (step eps/4)")
    combiners: list[Literal["average", "max"]] = Field(["average", "max"], description="ensemble outputs analysed")
    pair_split: Literal["test", "train"] = Field("test", description="split searched for ambiguous pairs")
    pair_pool: int | None = Field(2000, ge=2, le=100000, description="equidistant examples searched (None: all)")
    pair_mode: Literal["knn", "eq10"] = Field("knn", description="k closest cross-class pairs, or eq. (10) threshold")
    k_pairs: int = Field(100, ge=1, le=100000, description="pairs kept (eq10 mode: at most this many)")
    J: float = Field(4.0, gt=2.0, le=1e9, description="control variable J of Def. 4.3 / Assumption 4.4 (> 2)")
    xi: float = Field(0.0, description="xi of eq. (10), must be < lambda~^2")
    lambda_quantile: float = Field(1.0, gt=0.0, le=1.0, description="lambda~ = this quantile of the curvature")
    lambda_tilde: float | None = Field(None, gt=0.0, description="override the measured lambda~")
    B: float | None = Field(None, gt=0.0, description="override the measured B = max ||M_h^+||")
    spectral_examples: int = Field(16, ge=0, le=5000, description="first curvature examples used for ||M_h||, ||M_h^+|| (0: skip)")
    ci_method: Literal["wilson", "bootstrap"] = "bootstrap"
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_resamples: int = Field(1000, ge=100, le=100000)
    histogram_bins: int = Field(30, ge=5, le=200)
    batch_size: int = Field(100, ge=1, le=4096)
    max_pairs_listed: int = Field(50, ge=0, le=10000)
    reference_checkpoint: str | None = Field(None, description="second checkpoint whose curvature is compared")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(0, ge=0)


def parse_params(params: dict[str, Any] | TheoryParams | None) -> TheoryParams:
    if isinstance(params, TheoryParams):
        return params
    if params is not None and not isinstance(params, dict):
        raise ConfigError([("params", f"must be a mapping, got {type(params).__name__}")])
    try:
        return TheoryParams(**(params or {}))
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, prefix="params.") from None
