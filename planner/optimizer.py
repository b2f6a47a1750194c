"""IPA's integer program, corrected, with energy as a third objective (docs/design.md, "Planning").

The program
-----------
For every stage s, option (m, b) = (variant, batch size) with a profile, and replica cap N:

* ``x[s,m,b]`` binary, ``Σ_{m,b} x[s,m,b] = 1`` (one variant and one batch size per stage);
* ``n_s`` integer in ``1..N``; ``y[s,m,b] = n_s·x[s,m,b]`` linearised exactly:
  ``y ≤ N·x``, ``Σ_{m,b} y[s,m,b] = n_s``, ``y ≥ 0`` integer;
* throughput: ``Σ_{m,b} h(s,m,b)·y[s,m,b] ≥ λ̂`` per stage (h = profile ``throughput_rps``);
* latency: ``Σ_s Σ_{m,b} (l99(s,m,b) + 1000·(b−1)/λ̂)·x[s,m,b] ≤ SLA`` (ms). The batch-fill
  time multiplies the *binary* x (IPA's intended queueing term), so it tightens, never
  loosens, the SLA;
* accuracy: ``Σ_s Σ log a(s,m)·x`` (= log of the pipeline accuracy Π_s a(s,m), exact);
* power (W): ``P = λ̂·Σ_s Σ e(s,m,b)·x + Σ_s Σ p_idle(s,m,b)·y`` with e the dynamic
  J/request and p_idle the replica's allocation idle power from the profile;
  J/request = P/λ̂;
* cost: ``Σ r(s,m)·y`` with ``r = num_cpus + num_gpus`` of the replica (one "resource unit"
  per logical CPU or per whole GPU, as IPA counts cores; a GPU fraction counts its fraction);
* objective: ``max α·accuracy − β·cost − γ·P − δ·Σ b·x``.

λ̂ = λ × ``margin`` (headroom; ``margin=1.0``, the default, plans for exactly the predicted
load; 1.2 plans for 20 % more). λ̂ is used everywhere λ appears: throughput, batch-fill time,
power. ``Plan.predicted_load_rps`` is λ̂.

Exact presolve: options that can never be in a feasible solution (their own latency term
already exceeds the SLA, or N replicas of them cannot reach λ̂) get no variables. This does
not change the optimum; it only shrinks the model.

Default weights (:class:`Weights`) and why
------------------------------------------
``α = 1`` per unit of log-accuracy, ``γ = 0.01`` per W, ``β = 0.01`` per resource unit,
``δ = 1e-4`` per unit of batch size. With the mini video profiles (cpu-amd-epyc-2c):
switching the detector from ssdlite (0.213) to fcos (0.392) is worth 0.61 log-accuracy, and
the classifier from resnet18 to resnet152 0.115, while the power difference at 10 req/s is
≈2–4 W per stage (0.02–0.04 objective): accuracy comes first. Near-equal variants
(resnet101 vs resnet152, Δlog a = 0.012, ≈0.8 W at 10 req/s) are where energy decides: one
watt is worth 1 % of relative pipeline accuracy. Cost (0.005 per 0.5-CPU replica) is below a
replica's idle power charge (0.6 W·γ = 0.006), and the batch penalty (8·δ = 0.0008 at b=8)
only breaks ties between otherwise equal batch sizes, as IPA's small batch weight does. The
``ipa`` policy is the same program with γ = 0.

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
throughput t = min_s Σ h·y (capped at λ̂), keeping the latency constraint when any choice of
variants and batches meets the SLA at all (else dropping it), and among the plans with the
largest t (within 1e-7) maximises the real objective. ``objective["capacity_rps"]`` is t.

The model is solved exactly by :mod:`planner.solver` (HiGHS in-process, or CBC).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pulp

from dataclasses import dataclass, replace

from ipa_energy.cluster import ClusterSupply
from ipa_energy.spec import PipelineSpec, Plan, StagePlan
from planner.capacity import stretch
from planner.checks import evaluate_plan
from planner.constants import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MAX_VARIANTS,
    LAT_TOL,
    MEMORY_FRACTION,
    OBJ_TOL,
    UTILISATION_GRID,
)
from planner.infadapter import solve_infadapter
from planner.policies import check_policy, is_static, restrictions
from planner.solver import DEFAULT_SOLVER, solve_problem
from planner.terms import (
    IPA_LATENCY,
    LatencyModel,
    Option,
    ProfileLookup,
    Weights,
    choice_terms,
    plan_from_choice,
    stage_capacity_rps,
    stage_latency_ms,
    stage_options,
)

__all__ = ["compare_policies", "optimize"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capacity:
    """What a plan may consume, and the latency model that goes with it.

    `cpu_cores`: CPU core-seconds per second the stages' requests may use (ρ × physical cores
    − the serving path's own share), None = not limited; `memory_mb`: resident memory the
    replicas may hold, None = not limited; `utilisation`: ρ, the node utilisation cap the
    latency model's contention stretch was computed at.
    """

    model: LatencyModel = IPA_LATENCY
    cpu_cores: float | None = None
    memory_mb: float | None = None
    utilisation: float | None = None


@dataclass(frozen=True)
class _Candidate:
    """One way to run a stage: `n` replicas of an option, with its latency and capacity at λ̂."""

    option: Option
    n: int
    latency_ms: float
    capacity_rps: float


def _candidates(opts: Sequence[Option], lam: float, sla_ms: float, n_max: int, fixed: int | None,
                model: LatencyModel, keep: tuple[str, int, int] | None = None, *,
                best_effort: bool = False, latency: bool = True) -> list[_Candidate]:
    """The (option, n) a stage may run. Exact presolve: a candidate that cannot serve λ̂ or meet
    the SLA on its own gets no variable, nor does n past the point where more replicas no longer
    shorten the wait (they only cost more); `keep` (the running variant, batch, n) stays a
    candidate for the fewest-changes tie-break. `best_effort`: every n, latency without the wait
    (an overloaded stage queues without bound; the served load is what is maximised)."""
    out = []
    for o in opts:
        for n in ((fixed,) if fixed is not None else range(1, n_max + 1)):
            cap = stage_capacity_rps(o, n, model)
            if best_effort:
                lat = stage_latency_ms(o, n, lam, replace(model, queueing=False))
                if not latency or lat <= sla_ms + LAT_TOL:
                    out.append(_Candidate(o, n, lat, cap))
                continue
            if cap < lam * (1 - 1e-12):
                continue
            lat = stage_latency_ms(o, n, lam, model)
            if lat <= sla_ms + LAT_TOL:
                out.append(_Candidate(o, n, lat, cap))
            no_wait = lat <= stage_latency_ms(o, n, lam, replace(model, queueing=False))
            if no_wait and fixed is None:  # n past this only costs more: keep the running n, if larger
                if keep is not None and (o.variant, o.batch) == keep[:2] and keep[2] > n:
                    big = _Candidate(o, keep[2], stage_latency_ms(o, keep[2], lam, model),
                                     stage_capacity_rps(o, keep[2], model))
                    if keep[2] <= n_max and big.latency_ms <= sla_ms + LAT_TOL:
                        out.append(big)
                break
    return out


class _Program:
    """The MILP over candidates: one binary z per (stage, option, n), exactly one per stage."""

    def __init__(self, cands: list[list[_Candidate]], lam: float, sla_ms: float, capacity: Capacity, *,
                 latency: bool = True, target: float | None = None, maximise_served: bool = False):
        self.cands, self.lam = cands, lam
        self.prob = pulp.LpProblem("ipa", pulp.LpMaximize)
        self.z = [[pulp.LpVariable(f"z_{s}_{k}", cat="Binary") for k in range(len(cs))] for s, cs in enumerate(cands)]
        for s, zs in enumerate(self.z):
            self.prob += pulp.lpSum(zs) == 1, f"one_{s}"
        if latency:
            self.prob += pulp.lpSum(c.latency_ms * z for cs, zs in self._pairs() for c, z in zip(cs, zs)) <= sla_ms, "latency"
        if target is not None:
            for s, (cs, zs) in enumerate(self._pairs()):
                self.prob += pulp.lpSum(c.capacity_rps * z for c, z in zip(cs, zs)) >= target, f"tput_{s}"
        self.served = None
        if maximise_served:  # t ≤ λ̂ served by every stage; its CPU: w = t·z, linearised exactly
            self.served = t = pulp.LpVariable("served", 0, max(lam, 0.0))
            cpu = []
            for s, (cs, zs) in enumerate(self._pairs()):
                self.prob += pulp.lpSum(c.capacity_rps * z for c, z in zip(cs, zs)) - t >= 0, f"served_{s}"
                for k, (c, z) in enumerate(zip(cs, zs)):
                    if c.option.cpu_s > 0 and capacity.cpu_cores is not None:
                        w = pulp.LpVariable(f"w_{s}_{k}", 0, max(lam, 0.0))
                        self.prob += w - t <= 0, f"w_t_{s}_{k}"
                        self.prob += w - max(lam, 0.0) * z <= 0, f"w_z_{s}_{k}"
                        self.prob += w - t - max(lam, 0.0) * z >= -max(lam, 0.0), f"w_tz_{s}_{k}"
                        cpu.append((w, c.option.cpu_s))
            if cpu:
                self.prob += pulp.LpAffineExpression(cpu) <= capacity.cpu_cores, "cpu"
        elif capacity.cpu_cores is not None:
            load = lam if target is None else target
            self.prob += pulp.lpSum(load * c.option.cpu_s * z for cs, zs in self._pairs()
                                    for c, z in zip(cs, zs)) <= capacity.cpu_cores, "cpu"
        if capacity.memory_mb is not None:
            self.prob += pulp.lpSum(c.option.memory_mb_per_replica * c.n * z for cs, zs in self._pairs()
                                    for c, z in zip(cs, zs)) <= capacity.memory_mb, "memory"

    def _pairs(self):
        return zip(self.cands, self.z)

    def objective(self, w: Weights) -> pulp.LpAffineExpression:
        terms = []
        for cs, zs in self._pairs():
            for c, z in zip(cs, zs):
                o = c.option
                terms.append((z, w.alpha * o.log_acc - w.gamma * self.lam * o.energy_j - w.delta * o.batch
                              - (w.beta * o.resources + w.gamma * o.idle_w) * c.n))
        return pulp.LpAffineExpression(terms)

    def solve(self, solver: str) -> bool:
        return solve_problem(self.prob, solver)

    def choice(self) -> list[tuple[Option, int]]:
        out = []
        for cs, zs in self._pairs():
            k = max(range(len(cs)), key=lambda j: zs[j].varValue or 0.0)
            out.append((cs[k].option, cs[k].n))
        return out


def _keep(cur: StagePlan | None) -> tuple[str, int, int] | None:
    return None if cur is None else (cur.variant, cur.batch_size, cur.replicas)


def _solve_main(options, lam, sla, n_max, fixed_n, weights, solver, current_stages, capacity: Capacity,
                tie_break: bool = True):
    """(choice, objective) of the program's optimum (fewest changes among equal optima); None if infeasible."""
    cur = current_stages or [None] * len(options)
    cands = [_candidates(so, lam, sla, n_max, f, capacity.model, _keep(c)) for so, f, c in zip(options, fixed_n, cur)]
    if any(not cs for cs in cands) or sum(min(c.latency_ms for c in cs) for cs in cands) > sla + LAT_TOL:
        return None
    m = _Program(cands, lam, sla, capacity)
    obj = m.objective(weights)
    m.prob.setObjective(obj)
    if not m.solve(solver):
        return None
    choice = m.choice()
    best = choice_terms(choice, lam, weights, capacity.model)["objective"]
    if current_stages is None or not tie_break:
        return choice, best
    # Second solve: stay at the optimum, minimise changes (variant, batch size, replicas per stage).
    m.prob += obj >= best - OBJ_TOL, "stay_optimal"
    changes = []
    for cs, zs, c in zip(cands, m.z, cur):
        if c is None:
            continue
        changes += [(z, (cand.option.variant != c.variant) + (cand.option.batch != c.batch_size) + (cand.n != c.replicas))
                    for cand, z in zip(cs, zs)]
    m.prob.sense = pulp.LpMinimize
    m.prob.setObjective(pulp.LpAffineExpression(changes))
    if m.solve(solver):
        alt = m.choice()
        if choice_terms(alt, lam, weights, capacity.model)["objective"] >= best - OBJ_TOL:
            return alt, best
    return choice, best


