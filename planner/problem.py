"""One optimizer problem as a self-contained JSON document (docs/plan-format.md).

`ipa-energy plan` builds its problem from the catalog and the profile store of a hardware
id; a :class:`Problem` carries the same inputs explicitly (pipeline spec, measured profiles,
load, SLA, policy, weights, limits), so that a problem can be saved, shared, re-solved and
compared across solvers or policies without the catalog or the store.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ipa_energy.cluster import ClusterSupply
from ipa_energy.spec import PipelineSpec, Plan, Profile
from planner.constants import DEFAULT_BATCH_SIZES, DEFAULT_MAX_REPLICAS, DEFAULT_MAX_VARIANTS
from planner.optimizer import optimize
from planner.profiles import fill_profiles
from planner.solver import DEFAULT_SOLVER
from planner.terms import Weights

__all__ = ["Problem", "problem_from_catalog"]


class Problem(BaseModel):
    """Everything :func:`planner.optimizer.optimize` needs; defaults are its defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: PipelineSpec
    profiles: tuple[Profile, ...] = Field(
        description="Measured profiles (as in workloads/profiles/<hardware>.json 'profiles'); "
                    "batch sizes not measured are fitted (IPA's quadratic), as for the store.")
    load_rps: float = Field(ge=0, description="Predicted load λ (req/s); the program plans for λ × margin.")
    sla_ms: float | None = Field(None, gt=0, description="End-to-end SLA (ms); None = the pipeline's sla_ms.")
    policy: str = "ipa-energy"
    weights: Weights = Field(default_factory=Weights)
    margin: float = Field(1.0, gt=0, description="Headroom multiplier on the load.")
    batch_sizes: tuple[int, ...] = Field(DEFAULT_BATCH_SIZES, min_length=1)
    max_replicas: int = Field(DEFAULT_MAX_REPLICAS, ge=1, description="Replica cap N per stage.")
    max_variants: int = Field(DEFAULT_MAX_VARIANTS, ge=1, description="Most variants in an infadapter mix.")
    replicas: int | dict[str, int] | None = Field(None, description="rim: the fixed replicas (per stage).")
    current: Plan | None = Field(None, description="The running plan (fewest-changes tie-break).")
    static_plan: Plan | None = Field(None, description="static: the plan to evaluate.")
    solver: str = DEFAULT_SOLVER
    queueing: bool = Field(True, description="Latency includes the p99 wait for a free replica (False: IPA's model).")
    supply: ClusterSupply | None = Field(None, description="Physical cores and memory the plan must fit; None: unlimited.")
    serving_cpu_s: float = Field(0.0, ge=0, description="CPU core-seconds a request costs outside the stages.")

    def profile_lookup(self) -> dict[tuple[str, int], Profile]:
        return fill_profiles(self.pipeline, self.profiles, self.batch_sizes)

    def solve(self) -> Plan:
        return optimize(
            self.pipeline, self.profile_lookup(), self.load_rps, sla_ms=self.sla_ms, weights=self.weights,
            batch_sizes=self.batch_sizes, max_replicas=self.max_replicas, policy=self.policy, margin=self.margin,
            current=self.current, replicas=self.replicas, static_plan=self.static_plan, solver=self.solver,
            max_variants=self.max_variants, queueing=self.queueing, supply=self.supply, serving_cpu_s=self.serving_cpu_s,
        )

    @classmethod
    def load(cls, path: str | Path) -> Problem:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def problem_from_catalog(pipeline: str, load_rps: float, *, tier: str = "mini", hardware: str | None = None,
                         **options) -> Problem:
    """The problem `ipa-energy plan --pipeline P --load L` solves (catalog + profile store)."""
    from workloads import catalog
    from workloads.profile_store import PROFILES_DIR, ProfileStore, hardware_id

    spec = catalog.pipeline(pipeline, tier)
    names = {v.name for s in spec.stages for v in s.variants}
    measured = [p for p in ProfileStore(PROFILES_DIR).load(hardware or hardware_id("cpu")) if p.variant in names]
    return Problem(pipeline=spec, profiles=tuple(measured), load_rps=load_rps, **options)
