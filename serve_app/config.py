"""Application configuration and the `key=value` arguments of `serve run serve_app:app`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ipa_energy.errors import SpecError
from ipa_energy.spec import PipelineSpec, Plan
from energy.config import EnergyConfig
from serve_app.constants import TOKEN_ENV
from serve_app.layout import shape_of
from serve_app.requests import Limits

__all__ = ["ARGS_HELP", "AppSpec", "from_args", "load_plans"]


class AppSpec(BaseModel):
    """What the application serves and how; plans are kept apart (they change at run time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipelines: tuple[PipelineSpec, ...] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    control_token: str | None = Field(
        None, description=f"Bearer token that PUT /v1/plan requires; unset = plan changes over HTTP are refused. Env: {TOKEN_ENV}."
    )
    energy: EnergyConfig = Field(default_factory=EnergyConfig, description="Energy meters, carbon intensity, PUE.")
    ingress_num_cpus: float = Field(
        0.0, ge=0, description="CPUs reserved by each ingress replica (0: it mostly waits on the stages)."
    )
    ingress_replicas: int = Field(
        2, ge=1, le=64, description="Ingress replicas. Two by default: they reserve ingress_num_cpus each (0 unless "
                                    "set), so they fit wherever the app does, and when one dies the proxy routes to "
                                    "the other while Serve replaces it (docs/faults.md).")
    warm_variants: bool = Field(
        True, description="Stage replicas keep their slot's other variants built beside the one they serve, in memory "
                          "the plan leaves free, so a variant switch is a swap (serve_app.warm; CPU slots only).")

    @model_validator(mode="after")
    def _unique_pipelines(self) -> AppSpec:
        names = [p.name for p in self.pipelines]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate pipeline names: {names}")
        return self

    def pipeline(self, name: str) -> PipelineSpec:
        for p in self.pipelines:
            if p.name == name:
                return p
        raise KeyError(name)

    def shape(self, pipeline: str, stage: str, variant: str) -> str:
        """The resource tag that names `variant`'s slot (serve_app.layout.Shape)."""
        return shape_of(self.pipeline(pipeline), stage, variant)

    def complete_plans(self, plans: dict[str, Plan] | None = None) -> dict[str, Plan]:
        """`plans` checked against the pipelines, with defaults for pipelines it lacks."""
        plans = dict(plans or {})
        unknown = set(plans) - {p.name for p in self.pipelines}
        if unknown:
            raise SpecError(f"plans for unknown pipelines: {sorted(unknown)}")
        for p in self.pipelines:
            plans.setdefault(p.name, p.default_plan())
            p.check_plan(plans[p.name])
        return plans


ENERGY_ARGS = ("carbon_g_per_kwh", "pue", "cpu_tdp_w", "force_estimate")

ARGS_HELP = {
    "pipelines": "comma-separated catalog pipelines to serve, or 'all' (default: video, which fits a 2-CPU host)",
    "tier": "catalog tier (default: mini)",
    "plan": "JSON file with one Plan or a list of Plans to start with",
    "token": f"bearer token for PUT /v1/plan (default: ${TOKEN_ENV})",
    "ingress_replicas": "ingress replicas (default: 2; each reserves no CPU)",
    "warm_variants": "true/false: replicas keep their slot's other variants built, so a switch is a swap (default: true)",
    **{k: f.description for k, f in Limits.model_fields.items()},
    **{k: EnergyConfig.model_fields[k].description for k in ENERGY_ARGS},
}


def from_args(args: dict[str, Any]) -> tuple[AppSpec, dict[str, Plan]]:
    """Build the AppSpec and starting plans from `serve run serve_app:app key=value ...`."""
    from workloads import catalog

    unknown = set(args) - set(ARGS_HELP)
    if unknown:
        raise SpecError(f"unknown argument(s) {sorted(unknown)}; known: " + "; ".join(f"{k}: {v}" for k, v in ARGS_HELP.items()))
    tier = str(args.get("tier", "mini"))
    available = catalog.pipelines(tier)
    # Default: IPA's video pipeline alone. Its two mini stages (0.5 CPU each) and a
    # make-before-break switch of both fit the 2 logical CPUs of a laptop-sized local Ray;
    # every pipeline at once needs about 4 (`ray start --head --num-cpus 8`, then --address).
    requested = str(args.get("pipelines", "video"))
    names = list(available) if requested == "all" else [n.strip() for n in requested.split(",") if n.strip()]
    try:
        limits = Limits(**{k: int(args[k]) for k in Limits.model_fields if k in args})
        energy = EnergyConfig(**{k: args[k] for k in ENERGY_ARGS if k in args})
        spec = AppSpec(
            pipelines=tuple(catalog.pipeline(n, tier) for n in names),
            limits=limits,
            energy=energy,
            control_token=args.get("token") or os.environ.get(TOKEN_ENV) or None,
            **({"ingress_replicas": int(args["ingress_replicas"])} if "ingress_replicas" in args else {}),
            **({"warm_variants": args["warm_variants"]} if "warm_variants" in args else {}),
        )
    except (ValidationError, ValueError) as e:
        raise SpecError(f"invalid application arguments: {e}") from None
    return spec, spec.complete_plans(load_plans(args["plan"]) if "plan" in args else None)


def load_plans(path: str | os.PathLike) -> dict[str, Plan]:
    try:
        raw = json.loads(Path(path).read_text())
        items = raw if isinstance(raw, list) else [raw]
        plans = [Plan.model_validate(p) for p in items]
    except (OSError, json.JSONDecodeError, ValidationError) as e:
        raise SpecError(f"cannot read plans from {path}: {e}") from None
    return {p.pipeline: p for p in plans}