def _solve_best_effort(options, lam, sla, n_max, fixed_n, weights, solver, capacity: Capacity):
    """Max served throughput t (≤ λ̂), then the best objective among plans serving t."""
    if any(not o for o in options):
        return None
    plain = replace(capacity.model, queueing=False)
    min_lat = sum(min(stage_latency_ms(o, 1, lam, plain) for o in so) for so in options)
    keep_latency = min_lat <= sla + LAT_TOL
    cands = [_candidates(so, lam, sla, n_max, f, capacity.model, best_effort=True, latency=keep_latency)
             for so, f in zip(options, fixed_n)]
    if any(not cs for cs in cands):
        return None
    m = _Program(cands, lam, sla, capacity, latency=keep_latency, maximise_served=True)
    m.prob.setObjective(pulp.LpAffineExpression([(m.served, 1.0)]))
    if not m.solve(solver):
        return None
    first = m.choice()
    served = min(m.served.varValue or 0.0, lam)
    # Second solve: the program itself with throughput target `served` (latency as above).
    target = served * (1 - 1e-9)
    m2 = _Program(cands, lam, sla, capacity, latency=keep_latency, target=target)
    m2.prob.setObjective(m2.objective(weights))
    if m2.solve(solver):
        second = m2.choice()
        if min(choice_terms(second, lam, weights, plain)["capacity_rps"], lam) >= served - 1e-6:
            return second
    return first


