"""IPA's integer program, corrected, with energy as a third objective (DESIGN.md "Planning").

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

Policies (same program, different restrictions)
-----------------------------------------------
* ``ipa``: γ = 0 (IPA's objective); ``ipa-energy``: the weights as given (γ > 0);
* ``fa2-low`` / ``fa2-high``: variant fixed to the least / most accurate variant of each
  stage (ties: fewer resources, then name); batch and replicas free; γ = 0 (FA2 is
  energy-unaware);
* ``rim``: replicas fixed (``replicas``: an int or a per-stage mapping; default 1); variant
  and batch free; γ = 0;
* ``static`` (or any ``static-<name>``): the given ``static_plan`` (else the current plan,
  else the pipeline's default plan), evaluated with the profiles, not solved; flagged
  infeasible when it breaks a constraint. An unknown policy name raises ValueError (a
  configuration error, unlike an infeasible load, which never raises).
* ``infadapter`` (InfAdapter's variant mix with a traffic split, single-stage pipelines
  only): a different program with continuous traffic shares, in :mod:`planner.infadapter`;
  γ = 0 (InfAdapter is energy-unaware).

Tie-break: fewest changes
-------------------------
With a ``current`` plan, a second solve keeps the objective ≥ optimum − 1e-7 (absolute;
the profiles are far noisier than that) and minimises the number of changes: per stage one
for a variant switch, one for a batch-size change, one for a replica-count change (the
fields :func:`planner.diff.diff_plans` reports, except the batch wait which follows the
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

Solvers
-------
``solver="highs"`` (the default when SciPy is importable) solves the PuLP model with HiGHS
in-process through ``scipy.optimize.milp`` (``highspy`` is not installed here);
``solver="cbc"`` uses ``PULP_CBC_CMD(msg=False)`` (a subprocess per solve). Both are exact
(zero MIP gap). HiGHS avoids the subprocess and file round trip; see :func:`benchmark`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pulp
from pydantic import BaseModel, ConfigDict, Field

from ipa_energy.spec import (
    PipelineSpec,
    Plan,
    Profile,
    Resources,
    StagePlan,
    StageSpec,
    VariantSpec,
)

from planner.profiles import DEFAULT_BATCH_SIZES

logger = logging.getLogger(__name__)

ProfileLookup = Mapping[tuple[str, int], Profile]

DEFAULT_MAX_REPLICAS = 16
POLICIES = ("ipa", "ipa-energy", "fa2-low", "fa2-high", "rim", "static", "infadapter")
OBJ_TOL = 1e-7  # ties within this (absolute) count as equal objective values
_LAT_TOL = 1e-9
_MAX_WAIT_MS = 10_000.0

try:  # HiGHS through SciPy, in-process
    import numpy as _np
    from scipy.optimize import Bounds as _Bounds
    from scipy.optimize import LinearConstraint as _LinearConstraint
    from scipy.optimize import milp as _milp
    from scipy.sparse import coo_matrix as _coo_matrix

    HAVE_HIGHS = True
except Exception:  # pragma: no cover - SciPy missing
    HAVE_HIGHS = False

DEFAULT_SOLVER = "highs" if HAVE_HIGHS else "cbc"


class Weights(BaseModel):
    """Objective weights: max α·log-accuracy − β·cost − γ·power − δ·Σ batch (see module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(1.0, ge=0, description="Per unit of log pipeline accuracy.")
    beta: float = Field(0.01, ge=0, description="Per resource unit (logical CPU or GPU) allocated.")
    gamma: float = Field(0.01, ge=0, description="Per watt of predicted power (0 = IPA).")
    delta: float = Field(1e-4, ge=0, description="Per unit of batch size, summed over stages.")


# --------------------------------------------------------------------------------------------
# Options and evaluation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Option:
    variant: str
    batch: int
    latency_ms: float  # l99 + batch fill at λ̂
    throughput: float
    energy_j: float
    idle_w: float
    resources: float
    log_acc: float
    acc: float


def _fill_ms(b: int, lam: float) -> float:
    if b <= 1:
        return 0.0
    return math.inf if lam <= 0 else 1000.0 * (b - 1) / lam


def _resource_units(r: Resources) -> float:
    return float(r.num_cpus) + float(r.num_gpus)


def _option(stage: StageSpec, variant: VariantSpec, b: int, prof: Profile, lam: float) -> _Option:
    return _Option(
        variant=variant.name, batch=b,
        latency_ms=prof.latency_p99_ms + _fill_ms(b, lam),
        throughput=prof.throughput_rps, energy_j=prof.energy_per_request_j,
        idle_w=prof.idle_power_w, resources=_resource_units(prof.resources),
        log_acc=math.log(variant.accuracy.value), acc=variant.accuracy.value,
    )


def _stage_options(pipeline: PipelineSpec, profiles: ProfileLookup, batch_sizes: Sequence[int],
                   lam: float, allowed: Mapping[str, set[str]] | None = None) -> list[list[_Option]]:
    out = []
    for stage in pipeline.stages:
        opts = []
        for v in stage.variants:
            if allowed is not None and v.name not in allowed.get(stage.name, set()):
                continue
            for b in batch_sizes:
                prof = profiles.get((v.name, b))
                if prof is None or b > v.max_batch_size:
                    continue
                opt = _option(stage, v, b, prof, lam)
                if math.isfinite(opt.latency_ms):
                    opts.append(opt)
        out.append(opts)
    return out


def _terms(choice: Sequence[tuple[_Option, int]], lam: float, weights: Weights) -> dict[str, float]:
    return _mix_terms([[(o, n, 1.0)] for o, n in choice], lam, weights)


def _mix_terms(stages: Sequence[Sequence[tuple[_Option, int, float]]], lam: float, weights: Weights, *,
               linear_accuracy: bool = False) -> dict[str, float]:
    """Objective terms of a plan whose stages run members (option, replicas, traffic share).

    Each member's option must be built at its own load share × λ̂ (its batch-fill time). A
    stage's accuracy is the share-weighted mean of its members'; its latency the slowest
    member's; its capacity the load at which the first member saturates. With one member of
    share 1 per stage this is IPA's program exactly. `linear_accuracy`: the objective counts
    α·accuracy (InfAdapter's) instead of α·log-accuracy.
    """
    stage_acc = [sum(sh * o.acc for o, _, sh in st) for st in stages]
    log_acc = sum(st[0][0].log_acc if len(st) == 1 and st[0][2] == 1.0 else math.log(a)
                  for st, a in zip(stages, stage_acc))
    accuracy = math.prod(stage_acc)
    members = [m for st in stages for m in st]
    cost = sum(o.resources * n for o, n, _ in members)
    power = sum(sh * lam * o.energy_j + o.idle_w * n for o, n, sh in members)
    batch = float(sum(o.batch for o, _, _ in members))
    obj = weights.alpha * (accuracy if linear_accuracy else log_acc) - weights.beta * cost \
        - weights.gamma * power - weights.delta * batch
    return {
        "accuracy": accuracy,
        "log_accuracy": log_acc,
        "cost": cost,
        "power_w": power,
        "batch": batch,
        "objective": obj,
        "latency_ms": sum(max(o.latency_ms for o, _, _ in st) for st in stages),
        "capacity_rps": min(o.throughput * n / sh for o, n, sh in members),
    }


def objective_value(log_accuracy: float, cost: float, power_w: float, batch: float, weights: Weights) -> float:
    """α·log-accuracy − β·cost − γ·power − δ·Σ batch (the program's objective)."""
    return weights.alpha * log_accuracy - weights.beta * cost - weights.gamma * power_w - weights.delta * batch


# --------------------------------------------------------------------------------------------
# The program
# --------------------------------------------------------------------------------------------


class _Model:
    """The PuLP model of the program over the given options."""

    def __init__(self, options: list[list[_Option]], lam: float, sla_ms: float, n_max: int,
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

    def choice(self) -> list[tuple[_Option, int]]:
        out = []
        for opts, xs, n in zip(self.options, self.x, self.n):
            j = max(range(len(opts)), key=lambda k: xs[k].varValue or 0.0)
            out.append((opts[j], int(round(n.varValue or 0.0))))
        return out


def _replica_penalty(o: _Option, w: Weights) -> float:
    return w.beta * o.resources + w.gamma * o.idle_w


def _replicas_needed(o: _Option, lam: float, n_max: int) -> int:
    """Fewest replicas of `o` that serve λ̂ (capped at n_max, at least 1)."""
    if o.throughput <= 0:
        return n_max
    n = max(1, math.ceil(lam / o.throughput))
    if n > 1 and (n - 1) * o.throughput >= lam:  # float round-up
        n -= 1
    return int(min(n_max, n))


def solve_problem(prob: pulp.LpProblem, solver: str) -> bool:
    """Solve a PuLP MILP exactly with `solver` ("highs" or "cbc"); True if optimal."""
    if solver == "highs":
        return _solve_highs(prob)
    prob.solve(pulp.PULP_CBC_CMD(msg=False, gapRel=0.0, gapAbs=0.0))
    return prob.status == pulp.LpStatusOptimal


def _solve_highs(prob: pulp.LpProblem) -> bool:
    """Solve a PuLP MILP with HiGHS via scipy.optimize.milp; set varValue; True if optimal."""
    variables = prob.variables()
    index = {v.name: i for i, v in enumerate(variables)}
    k = len(variables)
    c = _np.zeros(k)
    for v, coef in prob.objective.items():
        c[index[v.name]] = coef
    if prob.sense == pulp.LpMaximize:
        c = -c
    rows, cols, vals, lo, hi = [], [], [], [], []
    for r, con in enumerate(prob.constraints.values()):
        for v, coef in con.items():
            rows.append(r)
            cols.append(index[v.name])
            vals.append(coef)
        rhs = -con.constant
        if con.sense == pulp.LpConstraintEQ:
            lo.append(rhs), hi.append(rhs)
        elif con.sense == pulp.LpConstraintLE:
            lo.append(-_np.inf), hi.append(rhs)
        else:
            lo.append(rhs), hi.append(_np.inf)
    a = _coo_matrix((vals, (rows, cols)), shape=(len(lo), k)).tocsr()
    integrality = _np.array([1 if v.cat == pulp.LpInteger else 0 for v in variables])
    lb = _np.array([-_np.inf if v.lowBound is None else v.lowBound for v in variables], dtype=float)
    ub = _np.array([_np.inf if v.upBound is None else v.upBound for v in variables], dtype=float)
    res = _milp(c, constraints=[_LinearConstraint(a, lo, hi)], integrality=integrality,
                bounds=_Bounds(lb, ub), options={"mip_rel_gap": 0.0, "presolve": True})
    if res.x is None or res.status != 0:
        prob.status = pulp.LpStatusInfeasible if res.status == 2 else pulp.LpStatusNotSolved
        return False
    for v, val in zip(variables, res.x):
        v.varValue = float(round(val)) if v.cat == pulp.LpInteger else float(val)
    prob.status = pulp.LpStatusOptimal
    return True


def _presolve(options: list[list[_Option]], lam: float, sla_ms: float, n_max: int,
              fixed_n: Sequence[int | None], *, latency: bool, throughput: bool) -> list[list[_Option]]:
    out = []
    for opts, fixed in zip(options, fixed_n):
        cap = n_max if fixed is None else fixed
        out.append([o for o in opts
                    if (not latency or o.latency_ms <= sla_ms + _LAT_TOL)
                    and (not throughput or o.throughput * cap >= lam)])
    return out


def _solve_main(options, lam, sla, n_max, fixed_n, weights, solver, current_stages):
    """Optimum of the program (with the fewest-changes tie-break); None if infeasible."""
    opts = _presolve(options, lam, sla, n_max, fixed_n, latency=True, throughput=True)
    if any(not o for o in opts) or sum(min(o.latency_ms for o in so) for so in opts) > sla + _LAT_TOL:
        return None
    m = _Model(opts, lam, sla, n_max, fixed_n, cut=weights)
    obj = m.objective(weights)
    m.prob.setObjective(obj)
    if not m.solve(solver):
        return None
    choice = m.choice()
    if current_stages is None:
        return choice
    best = _terms(choice, lam, weights)["objective"]
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
        if _terms(alt, lam, weights)["objective"] >= best - OBJ_TOL:
            return alt
    return choice


def _solve_best_effort(options, lam, sla, n_max, fixed_n, weights, solver):
    """Max served throughput t (≤ λ̂), then the best objective among plans serving t."""
    if any(not o for o in options):
        return None
    min_lat = sum(min(o.latency_ms for o in so) for so in options)
    keep_latency = min_lat <= sla + _LAT_TOL
    opts = _presolve(options, lam, sla, n_max, fixed_n, latency=keep_latency, throughput=False)
    m = _Model(opts, lam, sla, n_max, fixed_n, latency=keep_latency, throughput=False, cut_all=True)
    t = pulp.LpVariable("served", 0, max(lam, 0.0))
    for s, (so, ys) in enumerate(zip(opts, m.y)):
        m.prob += pulp.lpSum(o.throughput * yj for o, yj in zip(so, ys)) - t >= 0, f"served_{s}"
    m.prob.setObjective(pulp.LpAffineExpression([(t, 1.0)]))
    if not m.solve(solver):
        return None
    first = m.choice()
    served = min(_terms(first, lam, weights)["capacity_rps"], max(lam, 0.0))
    # Second solve: the program itself with throughput target `served` (latency as above).
    target = served * (1 - 1e-12)
    opts2 = _presolve(options, target, sla, n_max, fixed_n, latency=keep_latency, throughput=True)
    if all(opts2):
        m2 = _Model(opts2, lam, sla, n_max, fixed_n, latency=keep_latency, cut=weights, target=target)
        m2.prob.setObjective(m2.objective(weights))
        if m2.solve(solver):
            second = m2.choice()
            if min(_terms(second, lam, weights)["capacity_rps"], lam) >= served - OBJ_TOL:
                return second
    return first


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def check_policy(pipeline: PipelineSpec, policy: str) -> None:
    """Raise ValueError for a policy that cannot plan `pipeline` (a configuration error)."""
    if policy.startswith("static-"):
        return
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {POLICIES}")
    if policy == "infadapter" and len(pipeline.stages) != 1:
        raise ValueError(
            f"policy 'infadapter' plans single-stage pipelines only (InfAdapter splits one model's traffic "
            f"across variants; a split per stage of a chain has no joint accuracy or latency model); "
            f"{pipeline.name!r} has {len(pipeline.stages)} stages: use ipa, ipa-energy, fa2-low, fa2-high or rim")


def _policy_setup(pipeline: PipelineSpec, policy: str, weights: Weights,
                  replicas: int | Mapping[str, int] | None):
    allowed: dict[str, set[str]] | None = None
    fixed: list[int | None] = [None] * len(pipeline.stages)
    if policy != "ipa-energy":
        weights = weights.model_copy(update={"gamma": 0.0})
    if policy in ("fa2-low", "fa2-high"):
        allowed = {}
        for st in pipeline.stages:
            key = (lambda v: (v.accuracy.value, _resource_units(v.resources), v.name)) if policy == "fa2-low" \
                else (lambda v: (-v.accuracy.value, _resource_units(v.resources), v.name))
            allowed[st.name] = {min(st.variants, key=key).name}
    elif policy == "rim":
        for i, st in enumerate(pipeline.stages):
            if replicas is None:
                fixed[i] = 1
            elif isinstance(replicas, int):
                fixed[i] = replicas
            else:
                fixed[i] = int(replicas.get(st.name, 1))
    elif policy not in ("ipa", "ipa-energy"):
        raise ValueError(f"unknown policy {policy!r}; known: {POLICIES}")
    return weights, allowed, fixed


def _plan_from_choice(pipeline: PipelineSpec, choice, lam: float, weights: Weights, policy: str,
                      feasible: bool, margin: float, t0: float) -> Plan:
    terms = _terms(choice, lam, weights)
    stages = {}
    for st, (o, n) in zip(pipeline.stages, choice):
        wait = min(_fill_ms(o.batch, lam), _MAX_WAIT_MS)
        stages[st.name] = StagePlan(variant=o.variant, batch_size=o.batch, replicas=max(1, n),
                                    batch_wait_timeout_ms=round(wait, 3))
    terms.update(feasible=1.0 if feasible else 0.0, load_margin=float(margin))
    return Plan(
        pipeline=pipeline.name, stages=stages, policy=policy,
        predicted_load_rps=max(lam, 0.0), predicted_power_w=terms["power_w"],
        predicted_j_per_request=terms["power_w"] / lam if lam > 0 else None,
        objective=terms, solve_time_s=time.perf_counter() - t0,
    )


def is_feasible(plan: Plan) -> bool:
    """False for a flagged best-effort plan (``objective["feasible"] == 0``)."""
    return plan.objective.get("feasible", 1.0) > 0.5


def evaluate_plan(pipeline: PipelineSpec, plan: Plan, profiles: ProfileLookup, load: float,
                  sla_ms: float | None = None, weights: Weights = Weights(), *, policy: str | None = None,
                  margin: float = 1.0) -> Plan:
    """`plan` with its predicted load/power/objective terms filled in from `profiles` at `load`."""
    t0 = time.perf_counter()
    lam = float(load) * margin
    sla = pipeline.sla_ms if sla_ms is None else sla_ms
    if any(sp.mix is not None for sp in plan.stages.values()):
        members = plan_members(pipeline, plan, profiles, lam)
        terms = _mix_terms(members, lam, weights, linear_accuracy=(policy or plan.policy) == "infadapter")
        feasible = not check_plan(pipeline, plan, profiles, lam, sla, check_predictions=False)
        return plan_with_terms(plan, terms, lam, feasible, margin, policy or plan.policy, t0)
    choice = []
    for st in pipeline.stages:
        sp = plan.stages[st.name]
        prof = profiles[(sp.variant, sp.batch_size)]
        choice.append((_option(st, st.variant(sp.variant), sp.batch_size, prof, lam), sp.replicas))
    feasible = not check_plan(pipeline, plan, profiles, lam, sla, check_predictions=False)
    out = _plan_from_choice(pipeline, choice, lam, weights, policy or plan.policy, feasible, margin, t0)
    # keep the plan's own stage settings (batch wait included)
    return out.model_copy(update={"stages": dict(plan.stages)})


def plan_members(pipeline: PipelineSpec, plan: Plan, profiles: ProfileLookup,
                 lam: float) -> list[list[tuple[_Option, int, float]]]:
    """Per stage, (option at the member's load share, replicas, share) of every member."""
    out = []
    for st in pipeline.stages:
        out.append([(_option(st, st.variant(m.variant), m.batch_size, profiles[(m.variant, m.batch_size)],
                             m.share * lam), m.replicas, m.share)
                    for m in plan.stages[st.name].members()])
    return out


def plan_with_terms(plan: Plan, terms: dict[str, float], lam: float, feasible: bool, margin: float,
                    policy: str, t0: float) -> Plan:
    """`plan` with its predictions and objective terms filled in."""
    terms = {**terms, "feasible": 1.0 if feasible else 0.0, "load_margin": float(margin)}
    return plan.model_copy(update={
        "policy": policy, "predicted_load_rps": max(lam, 0.0), "predicted_power_w": terms["power_w"],
        "predicted_j_per_request": terms["power_w"] / lam if lam > 0 else None,
        "objective": terms, "solve_time_s": time.perf_counter() - t0})


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
    max_variants: int = 3,
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
    if policy == "static" or policy.startswith("static-"):
        plan = static_plan or current or pipeline.default_plan()
        try:
            return evaluate_plan(pipeline, plan, profiles, load, sla, weights, policy=policy, margin=margin)
        except Exception as e:
            logger.warning("static plan cannot be evaluated: %s", e)
            return plan.model_copy(update={"policy": policy, "objective": {"feasible": 0.0}})
    check_policy(pipeline, policy)
    if policy == "infadapter":
        from planner.infadapter import solve_infadapter

        return solve_infadapter(pipeline, profiles, lam, sla, weights.model_copy(update={"gamma": 0.0}),
                                batch_sizes=batch_sizes, max_replicas=max_replicas, max_variants=max_variants,
                                margin=margin, solver=solver, current=current, t0=t0)
    w, allowed, fixed = _policy_setup(pipeline, policy, weights, replicas)
    n_max = int(max(max_replicas, max((f for f in fixed if f is not None), default=1)))
    sizes = sorted({int(b) for b in batch_sizes if int(b) >= 1})
    options = _stage_options(pipeline, profiles, sizes, lam, allowed)
    cur_stages = None
    if current is not None and current.pipeline == pipeline.name:
        cur_stages = [current.stages.get(st.name) for st in pipeline.stages]
    try:
        choice = _solve_main(options, lam, sla, n_max, fixed, w, solver, cur_stages)
        if choice is not None:
            return _plan_from_choice(pipeline, choice, lam, w, policy, True, margin, t0)
        choice = _solve_best_effort(options, lam, sla, n_max, fixed, w, solver)
        if choice is not None:
            return _plan_from_choice(pipeline, choice, lam, w, policy, False, margin, t0)
        logger.warning("no profiled option for some stage of %s; returning the default plan", pipeline.name)
    except Exception:  # never raise from the planner
        logger.exception("planner failed for %s at %.3g req/s", pipeline.name, lam)
    fallback = current if current is not None and current.pipeline == pipeline.name else pipeline.default_plan()
    return fallback.model_copy(update={
        "policy": policy, "predicted_load_rps": max(lam, 0.0), "predicted_power_w": None,
        "predicted_j_per_request": None, "objective": {"feasible": 0.0},
        "solve_time_s": time.perf_counter() - t0})


def check_plan(pipeline: PipelineSpec, plan: Plan, profiles: ProfileLookup, load: float | None = None,
               sla_ms: float | None = None, *, max_replicas: int | None = None,
               check_predictions: bool = True, rel_tol: float = 1e-6) -> list[str]:
    """Every constraint of the program, recomputed from `profiles`; violations (empty = ok).

    `load` is the load the plan must serve, λ̂ (default ``plan.predicted_load_rps``); `sla_ms`
    defaults to ``pipeline.sla_ms``. With `check_predictions`, the plan's predicted power,
    J/request and objective terms must match the recomputation. A stage with a variant mix:
    each member must carry its share of λ̂ within the SLA (its batch fills at that share);
    the stage's latency is its slowest member's, its replicas count together against N.
    """
    problems: list[str] = []
    lam = float(plan.predicted_load_rps or 0.0) if load is None else float(load)
    sla = pipeline.sla_ms if sla_ms is None else sla_ms
    if plan.pipeline != pipeline.name:
        return [f"plan is for {plan.pipeline!r}, not {pipeline.name!r}"]
    if set(plan.stages) != {s.name for s in pipeline.stages}:
        return [f"plan stages {sorted(plan.stages)} != pipeline stages {[s.name for s in pipeline.stages]}"]
    latency = 0.0
    power = 0.0
    log_acc = 0.0
    for st in pipeline.stages:
        sp = plan.stages[st.name]
        # A mix: each member serves its share of the load (its own batch fill); a request
        # takes one member, so the stage's latency is the slowest member's.
        mixed = sp.mix is not None
        stage_lat, stage_acc, resolved = 0.0, 0.0, True
        for m in sp.members():
            where = f"{st.name}[{m.variant}]" if mixed else st.name
            lam_m = m.share * lam
            try:
                v = st.variant(m.variant)
            except KeyError:
                problems.append(f"{where}: unknown variant {m.variant!r}")
                resolved = False
                continue
            if m.batch_size > v.max_batch_size:
                problems.append(f"{where}: batch {m.batch_size} > max_batch_size {v.max_batch_size}")
            prof = profiles.get((m.variant, m.batch_size))
            if prof is None:
                problems.append(f"{where}: no profile for {m.variant} batch {m.batch_size}")
                resolved = False
                continue
            cap = prof.throughput_rps * m.replicas
            if cap < lam_m * (1 - (1e-6 if mixed else 1e-12)):  # a mix's shares are solver floats
                problems.append(f"{where}: capacity {cap:.4g} req/s < load {lam_m:.4g} req/s")
            stage_lat = max(stage_lat, prof.latency_p99_ms + _fill_ms(m.batch_size, lam_m))
            power += lam_m * prof.energy_per_request_j + prof.idle_power_w * m.replicas
            stage_acc += m.share * v.accuracy.value
        n = sum(m.replicas for m in sp.members())
        if resolved and (n < 1 or (max_replicas is not None and n > max_replicas)):
            problems.append(f"{st.name}: {n} replicas outside 1..{max_replicas}")
        latency += stage_lat
        if stage_acc > 0:
            log_acc += math.log(stage_acc)
    if latency > sla + _LAT_TOL:
        problems.append(f"latency {latency:.4g} ms (p99 + batch fill) > SLA {sla:.4g} ms")
    if check_predictions and not problems:
        def close(a: float | None, b: float) -> bool:
            return a is not None and abs(a - b) <= rel_tol * max(1.0, abs(b))
        if not close(plan.predicted_power_w, power):
            problems.append(f"predicted_power_w {plan.predicted_power_w} != recomputed {power:.6g}")
        if lam > 0 and not close(plan.predicted_j_per_request, power / lam):
            problems.append(f"predicted_j_per_request {plan.predicted_j_per_request} != {power / lam:.6g}")
        if "log_accuracy" in plan.objective and not close(plan.objective["log_accuracy"], log_acc):
            problems.append(f"log_accuracy {plan.objective['log_accuracy']} != {log_acc:.6g}")
        if "accuracy" in plan.objective and not close(plan.objective["accuracy"], pipeline.accuracy(plan)):
            problems.append(f"accuracy {plan.objective['accuracy']} != {pipeline.accuracy(plan):.6g}")
    return problems


def compare_policies(pipeline: PipelineSpec, profiles: ProfileLookup, loads: Iterable[float],
                     policies: Sequence[str] = ("ipa", "ipa-energy"), **kw: Any) -> list[Plan]:
    """One plan per (load, policy), loads outermost; `kw` goes to :func:`optimize`."""
    return [optimize(pipeline, profiles, load, policy=p, **kw) for load in loads for p in policies]
