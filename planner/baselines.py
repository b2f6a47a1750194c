"""The plan each policy of an experiment starts from (and the outside baselines keep).

* planner policies: what the planner itself picks for the opening load;
* ``static-max-accuracy`` / ``static-min-energy``: the most accurate / least J/request
  variant per stage, provisioned once for the trace's peak;
* ``serve-autoscaling``: the variants and batch sizes ``ipa`` picks for the trace's peak (so
  the replica cap can carry it), starting at the replicas they need for the opening load,
  with Ray Serve's autoscaler owning the replica count (upscale after 5 s, downscale after 30 s, in-flight
  requests reported every second and averaged over 10 s): what a Ray user would deploy
  instead of a planner.
"""

from __future__ import annotations

from collections.abc import Mapping

from ipa_energy.cluster import ClusterSupply
from ipa_energy.spec import Autoscaling, PipelineSpec, Plan, StagePlan, StageSpec, VariantSpec
from planner.constants import MIN_LOAD_RPS
from planner.optimizer import optimize
from planner.policies import policy_kind
from planner.terms import Weights

__all__ = ["initial_plan"]

#: Serve's default delays (30 s up, 600 s down) would not react within a short trace
#: window; these give its autoscaler the planner's time scale.
UPSCALE_DELAY_S, DOWNSCALE_DELAY_S = 5.0, 30.0
#: So do these: Serve's defaults average the in-flight requests over 30 s, reported every 10 s,
#: so at a ramp it saw the load of half a minute before (make bench: two replicas only 35–45 s
#: after a 2 → 7 req/s ramp began, 77.7 % SLO attainment). The planner reads the last interval's
#: arrivals (10 s), counted per second.
LOOK_BACK_S, METRICS_INTERVAL_S = 10.0, 1.0


def _only(pipeline: PipelineSpec, pick) -> PipelineSpec:
    """`pipeline` with each stage restricted to the one variant `pick(stage)` chooses."""
    stages = tuple(StageSpec(**{**s.model_dump(), "variants": (pick(s),)}) for s in pipeline.stages)
    return pipeline.model_copy(update={"stages": stages})


def _least_energy(profiles: Mapping):
    def pick(stage: StageSpec) -> VariantSpec:
        joules = {v.name: profiles[(v.name, 1)].energy_per_request_j for v in stage.variants if (v.name, 1) in profiles}
        if not joules:
            raise ValueError(f"no batch-1 profile for any variant of stage {stage.name!r}")
        return stage.variant(min(joules, key=lambda n: (joules[n], n)))
    return pick


def _autoscaled(pipeline: PipelineSpec, profiles: Mapping, policy: str, mean_rps: float, peak_rps: float,
                max_replicas: int, margin: float, target: float, **capacity) -> Plan:
    # Serve scales replicas, never the variant: an operator picks one that the replica cap can
    # carry at the trace's peak (make bench: ipa's variant for the opening load, resnet152,
    # could not serve the peak with 2 replicas, so no autoscaler setting held the SLA)
    def ipa(pipe: PipelineSpec, load: float, **kw) -> Plan:
        return optimize(pipe, profiles, max(load, MIN_LOAD_RPS), policy="ipa", max_replicas=max_replicas,
                        margin=margin, **capacity, **kw)

    peak = ipa(pipeline, peak_rps)
    if not peak.objective.get("feasible"):  # nothing serves the peak: the opening load's variants
        peak = ipa(pipeline, mean_rps)
    chosen = peak.stages
    # the replicas those variants need at the opening load (Serve starts there, then scales)
    opening = ipa(_only(pipeline, lambda s: s.variant(chosen[s.name].variant)), mean_rps,
                  batch_sizes=sorted({sp.batch_size for sp in chosen.values()}))
    start = {s: sp.replicas for s, sp in opening.stages.items()} if opening.objective.get("feasible") else {}
    stages = {
        name: StagePlan(variant=sp.variant, batch_size=sp.batch_size, replicas=start.get(name, 1),
                        batch_wait_timeout_ms=sp.batch_wait_timeout_ms,
                        autoscaling=Autoscaling(min_replicas=1, max_replicas=max_replicas,
                                                target_ongoing_requests=target * sp.batch_size,
                                                upscale_delay_s=UPSCALE_DELAY_S, downscale_delay_s=DOWNSCALE_DELAY_S,
                                                look_back_period_s=LOOK_BACK_S, metrics_interval_s=METRICS_INTERVAL_S))
        for name, sp in chosen.items()
    }
    return Plan(pipeline=pipeline.name, stages=stages, policy=policy, predicted_load_rps=mean_rps)


def initial_plan(policy: str, pipeline: PipelineSpec, profiles: Mapping, *, mean_rps: float, peak_rps: float,
                 max_replicas: int, margin: float = 1.0, autoscale_target: float = 2.0,
                 supply: ClusterSupply | None = None, serving_cpu_s: float = 0.0, weights: Weights = Weights()) -> Plan:
    """The plan a run starts with (and, for static policies, keeps), fitted to `supply` when given;
    `weights`: the planner's objective (a planner policy's opening plan is what it would pick)."""
    kind = policy_kind(policy)
    capacity = {"supply": supply, "serving_cpu_s": serving_cpu_s}
    if kind == "planner":  # what the planner itself would pick for the opening load
        return optimize(pipeline, profiles, max(mean_rps, MIN_LOAD_RPS), policy=policy, max_replicas=max_replicas,
                        margin=margin, weights=weights, **capacity)
    if kind == "serve-autoscaling":
        return _autoscaled(pipeline, profiles, policy, mean_rps, peak_rps, max_replicas, margin, autoscale_target,
                           **capacity)
    if policy == "static-max-accuracy":
        fixed = _only(pipeline, lambda s: max(s.variants, key=lambda v: (v.accuracy.value, v.name)))
    elif policy == "static-min-energy":
        fixed = _only(pipeline, _least_energy(profiles))
    else:
        raise ValueError(f"policy {policy!r} has no opening plan of its own: give the plan (static)")
    plan = optimize(fixed, profiles, max(peak_rps, MIN_LOAD_RPS), policy="ipa", max_replicas=max_replicas, margin=margin,
                    **capacity)
    return plan.model_copy(update={"policy": policy})