def capacities(supply: ClusterSupply | None, lam: float, queueing: bool, serving_cpu_s: float,
               fill_factor: float = 1.0) -> list[Capacity]:
    """The capacities to try: one per node utilisation cap ρ of UTILISATION_GRID, or unlimited."""
    if supply is None:
        return [Capacity(model=LatencyModel(queueing=queueing, fill_factor=fill_factor))]
    cores = min(n.cores for n in supply.nodes)  # contention is per node: the smallest one stretches most
    out = []
    for rho in UTILISATION_GRID:
        cpu = rho * supply.cores - lam * serving_cpu_s
        if cpu > 0:
            out.append(Capacity(model=LatencyModel(queueing=queueing, stretch=stretch(cores, rho), fill_factor=fill_factor),
                                cpu_cores=cpu, memory_mb=MEMORY_FRACTION * supply.memory_mb, utilisation=rho))
    return out


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
) -> Plan:
    """Solve the program for `pipeline` at predicted `load` (req/s) and return the Plan.

    `profiles`: ``{(variant, batch): Profile}`` (see :func:`planner.profiles.profiles_from_store`);
    `margin`: headroom multiplier, λ̂ = load × margin (1.0 = none); `sla_ms`: end-to-end SLA
    (default ``pipeline.sla_ms``); `max_replicas`: N per stage; `current`: the running plan,
    for the fewest-changes tie-break; `replicas`: the fixed replica counts of ``rim``;
    `static_plan`: the plan of ``static``; `max_variants`: the most variants in an
    ``infadapter`` mix. `queueing`: latency includes the p99 wait for a free replica (False:
    IPA's p99 + batch fill); `supply`: the cluster's physical cores and memory, which the
    plan's requests and replicas must fit (None: not limited), `serving_cpu_s` the CPU a request
    costs outside the stages (ingress, proxy); `fill_rps`: the rate batches fill at now (default
    λ̂; the loop passes the observed rate, so a plan made ahead of a predicted rise never waits
    for batches the present load cannot fill). Never raises for an infeasible load: the result
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
    n_max = int(max(max_replicas, max((f for f in fixed if f is not None), default=1)))
    sizes = sorted({int(b) for b in batch_sizes if int(b) >= 1})
    options = stage_options(pipeline, profiles, sizes, lam, allowed)
    cur_stages = None
    if current is not None and current.pipeline == pipeline.name:
        cur_stages = [current.stages.get(st.name) for st in pipeline.stages]
    fill_factor = 1.0 if fill_rps is None or lam <= 0 else min(1.0, max(fill_rps, 1e-9) / lam)
    tried = capacities(supply, lam, queueing, serving_cpu_s, fill_factor)
    try:
        # The best plan over the utilisation caps (ties: the lowest cap, the most headroom);
        # the fewest-changes tie-break runs once, at the chosen cap.
        best: tuple[float, Capacity] | None = None
        for cap in tried:
            found = _solve_main(options, lam, sla, n_max, fixed, w, solver, cur_stages, cap, tie_break=False)
            if found is not None and (best is None or found[1] > best[0] + OBJ_TOL):
                best = (found[1], cap)
        if best is not None:
            cap = best[1]
            choice, _ = _solve_main(options, lam, sla, n_max, fixed, w, solver, cur_stages, cap)
            return _planned(plan_from_choice(pipeline, choice, lam, w, policy, True, margin, t0, cap.model), cap,
                            supply, lam, serving_cpu_s)
        cap = tried[-1] if tried else Capacity(model=LatencyModel(queueing=queueing, fill_factor=fill_factor))
        choice = _solve_best_effort(options, lam, sla, n_max, fixed, w, solver, cap)
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


def _planned(plan: Plan, cap: Capacity, supply: ClusterSupply | None, lam: float, serving_cpu_s: float) -> Plan:
    """`plan` with the capacity it was planned under recorded in its objective terms."""
    extra = {"queueing": 1.0 if cap.model.queueing else 0.0, "stretch": cap.model.stretch,
             "fill_factor": cap.model.fill_factor}
    if supply is not None and cap.utilisation is not None:
        extra |= {"utilisation_cap": cap.utilisation, "cores": supply.cores, "serving_cpu_s": serving_cpu_s,
                  "node_utilisation": (plan.objective["cpu_cores"] + lam * serving_cpu_s) / supply.cores}
    return plan.model_copy(update={"objective": {**plan.objective, **extra}})


def compare_policies(pipeline: PipelineSpec, profiles: ProfileLookup, loads: Iterable[float],
                     policies: Sequence[str] = ("ipa", "ipa-energy"), **kw: Any) -> list[Plan]:
    """One plan per (load, policy), loads outermost; `kw` goes to :func:`optimize`."""
    return [optimize(pipeline, profiles, load, policy=p, **kw) for load in loads for p in policies]
