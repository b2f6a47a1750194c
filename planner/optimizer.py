"""IPA's integer program, corrected, with energy as a third objective (docs/design.md, "Planning").

:func:`optimize` turns a pipeline, its profiles and a predicted load into a Plan: policies and
their restrictions, the search over node utilisation caps, the fewest-changes tie-break and
the best-effort fallback live here; the program itself (candidates, constraints, objective,
solves) is :mod:`planner.program`.

λ̂ = λ × ``margin`` (headroom; ``margin=1.0``, the default, plans for exactly the predicted
load; 1.2 plans for 20 % more). λ̂ is used everywhere λ appears: throughput, batch-fill time,
power. ``Plan.predicted_load_rps`` is λ̂.

Default weights (:class:`Weights`) and why
------------------------------------------
``α = 1`` per unit of log-accuracy, ``β = 0.01`` per resource unit, ``δ = 1e-4`` per unit of
batch size; ``γ`` per W is 0 for ``ipa`` and, for ``ipa-energy``, set each solve against
IPA's plan at the same load and capacity: γ = ``gamma_relative`` / that plan's watts, with
``gamma_relative = 0.1`` (1 % of relative accuracy, Δlog a = 0.01, is worth 10 % of IPA's
power). Why an elasticity rather than a weight per watt: the power a plan draws grows with
the load and with the hardware, the accuracy it gives up does not. A fixed 0.01 per W
(the default until December 2026) traded resnet152 for resnet101 (Δlog a = 0.012) at 4–7
req/s on 2 cores (≈1.2 W of predicted power saved, from tdp-estimate profiles) but never at
2–3 req/s, where it saves the same fifth of the power per request (0.4 W): the run's low-load stretches kept their dearest plan, and on
hardware drawing ten times the watts the same weight would pick the lightest variants
everywhere. Per unit of IPA's power the trade is the same at every load and on any machine.
Capped by ``accuracy_budget = 0.01``: a plan gives up at most one point of pipeline
accuracy against IPA's plan (at 8–9 req/s on 2 cores resnet50 saves 60 % but is 2.2 points
below); the adaptation loop (:mod:`planner.loop`) raises or trims that budget each interval
so that it holds on average over the requests served. Where no IPA plan meets the load,
``gamma = 0.01`` per W stands.

With the mini video profiles (cpu-amd-epyc-2c), accuracy comes first between distant
variants: switching the detector from ssdlite (0.213) to fcos (0.392) is worth 0.61
log-accuracy, the classifier from resnet18 to resnet152 0.115. Cost (0.005 per 0.5-CPU
replica) is about a replica's idle power charge, and the batch penalty (8·δ = 0.0008 at b=8)
only breaks ties between otherwise equal batch sizes, as IPA's small batch weight does.

Policies (:mod:`planner.policies`) are this program under restrictions: ``ipa`` sets γ = 0,
``fa2-*`` fix the variant, ``rim`` the replicas; ``static*`` evaluate a given plan
(:func:`planner.checks.evaluate_plan`) instead of solving; ``infadapter`` is a program of
its own (:mod:`planner.infadapter`). An unknown policy name raises ValueError (a
configuration error, unlike an infeasible load, which never raises).

Tie-break: fewest changes
-------------------------
With a ``current`` plan, a second solve keeps the objective ≥ optimum − 1e-7 (absolute;
the profiles are far noisier than that) and minimises the number of changes: per stage one
for a variant switch, one for a batch-size change, one for a replica-count change (the
fields :func:`ipa_energy.diff.diff_plans` reports, except the batch wait which follows the
batch size). A second solve rather than an ε penalty because the objective's coefficients
are measured reals with no granularity to derive a safe ε from. If the second solve fails
numerically, the first solution is kept.

Infeasible loads
----------------
When no plan meets both the SLA and λ̂ within N replicas, :func:`optimize` never raises; it
returns a best-effort plan, flagged ``objective["feasible"] = 0.0``: it maximises the served
throughput t = min over stages of the chosen capacity (capped at λ̂), keeping the latency constraint when any choice of
variants and batches meets the SLA at all (else dropping it), and among the plans with the
largest t (within 1e-7) maximises the real objective. ``objective["capacity_rps"]`` is t.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ipa_energy.cluster import ClusterSupply
from ipa_energy.spec import PipelineSpec, Plan
from planner.checks import evaluate_plan
from planner.constants import DEFAULT_BATCH_SIZES, DEFAULT_MAX_REPLICAS, DEFAULT_MAX_VARIANTS, OBJ_TOL
from planner.infadapter import solve_infadapter
from planner.policies import check_policy, is_static, restrictions
from planner.best_effort import solve_best_effort
from planner.caps import Capacity, capacities, capacity_terms, fill_factor
from planner.program import REPLICA_LIMIT, solve_optimum
from planner.solver import DEFAULT_SOLVER
from planner.terms import LatencyModel, ProfileLookup, Weights, plan_from_choice, stage_options

__all__ = ["against_reference", "compare_policies", "optimize", "uses_reference"]

logger = logging.getLogger(__name__)


def optimize(
    pipeline: PipelineSpec,
    profiles: ProfileLookup,
    load: float,
    *,
    sla_ms: float | None = None,
    weights: Weights = Weights(),
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    max_replicas: int = DEFAULT_MAX_REPLICAS,
    policy: str = "ipa-energy",
    margin: float = 1.0,
    current: Plan | None = None,
    replicas: int | Mapping[str, int] | None = None,
    static_plan: Plan | None = None,
    solver: str = DEFAULT_SOLVER,
    max_variants: int = DEFAULT_MAX_VARIANTS,
    queueing: bool = True,
    supply: ClusterSupply | None = None,
    serving_cpu_s: float = 0.0,
    fill_rps: float | None = None,
    reference: Plan | None = None,
) -> Plan:
    """Solve the program for `pipeline` at predicted `load` (req/s) and return the Plan.

    `profiles`: ``{(variant, batch): Profile}`` (see :func:`planner.profiles.profiles_from_store`);
    `margin`: headroom multiplier, λ̂ = load × margin (1.0 = none); `sla_ms`: end-to-end SLA
    (default ``pipeline.sla_ms``); `max_replicas`: N per stage; `current`: the running plan,
    for the fewest-changes tie-break; `replicas`: fixed replica counts (per stage, or one for
    all): ``rim``'s (1 per stage when not given), or any policy's (the loop's bridge plan);
    `static_plan`: the plan of ``static``; `max_variants`: the most variants in an
    ``infadapter`` mix. `queueing`: latency includes the p99 wait for a free replica (False:
    IPA's p99 + batch fill); `supply`: the cluster's physical cores and memory, which the
    plan's requests and replicas must fit (None: not limited), `serving_cpu_s` the CPU a request
    costs outside the stages (ingress, proxy); `fill_rps`: the rate batches fill at now (default
    λ̂; the loop passes the observed rate, so a plan made ahead of a predicted rise never waits
    for batches the present load cannot fill). `reference`: ipa-energy's IPA plan at these same
    inputs where the caller already has it (scale mode's grid keeps it); None: solved here.
    Never raises for an infeasible load: the result
    is then a best-effort plan with ``objective["feasible"] == 0`` (see the module docstring).
    Raises ValueError for an unknown policy, or ``infadapter`` on a multi-stage pipeline.
    """
    t0 = time.perf_counter()
    lam = float(load) * float(margin)
    sla = float(pipeline.sla_ms if sla_ms is None else sla_ms)
    if is_static(policy):
        plan = static_plan or current or pipeline.default_plan()
        try:
            return evaluate_plan(pipeline, plan, profiles, load, sla, weights, policy=policy, margin=margin,
                                 model=LatencyModel(queueing=queueing))
        except Exception as e:
            logger.warning("static plan cannot be evaluated: %s", e)
            return plan.model_copy(update={"policy": policy, "objective": {"feasible": 0.0}})
    check_policy(pipeline, policy)
    if policy == "infadapter":
        return solve_infadapter(pipeline, profiles, lam, sla, weights.model_copy(update={"gamma": 0.0}),
                                batch_sizes=batch_sizes, max_replicas=max_replicas, max_variants=max_variants,
                                margin=margin, solver=solver, current=current, t0=t0)
    w, allowed, fixed = restrictions(pipeline, policy, weights, replicas)
    # N: as asked (or the fixed counts), at most what a StagePlan can hold
    n_max = min(REPLICA_LIMIT, int(max(max_replicas, max((f for f in fixed if f is not None), default=1))))
    sizes = sorted({int(b) for b in batch_sizes if int(b) >= 1})
    options = stage_options(pipeline, profiles, sizes, lam, allowed)
    cur_stages = None
    if current is not None and current.pipeline == pipeline.name:
        cur_stages = [current.stages.get(st.name) for st in pipeline.stages]
    fill = fill_factor(fill_rps, lam)
    tried = capacities(supply, lam, queueing, serving_cpu_s, fill)
    w, against = _against_ipa(pipeline, profiles, load, policy, w, weights, reference, sla=sla, sizes=sizes,
                              max_replicas=max_replicas, margin=margin, solver=solver, queueing=queueing,
                              supply=supply, serving_cpu_s=serving_cpu_s, fill_rps=fill_rps, replicas=replicas)
    floor = against.get("accuracy_floor")
    min_log_acc = math.log(floor) if floor is not None else None
    try:
        # The best plan over the utilisation caps (ties: the lowest cap, the most headroom): a cap
        # whose bound cannot beat the best so far by more than OBJ_TOL is not solved; the
        # fewest-changes tie-break runs once, at the chosen cap (with no running plan, nothing to break).
        best: tuple[float, Capacity, list] | None = None
        for cap in tried:
            found = solve_optimum(options, lam, sla, n_max, fixed, w, solver, cur_stages, cap, tie_break=False,
                                  min_log_acc=min_log_acc, beat=best[0] if best is not None else None)
            if found is not None and (best is None or found[1] > best[0] + OBJ_TOL):
                best = (found[1], cap, found[0])
        if best is not None:
            cap, choice = best[1], best[2]
            if cur_stages is not None:
                choice, _ = solve_optimum(options, lam, sla, n_max, fixed, w, solver, cur_stages, cap,
                                          min_log_acc=min_log_acc)
            plan = _planned(plan_from_choice(pipeline, choice, lam, w, policy, True, margin, t0, cap.model), cap,
                            supply, lam, serving_cpu_s)
            return plan.model_copy(update={"objective": {**plan.objective, **against}})
        cap = tried[-1] if tried else Capacity(model=LatencyModel(queueing=queueing, fill_factor=fill))
        choice = solve_best_effort(options, lam, sla, n_max, fixed, w, solver, cap)
        if choice is not None:
            return _planned(plan_from_choice(pipeline, choice, lam, w, policy, False, margin, t0, cap.model), cap,
                            supply, lam, serving_cpu_s)
        logger.warning("no profiled option for some stage of %s; returning the default plan", pipeline.name)
    except Exception:  # never raise from the planner
        logger.exception("planner failed for %s at %.3g req/s", pipeline.name, lam)
    fallback = current if current is not None and current.pipeline == pipeline.name else pipeline.default_plan()
    return fallback.model_copy(update={
        "policy": policy, "predicted_load_rps": max(lam, 0.0), "predicted_power_w": None,
        "predicted_j_per_request": None, "objective": {"feasible": 0.0},
        "solve_time_s": time.perf_counter() - t0})


def _against_ipa(pipeline: PipelineSpec, profiles: ProfileLookup, load: float, policy: str, w: Weights,
                 weights: Weights, reference: Plan | None = None, **kw: Any) -> tuple[Weights, dict[str, float]]:
    """ipa-energy's weights and terms set against IPA's plan at the same load, capacity and
    fixed replicas (`reference` if given, else solved with `kw`, optimize's arguments; see
    :func:`against_reference`). Other policies: `w` as given, no terms."""
    if not uses_reference(policy, w):
        return w, {}
    if reference is None:
        sla, sizes = kw.pop("sla"), kw.pop("sizes")
        reference = optimize(pipeline, profiles, load, sla_ms=sla, weights=weights, batch_sizes=sizes, policy="ipa",
                             **kw)
    return against_reference(pipeline, reference, w)


def uses_reference(policy: str, w: Weights) -> bool:
    """Whether `policy` with weights `w` is planned against IPA's plan (ipa-energy with an
    energy elasticity or an accuracy budget)."""
    if policy != "ipa-energy" or w.gamma <= 0 and w.gamma_relative is None:
        return False
    return w.gamma_relative is not None or w.accuracy_budget is not None


def against_reference(pipeline: PipelineSpec, reference: Plan, w: Weights) -> tuple[Weights, dict[str, float]]:
    """(weights, objective terms) of an ipa-energy plan made against IPA's `reference` plan:
    γ per watt = ``gamma_relative`` / the reference's predicted watts (``gamma_per_w``; an
    elasticity: the same trade of accuracy for a share of the power at every load, where a
    weight per watt buys ever more accuracy as the load falls), the reference's accuracy
    (``reference_accuracy``) and the floor = that − ``accuracy_budget`` (``accuracy_floor``).
    An infeasible reference (no plan meets the load): `w` as given (γ per watt), no terms."""
    if not reference.objective.get("feasible"):
        return w, {}
    accuracy = pipeline.accuracy(reference)
    terms = {"reference_accuracy": accuracy}
    if w.gamma_relative is not None and (reference.predicted_power_w or 0.0) > 0:
        w = w.model_copy(update={"gamma": w.gamma_relative / reference.predicted_power_w})
        terms["gamma_per_w"] = w.gamma
    if w.accuracy_budget is not None and accuracy > w.accuracy_budget:
        terms["accuracy_floor"] = accuracy - w.accuracy_budget
    return w, terms


def _planned(plan: Plan, cap: Capacity, supply: ClusterSupply | None, lam: float, serving_cpu_s: float) -> Plan:
    """`plan` with the capacity it was planned under recorded in its objective terms."""
    extra = capacity_terms(cap, supply, serving_cpu_s)
    if "utilisation_cap" in extra:
        extra["node_utilisation"] = (plan.objective["cpu_cores"] + lam * serving_cpu_s + supply.background_cores) / supply.cores
    return plan.model_copy(update={"objective": {**plan.objective, **extra}})


def compare_policies(pipeline: PipelineSpec, profiles: ProfileLookup, loads: Iterable[float],
                     policies: Sequence[str] = ("ipa", "ipa-energy"), **kw: Any) -> list[Plan]:
    """One plan per (load, policy), loads outermost; `kw` goes to :func:`optimize`."""
    return [optimize(pipeline, profiles, load, policy=p, **kw) for load in loads for p in policies]
