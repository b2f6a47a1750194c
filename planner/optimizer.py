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

from ipa_energy.spec import PipelineSpec, Plan
from planner.checks import evaluate_plan
from planner.constants import DEFAULT_BATCH_SIZES, DEFAULT_MAX_REPLICAS, DEFAULT_MAX_VARIANTS, LAT_TOL, OBJ_TOL
from planner.infadapter import solve_infadapter
from planner.policies import check_policy, is_static, restrictions
from planner.solver import DEFAULT_SOLVER, solve_problem
from planner.terms import Option, ProfileLookup, Weights, choice_terms, plan_from_choice, stage_options

__all__ = ["compare_policies", "optimize"]

logger = logging.getLogger(__name__)


class _Model:
    """The PuLP model of the program over the given options."""

    def __init__(self, options: list[list[Option]], lam: float, sla_ms: float, n_max: int,
                 fixed_n: Sequence[int | None], *, latency: bool = True, throughput: bool = True,
                 cut: Weights | None = None, cut_all: bool = False, target: float | None = None):
        self.options, self.lam, self.n_max = options, lam, n_max
        target = lam if target is None else target
        self.prob = pulp.LpProblem("ipa", pulp.LpMaximize)
        self.x: list[list[pulp.LpVariable]] = []
        self.y: list[list[pulp.LpVariable]] = []
        self.n: list[pulp.LpVariable] = []
        for s, opts in enumerate(options):
            lo, hi = (1, n_max) if fixed_n[s] is None else (fixed_n[s], fixed_n[s])
            n = pulp.LpVariable(f"n_{s}", lo, hi, cat="Integer")
            xs = [pulp.LpVariable(f"x_{s}_{j}", cat="Binary") for j in range(len(opts))]
            ys = [pulp.LpVariable(f"y_{s}_{j}", 0, hi, cat="Integer") for j in range(len(opts))]
            self.prob += pulp.lpSum(xs) == 1, f"one_{s}"
            self.prob += pulp.lpSum(ys) - n == 0, f"sumy_{s}"
            for j, o in enumerate(opts):
                if fixed_n[s] is None and cut is not None and _replica_penalty(o, cut) > 10 * OBJ_TOL:
                    # exact reduction: with a positive price per replica every optimum runs
                    # the fewest replicas that serve the target, so y = u·x
                    self.prob += ys[j] - _replicas_needed(o, target, hi) * xs[j] == 0, f"link_{s}_{j}"
                else:
                    u = _replicas_needed(o, target, hi) if fixed_n[s] is None and cut_all else hi
                    self.prob += ys[j] - u * xs[j] <= 0, f"link_{s}_{j}"
            if throughput:
                self.prob += pulp.lpSum(o.throughput * yj for o, yj in zip(opts, ys)) >= target, f"tput_{s}"
            self.x.append(xs)
            self.y.append(ys)
            self.n.append(n)
        if latency:
            self.prob += pulp.lpSum(o.latency_ms * xj for opts, xs in zip(options, self.x)
                                    for o, xj in zip(opts, xs)) <= sla_ms, "latency"

    def objective(self, w: Weights) -> pulp.LpAffineExpression:
        terms = []
        for opts, xs, ys in zip(self.options, self.x, self.y):
            for o, xj, yj in zip(opts, xs, ys):
                cx = w.alpha * o.log_acc - w.gamma * self.lam * o.energy_j - w.delta * o.batch
                cy = -w.beta * o.resources - w.gamma * o.idle_w
                terms += [(xj, cx), (yj, cy)]
        return pulp.LpAffineExpression(terms)

    def solve(self, solver: str) -> bool:
        return solve_problem(self.prob, solver)

    def choice(self) -> list[tuple[Option, int]]:
        out = []
        for opts, xs, n in zip(self.options, self.x, self.n):
            j = max(range(len(opts)), key=lambda k: xs[k].varValue or 0.0)
            out.append((opts[j], int(round(n.varValue or 0.0))))
        return out


def _replica_penalty(o: Option, w: Weights) -> float:
    return w.beta * o.resources + w.gamma * o.idle_w


def _replicas_needed(o: Option, lam: float, n_max: int) -> int:
    """Fewest replicas of `o` that serve λ̂ (capped at n_max, at least 1)."""
    if o.throughput <= 0:
        return n_max
    n = max(1, math.ceil(lam / o.throughput))
    if n > 1 and (n - 1) * o.throughput >= lam:  # float round-up
        n -= 1
    return int(min(n_max, n))



def _presolve(options: list[list[Option]], lam: float, sla_ms: float, n_max: int,
              fixed_n: Sequence[int | None], *, latency: bool, throughput: bool) -> list[list[Option]]:
    out = []
    for opts, fixed in zip(options, fixed_n):
        cap = n_max if fixed is None else fixed
        out.append([o for o in opts
                    if (not latency or o.latency_ms <= sla_ms + LAT_TOL)
                    and (not throughput or o.throughput * cap >= lam)])
    return out


