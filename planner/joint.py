"""One plan for several pipelines that share a cluster: their programs joined into one MILP.

:func:`optimize_joint` plans K pipelines together (issue 13: "10 pipelines sharing one
cluster, with a joint plan each interval"; issue 11: "all pipelines of one app share the
capacity"). Each pipeline keeps its own program (:mod:`planner.program`): its candidates, its
throughput (every candidate serves its λ̂), its SLA (its own latency constraint), its policy's
restrictions and weights. What they share is the cluster: one node utilisation cap ρ for all
(the contention stretch is per node, whoever's replicas load it), and one CPU and one memory
constraint over every pipeline's stages::

    Σ_pipelines Σ_stages λ̂_p·cpu_s·z ≤ ρ·cores − Σ_p λ̂_p·serving_cpu_s − background
    Σ_pipelines Σ_stages n·memory_mb·z ≤ 80 % of memory

The objective is the sum of the pipelines' objectives, each with its own weights. As in
:func:`planner.optimizer.optimize`, every cap of the grid is tried and the best is kept
(ties: the lowest cap); with running plans, a second solve keeps the optimum and makes the
fewest changes over all pipelines. One pipeline (K = 1) is :func:`optimize`'s program exactly.

Each returned Plan carries the objective terms :func:`optimize` fills. Its
``background_cores`` adds the other pipelines' CPU (their stages' and serving path's) to the
cluster's, so that :func:`planner.checks.check_plan` on any one plan checks the shared CPU
constraint; ``node_utilisation`` is the cluster's, all pipelines together.

Infeasible loads
----------------
When no cap admits every pipeline within its SLA at its λ̂, :func:`optimize_joint` never
raises: it plans the pipelines one at a time, in the order given (the caller's priority),
each with :func:`optimize` on what the pipelines before it left: their stages' CPU (at the
load their plans serve) and serving path count as background cores, their replicas' memory
is taken from the nodes'. A pipeline that still fits gets a feasible plan; the others a
best-effort plan (``objective["feasible"] == 0``). These plans no longer share one cap: an
earlier pipeline's latency is predicted at its own cap, which the later ones may raise.

ipa-energy pipelines are planned against IPA's (:func:`planner.optimizer.against_reference`):
their reference is the joint plan with each of them planned as ipa, on the same cluster. Not
joined: ``static*`` and ``infadapter`` (plans of their own); they raise ValueError.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from collections.abc import Mapping, Sequence
from typing import TypeVar

from ipa_energy.cluster import ClusterSupply
from ipa_energy.spec import PipelineSpec, Plan
from planner.constants import DEFAULT_BATCH_SIZES, DEFAULT_MAX_REPLICAS, MEMORY_FRACTION, OBJ_TOL
from planner.optimizer import _planned, against_reference, optimize, uses_reference
from planner.policies import check_policy, is_static, restrictions
from planner.caps import Capacity, capacities, fill_factor
from planner.program import REPLICA_LIMIT, Demand, solve_joint
from planner.solver import DEFAULT_SOLVER
from planner.terms import LatencyModel, ProfileLookup, Weights, plan_from_choice, stage_options

__all__ = ["optimize_joint"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _each(value: T | Sequence[T] | None, k: int, one: type | tuple[type, ...]) -> list:
    """`value` per pipeline: a sequence of K, or one value (or None) for all."""
    if value is None or isinstance(value, one):
        return [value] * k
    out = list(value)
    if len(out) != k:
        raise ValueError(f"{len(out)} values for {k} pipelines")
    return out


def optimize_joint(
    pipelines: Sequence[PipelineSpec],
    profiles: ProfileLookup | Sequence[ProfileLookup],
    loads: Sequence[float],
    *,
    sla_ms: float | Sequence[float | None] | None = None,
    weights: Weights | Sequence[Weights] = Weights(),
    policy: str | Sequence[str] = "ipa-energy",
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    max_replicas: int | Sequence[int] = DEFAULT_MAX_REPLICAS,
    margin: float = 1.0,
    current: Sequence[Plan | None] | None = None,
    solver: str = DEFAULT_SOLVER,
    queueing: bool = True,
    supply: ClusterSupply | None = None,
    serving_cpu_s: float = 0.0,
    fill_rps: Sequence[float | None] | None = None,
) -> list[Plan]:
    """One Plan per pipeline of `pipelines`, planned together on the shared `supply` (module docstring).

    Per pipeline (a sequence of K, or one value for all): `profiles`, `loads` (req/s; λ̂ = load ×
    `margin`), `sla_ms` (default: each pipeline's), `weights`, `policy` (ipa, ipa-energy,
    fa2-low, fa2-high, rim), `max_replicas`, `current` (running plans: the fewest-changes
    tie-break), `fill_rps`. Shared: `supply`, `serving_cpu_s`, `queueing`, `batch_sizes`,
    `solver`. Never raises for an infeasible load (the module docstring says what it returns);
    raises ValueError for a policy it cannot join or mismatched lengths.
    """
    t0 = time.perf_counter()
    k = len(pipelines)
    if k == 0:
        return []
    profs = [profiles] * k if isinstance(profiles, Mapping) else _each(profiles, k, ())
    raw = [float(x) for x in _each(loads, k, ())]
    lams = [x * float(margin) for x in raw]
    slas = [float(p.sla_ms if s is None else s) for p, s in zip(pipelines, _each(sla_ms, k, (int, float)))]
    ws = _each(weights, k, Weights)
    pols = _each(policy, k, str)
    n_caps = _each(max_replicas, k, int)
    currents = _each(current, k, Plan)
    fills = [fill_factor(f, lam) for f, lam in zip(_each(fill_rps, k, (int, float)), lams)]
    sizes = sorted({int(b) for b in batch_sizes if int(b) >= 1})
    references = _references(pipelines, profs, raw, slas, ws, pols, n_caps, margin, solver, queueing, supply,
                             serving_cpu_s, fill_rps, sizes)
    demands, terms = [], []  # terms: what each pipeline was planned against (its plan's objective)
    for p, prof, lam, sla, w, pol, n_cap, cur in zip(pipelines, profs, lams, slas, ws, pols, n_caps, currents):
        if is_static(pol) or pol == "infadapter":
            raise ValueError(f"policy {pol!r} makes a plan of its own; a joint plan joins ipa, ipa-energy, fa2-*, rim")
        check_policy(p, pol)
        wk, allowed, fixed = restrictions(p, pol, w, None)
        n_max = min(REPLICA_LIMIT, int(max(n_cap, max((f for f in fixed if f is not None), default=1))))
        stages = [cur.stages.get(st.name) for st in p.stages] if cur is not None and cur.pipeline == p.name else None
        against = {}
        if references[len(demands)] is not None:
            wk, against = against_reference(p, references[len(demands)], wk)
        terms.append(against)
        floor = against.get("accuracy_floor")
        demands.append(Demand(stage_options(p, prof, sizes, lam, allowed), lam, sla, n_max, fixed, wk,
                              LatencyModel(queueing=queueing), stages, min_log_acc=None if floor is None else math.log(floor)))
    total = sum(lams)
    plans: list[Plan] | None = None
    try:
        # The best plan over the caps (ties: the lowest). A cap whose bound (each stage's best
        # candidate, nothing shared) cannot beat the best so far is not solved; nor, while the
        # stretch grows with the cap, are the caps above it (their candidates are fewer and dearer).
        best: tuple[float, Capacity, list] | None = None
        last = 0.0
        for cap in capacities(supply, total, queueing, serving_cpu_s, 1.0):
            stats: dict = {}
            found = solve_joint(_at(demands, cap, fills), solver, cap, tie_break=False,
                                beat=None if best is None else best[0], stats=stats)
            if found is not None and (best is None or found[1] > best[0] + OBJ_TOL):
                best = (found[1], cap, found[0])
            elif best is not None and stats.get("bound", math.inf) + 1e-9 <= best[0] + OBJ_TOL \
                    and cap.model.stretch >= last:
                break
            last = cap.model.stretch
        if best is not None:
            cap, choices = best[1], best[2]
            at = _at(demands, cap, fills)
            if any(d.current is not None for d in at):  # the fewest-changes second solve
                choices, _ = solve_joint(at, solver, cap)
            plans = [plan_from_choice(p, ch, d.lam, d.weights, pol, True, margin, t0, d.model) for p, ch, d, pol
                     in zip(pipelines, choices, at, pols)]
            plans = [plan.model_copy(update={"objective": {**plan.objective, **t}}) for plan, t in zip(plans, terms)]
            plans = _shared(plans, cap, supply, lams, serving_cpu_s)
    except Exception:  # never raise from the planner
        logger.exception("joint planner failed for %d pipelines", k)
    if plans is None:
        plans = _one_by_one(pipelines, profs, raw, lams, slas, ws, pols, n_caps, currents, fill_rps, sizes, margin,
                            solver, queueing, supply, serving_cpu_s)
    return plans


def _references(pipelines, profs, loads, slas, ws, pols, n_caps, margin, solver, queueing, supply, serving_cpu_s,
                fill_rps, sizes) -> list[Plan | None]:
    """Per pipeline, the IPA plan its ipa-energy plan is made against (None: not planned against
    one): the joint plan with every ipa-energy pipeline planned as ipa, on the same cluster."""
    if not any(uses_reference(pol, w) for pol, w in zip(pols, ws)):
        return [None] * len(pipelines)
    plans = optimize_joint(pipelines, profs, loads, sla_ms=slas, weights=ws, batch_sizes=sizes, max_replicas=n_caps,
                           policy=["ipa" if pol == "ipa-energy" else pol for pol in pols], margin=margin, solver=solver,
                           queueing=queueing, supply=supply, serving_cpu_s=serving_cpu_s, fill_rps=fill_rps)
    return [plan if uses_reference(pol, w) else None for plan, pol, w in zip(plans, pols, ws)]


def _at(demands: list[Demand], cap: Capacity, fills: list[float]) -> list[Demand]:
    """`demands` under the cap's latency model, each with its own batch-fill rate."""
    return [replace(d, model=replace(cap.model, fill_factor=f)) for d, f in zip(demands, fills)]


