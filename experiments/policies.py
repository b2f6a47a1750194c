"""The policies an experiment compares, and the plan each one starts from.

planner policies (the planner actor adapts every interval): ipa, ipa-energy, fa2-low,
fa2-high, rim, infadapter. Outside baselines that never re-plan:
  static-max-accuracy  the most accurate variant per stage, provisioned for the trace's peak;
  static-min-energy    the variant with the least J/request per stage, provisioned for the peak;
  serve-autoscaling    Ray Serve's own autoscaler on fixed variants (those `ipa` picks for the
                       trace's opening load; upscale after 5 s, downscale after 30 s): what a
                       Ray user would deploy instead of a planner.
"""

from __future__ import annotations

from collections.abc import Mapping

from ipa_energy.spec import PipelineSpec, Plan, StageSpec

PLANNER_POLICIES = ("ipa", "ipa-energy", "fa2-low", "fa2-high", "rim", "infadapter")
STATIC_POLICIES = ("static-max-accuracy", "static-min-energy")
AUTOSCALING = "serve-autoscaling"
ALL_POLICIES = ("ipa", "ipa-energy", "fa2-low", "fa2-high", "rim", *STATIC_POLICIES, AUTOSCALING)


def policy_kind(policy: str) -> str:
    if policy in PLANNER_POLICIES:
        return "planner"
    if policy in STATIC_POLICIES:
        return "static"
    if policy == AUTOSCALING:
        return "serve-autoscaling"
    raise ValueError(f"unknown policy {policy!r}; known: {(*PLANNER_POLICIES, *STATIC_POLICIES, AUTOSCALING)}")


def parse_policies(text: str) -> list[str]:
    """`ipa,ipa-energy` → the list; `all` → every policy of the comparison."""
    names = list(ALL_POLICIES) if text.strip() == "all" else [p.strip() for p in text.split(",") if p.strip()]
    for p in names:
        policy_kind(p)
    if not names:
        raise ValueError("no policy given")
    return names


def _only(pipeline: PipelineSpec, pick) -> PipelineSpec:
    """`pipeline` with each stage restricted to the one variant `pick(stage)` chooses."""
    stages = tuple(StageSpec(**{**s.model_dump(), "variants": (pick(s),)}) for s in pipeline.stages)
    return pipeline.model_copy(update={"stages": stages})


def initial_plan(policy: str, pipeline: PipelineSpec, profiles: Mapping, *, mean_rps: float, peak_rps: float,
                 max_replicas: int, margin: float = 1.0, autoscale_target: float = 2.0) -> Plan:
    """The plan a run starts with (and, for static policies, keeps)."""
    from ipa_energy.spec import Autoscaling, StagePlan
    from planner.optimizer import optimize

    kind = policy_kind(policy)
    if kind == "planner":  # what the planner itself would pick for the opening load
        return optimize(pipeline, profiles, max(mean_rps, 0.1), policy=policy, max_replicas=max_replicas, margin=margin)
    if policy == "static-max-accuracy":
        fixed = _only(pipeline, lambda s: max(s.variants, key=lambda v: (v.accuracy.value, v.name)))
    elif policy == "static-min-energy":
        def least_energy(stage: StageSpec):
            joules = {v.name: profiles[(v.name, 1)].energy_per_request_j for v in stage.variants if (v.name, 1) in profiles}
            if not joules:
                raise ValueError(f"no batch-1 profile for any variant of stage {stage.name!r}")
            return stage.variant(min(joules, key=lambda n: (joules[n], n)))
        fixed = _only(pipeline, least_energy)
    else:  # serve-autoscaling: ipa's variants for the mean load, Serve scales the replicas
        chosen = optimize(pipeline, profiles, max(mean_rps, 0.1), policy="ipa", max_replicas=max_replicas, margin=margin)
        stages = {
            name: StagePlan(variant=sp.variant, batch_size=sp.batch_size, replicas=1,
                            batch_wait_timeout_ms=sp.batch_wait_timeout_ms,
                            # Serve's default delays (30 s up, 600 s down) would not react within a
                            # short trace window; 5 s / 30 s give it the planner's time scale.
                            autoscaling=Autoscaling(min_replicas=1, max_replicas=max_replicas,
                                                    target_ongoing_requests=autoscale_target * sp.batch_size,
                                                    upscale_delay_s=5.0, downscale_delay_s=30.0))
            for name, sp in chosen.stages.items()
        }
        return Plan(pipeline=pipeline.name, stages=stages, policy=policy, predicted_load_rps=mean_rps)
    plan = optimize(fixed, profiles, max(peak_rps, 0.1), policy="ipa", max_replicas=max_replicas, margin=margin)
    return plan.model_copy(update={"policy": policy})