def _solve_main(options, lam, sla, n_max, fixed_n, weights, solver, current_stages):
    """Optimum of the program (with the fewest-changes tie-break); None if infeasible."""
    opts = _presolve(options, lam, sla, n_max, fixed_n, latency=True, throughput=True)
    if any(not o for o in opts) or sum(min(o.latency_ms for o in so) for so in opts) > sla + LAT_TOL:
        return None
    m = _Model(opts, lam, sla, n_max, fixed_n, cut=weights)
    obj = m.objective(weights)
    m.prob.setObjective(obj)
    if not m.solve(solver):
        return None
    choice = m.choice()
    if current_stages is None:
        return choice
    best = choice_terms(choice, lam, weights)["objective"]
    # Second solve: stay at the optimum, minimise changes.
    m.prob += obj >= best - OBJ_TOL, "stay_optimal"
    changes = []
    for s, (so, xs, n) in enumerate(zip(opts, m.x, m.n)):
        cur = current_stages[s]
        if cur is None:
            continue
        same_v = [xj for o, xj in zip(so, xs) if o.variant == cur.variant]
        same_b = [xj for o, xj in zip(so, xs) if o.batch == cur.batch_size]
        changes.append(1 - pulp.lpSum(same_v) if same_v else 1)
        changes.append(1 - pulp.lpSum(same_b) if same_b else 1)
        c = pulp.LpVariable(f"chg_n_{s}", cat="Binary")
        m.prob += n - cur.replicas <= n_max * c, f"chg_up_{s}"
        m.prob += cur.replicas - n <= n_max * c, f"chg_dn_{s}"
        changes.append(c)
    m.prob.sense = pulp.LpMinimize
    m.prob.setObjective(pulp.lpSum(changes))
    if m.solve(solver):
        alt = m.choice()
        if choice_terms(alt, lam, weights)["objective"] >= best - OBJ_TOL:
            return alt
    return choice


def _solve_best_effort(options, lam, sla, n_max, fixed_n, weights, solver):
    """Max served throughput t (≤ λ̂), then the best objective among plans serving t."""
    if any(not o for o in options):
        return None
    min_lat = sum(min(o.latency_ms for o in so) for so in options)
    keep_latency = min_lat <= sla + LAT_TOL
    opts = _presolve(options, lam, sla, n_max, fixed_n, latency=keep_latency, throughput=False)
    m = _Model(opts, lam, sla, n_max, fixed_n, latency=keep_latency, throughput=False, cut_all=True)
    t = pulp.LpVariable("served", 0, max(lam, 0.0))
    for s, (so, ys) in enumerate(zip(opts, m.y)):
        m.prob += pulp.lpSum(o.throughput * yj for o, yj in zip(so, ys)) - t >= 0, f"served_{s}"
    m.prob.setObjective(pulp.LpAffineExpression([(t, 1.0)]))
    if not m.solve(solver):
        return None
    first = m.choice()
    served = min(choice_terms(first, lam, weights)["capacity_rps"], max(lam, 0.0))
    # Second solve: the program itself with throughput target `served` (latency as above).
    target = served * (1 - 1e-12)
    opts2 = _presolve(options, target, sla, n_max, fixed_n, latency=keep_latency, throughput=True)
    if all(opts2):
        m2 = _Model(opts2, lam, sla, n_max, fixed_n, latency=keep_latency, cut=weights, target=target)
        m2.prob.setObjective(m2.objective(weights))
        if m2.solve(solver):
            second = m2.choice()
            if min(choice_terms(second, lam, weights)["capacity_rps"], lam) >= served - OBJ_TOL:
                return second
    return first



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
) -> Plan:
    """Solve the program for `pipeline` at predicted `load` (req/s) and return the Plan.

    `profiles`: ``{(variant, batch): Profile}`` (see :func:`planner.profiles.profiles_from_store`);
    `margin`: headroom multiplier, λ̂ = load × margin (1.0 = none); `sla_ms`: end-to-end SLA
    (default ``pipeline.sla_ms``); `max_replicas`: N per stage; `current`: the running plan,
    for the fewest-changes tie-break; `replicas`: the fixed replica counts of ``rim``;
    `static_plan`: the plan of ``static``; `max_variants`: the most variants in an
    ``infadapter`` mix. Never raises for an infeasible load: the result is then a best-effort
    plan with ``objective["feasible"] == 0`` (see the module docstring). Raises ValueError for
    an unknown policy, or ``infadapter`` on a multi-stage pipeline (configuration errors).
    """
    t0 = time.perf_counter()
    lam = float(load) * float(margin)
    sla = float(pipeline.sla_ms if sla_ms is None else sla_ms)
    if is_static(policy):
        plan = static_plan or current or pipeline.default_plan()
        try:
            return evaluate_plan(pipeline, plan, profiles, load, sla, weights, policy=policy, margin=margin)
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
    try:
        choice = _solve_main(options, lam, sla, n_max, fixed, w, solver, cur_stages)
        if choice is not None:
            return plan_from_choice(pipeline, choice, lam, w, policy, True, margin, t0)
        choice = _solve_best_effort(options, lam, sla, n_max, fixed, w, solver)
        if choice is not None:
            return plan_from_choice(pipeline, choice, lam, w, policy, False, margin, t0)
        logger.warning("no profiled option for some stage of %s; returning the default plan", pipeline.name)
    except Exception:  # never raise from the planner
        logger.exception("planner failed for %s at %.3g req/s", pipeline.name, lam)
    fallback = current if current is not None and current.pipeline == pipeline.name else pipeline.default_plan()
    return fallback.model_copy(update={
        "policy": policy, "predicted_load_rps": max(lam, 0.0), "predicted_power_w": None,
        "predicted_j_per_request": None, "objective": {"feasible": 0.0},
        "solve_time_s": time.perf_counter() - t0})


def compare_policies(pipeline: PipelineSpec, profiles: ProfileLookup, loads: Iterable[float],
                     policies: Sequence[str] = ("ipa", "ipa-energy"), **kw: Any) -> list[Plan]:
    """One plan per (load, policy), loads outermost; `kw` goes to :func:`optimize`."""
    return [optimize(pipeline, profiles, load, policy=p, **kw) for load in loads for p in policies]