def _shared(plans: list[Plan], cap: Capacity, supply: ClusterSupply | None, lams: list[float],
            serving_cpu_s: float) -> list[Plan]:
    """Each plan with the capacity terms of the shared cap: the other pipelines count as background."""
    used = [p.objective["cpu_cores"] + lam * serving_cpu_s for p, lam in zip(plans, lams)]
    out = []
    for i, (plan, lam) in enumerate(zip(plans, lams)):
        mine = supply
        if supply is not None:
            mine = supply.model_copy(update={"background_cores": supply.background_cores + sum(used) - used[i]})
        out.append(_planned(plan, cap, mine, lam, serving_cpu_s))
    return out


def _one_by_one(pipelines, profs, loads, lams, slas, ws, pols, n_caps, currents, fill_rps, sizes, margin, solver, queueing,
                supply: ClusterSupply | None, serving_cpu_s: float) -> list[Plan]:
    """The fallback: each pipeline in turn on what the ones before it left (module docstring)."""
    plans = []
    fills = _each(fill_rps, len(pipelines), (int, float))
    background, memory = 0.0, 0.0
    for p, prof, load, lam, sla, w, pol, n_cap, cur, fill in zip(pipelines, profs, loads, lams, slas, ws, pols, n_caps,
                                                                 currents, fills):
        left = None
        if supply is not None:
            share = max(1e-9, 1.0 - memory / (MEMORY_FRACTION * supply.memory_mb))
            left = supply.model_copy(update={
                "background_cores": supply.background_cores + background,
                "nodes": tuple(n.model_copy(update={"memory_mb": n.memory_mb * share}) for n in supply.nodes)})
        plan = optimize(p, prof, load, sla_ms=sla, weights=w, batch_sizes=sizes, max_replicas=n_cap,
                        policy=pol, margin=margin, current=cur, solver=solver, queueing=queueing, supply=left,
                        serving_cpu_s=serving_cpu_s, fill_rps=fill)
        o = plan.objective
        served = min(1.0, o.get("capacity_rps", lam) / lam) if lam > 0 else 1.0
        background += o.get("cpu_cores", 0.0) * served + lam * serving_cpu_s
        memory += sum(_memory_mb(prof, sp) for sp in plan.stages.values())
        plans.append(plan)
    return plans


def _memory_mb(profiles: ProfileLookup, sp) -> float:
    """The memory a stage's replicas hold (the program's memory term)."""
    return sum((getattr(profiles.get((m.variant, m.batch_size)), "memory_mb_per_replica", 0.0) or 0.0) * m.replicas
               for m in sp.members())
