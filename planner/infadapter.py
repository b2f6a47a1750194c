"""InfAdapter (Salmani et al. 2023) as a policy: one stage, a mix of variants with a traffic split.

InfAdapter serves one model task with a small *set* of variants at once and splits the
load between them, maximising the expected accuracy of a request minus a resource cost. On
the same profiles as the IPA program (the same options and terms, :mod:`planner.terms`), for the single stage of the
pipeline, options (m, b) = (variant, batch size) with a profile, λ̂ = load × margin:

* ``x[m,b]`` binary: variant m runs at batch size b; at most one batch size per variant;
* ``n[m,b]`` integer replicas, ``x ≤ n ≤ N·x``; ``Σ n ≤ N`` (the same per-stage replica
  cap as the other policies, so the baselines get the same resources);
* ``l[m,b] ≥ 0`` continuous: the load (req/s) routed to it; ``Σ l = λ̂``, ``l ≤ λ̂·x``;
* throughput: ``l ≤ h(m,b)·n`` (h = the profile's per-replica ``throughput_rps``);
* latency: ``l99(m,b) + 1000·(b−1)/l ≤ SLA`` whenever x = 1. The batch-fill time is at the
  member's own load l (a member of a split fills its batches more slowly). Linear and exact:
  ``l ≥ 1000·(b−1)/(SLA − l99)·x`` (with a 1e-6 relative margin so that solver round-off
  never breaks the SLA), and options with l99 over the SLA get no variables;
* mix size: ``Σ x ≤ K`` (``max_variants``, default 3: InfAdapter keeps the set small, and
  every member is a deployment with warm replicas);
* objective: ``max α·Σ (l/λ̂)·a(m) − β·Σ r(m)·n − γ·P − δ·Σ b·x`` with P the predicted
  power as in the IPA program. The first term is InfAdapter's weighted average accuracy.

Default weights: :class:`planner.terms.Weights` with γ = 0 (InfAdapter is energy-unaware):
α = 1 per unit of average accuracy (a fraction), β = 0.01 per resource unit (logical CPU or
GPU), so one percentage point of accuracy is worth one CPU, the price the IPA policies put on
resources; δ = 1e-4 per unit of batch size per member, which also breaks ties towards fewer
members. InfAdapter leaves α and β to the operator.

Only single-stage pipelines: :func:`planner.policies.check_policy` raises ValueError for a
chain (a split per stage would need a joint accuracy and latency model InfAdapter does not
have). An infeasible load gives a best-effort plan flagged ``objective["feasible"] = 0`` (as
the other policies): the most served load t ≤ λ̂ (keeping the SLA when any option meets it),
then the best objective among mixes serving t. Not done here: InfAdapter's own predictor and
its reconfiguration cost; the running plan is not used for a fewest-changes tie-break.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import pulp

from ipa_energy.spec import PipelineSpec, Plan, StagePlan, VariantShare
from planner.constants import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MAX_VARIANTS,
    LAT_TOL,
    MAX_WAIT_MS,
)
from planner.solver import DEFAULT_SOLVER, solve_problem
from planner.terms import Option, ProfileLookup, Weights, fill_ms, mix_terms, option, plan_with_terms

__all__ = ["solve_infadapter"]

logger = logging.getLogger(__name__)

_MIN_SHARE = 1e-9  # members routed less than this fraction of the load are dropped
_TRICKLE_RPS = 0.01


def _min_load(o: Option, sla_ms: float) -> float:
    """Least load at which batches of o.batch fill within the SLA (0 at batch 1)."""
    if o.batch <= 1:
        return 0.0
    return 1000.0 * (o.batch - 1) / (sla_ms - o.latency_ms) * (1 + 1e-6) + 1e-6


class _MixModel:
    """The program over `options` (their latency_ms is l99 alone: the fill time is per member)."""

    def __init__(self, options: Sequence[Option], target: float | None, lam: float, sla_ms: float | None,
                 n_max: int, k_max: int):
        self.options = options
        self.prob = pulp.LpProblem("infadapter", pulp.LpMaximize)
        self.x = [pulp.LpVariable(f"x_{j}", cat="Binary") for j in range(len(options))]
        self.n = [pulp.LpVariable(f"n_{j}", 0, n_max, cat="Integer") for j in range(len(options))]
        self.l = [pulp.LpVariable(f"l_{j}", 0, lam) for j in range(len(options))]
        # target None: best effort, the served load is a variable t ≤ λ̂ to maximise
        self.t = pulp.LpVariable("served", 0, lam) if target is None else None
        served = self.t if target is None else target
        self.prob += pulp.lpSum(self.l) == served, "split"
        self.prob += pulp.lpSum(self.x) <= k_max, "mix_size"
        self.prob += pulp.lpSum(self.n) <= n_max, "replicas"
        by_variant: dict[str, list[pulp.LpVariable]] = {}
        for j, (o, x, n, l) in enumerate(zip(options, self.x, self.n, self.l)):
            by_variant.setdefault(o.variant, []).append(x)
            self.prob += n - x >= 0, f"warm_{j}"
            self.prob += n - n_max * x <= 0, f"off_{j}"
            self.prob += l - o.throughput * n <= 0, f"tput_{j}"
            self.prob += l - lam * x <= 0, f"route_{j}"
            if sla_ms is not None and o.batch > 1:
                self.prob += l - _min_load(o, sla_ms) * x >= 0, f"fill_{j}"
        for v, xs in by_variant.items():
            self.prob += pulp.lpSum(xs) <= 1, f"one_batch_{v}"

    def objective(self, w: Weights, served: float) -> pulp.LpAffineExpression:
        terms = []
        for o, x, n, l in zip(self.options, self.x, self.n, self.l):
            terms += [(l, w.alpha * o.acc / served - w.gamma * o.energy_j),
                      (n, -w.beta * o.resources - w.gamma * o.idle_w), (x, -w.delta * o.batch)]
        return pulp.LpAffineExpression(terms)

    def members(self) -> list[tuple[Option, int, float]]:
        """(option, replicas, load) of the chosen options that get traffic."""
        chosen = [(o, int(round(n.varValue or 0)), max(0.0, l.varValue or 0.0))
                  for o, x, n, l in zip(self.options, self.x, self.n, self.l) if (x.varValue or 0) > 0.5]
        total = sum(l for _, _, l in chosen)
        return [(o, n, l) for o, n, l in chosen if total > 0 and l > _MIN_SHARE * total and n >= 1]


def _solve(options, lam, sla, n_max, k_max, weights, solver):
    """(members, feasible) or (None, False)."""
    keep = [o for o in options if o.latency_ms <= sla + LAT_TOL and (o.batch == 1 or o.latency_ms < sla)]
    if keep and lam > 0:
        m = _MixModel(keep, lam, lam, sla, n_max, k_max)
        m.prob.setObjective(m.objective(weights, lam))
        if solve_problem(m.prob, solver) and m.members():
            return m.members(), True
    # Best effort: the most load t ≤ λ̂ served (within the SLA when any option can meet it)...
    opts, latency = (keep, sla) if keep else (list(options), None)
    if not opts:
        return None, False
    m = _MixModel(opts, None, max(lam, 0.0), latency, n_max, k_max)
    m.prob.setObjective(pulp.LpAffineExpression([(m.t, 1.0)]))
    if not solve_problem(m.prob, solver) or not m.members():
        return None, False
    first = m.members()
    served = sum(l for _, _, l in first) * (1 - 1e-9)
    # ...then the best objective among the mixes that serve t.
    m2 = _MixModel(opts, served, max(lam, 0.0), latency, n_max, k_max)
    m2.prob.setObjective(m2.objective(weights, served))
    if solve_problem(m2.prob, solver) and m2.members():
        return m2.members(), False
    return first, False


def solve_infadapter(pipeline: PipelineSpec, profiles: ProfileLookup, lam: float, sla_ms: float,
                     weights: Weights = Weights(gamma=0.0), *, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                     max_replicas: int = DEFAULT_MAX_REPLICAS, max_variants: int = DEFAULT_MAX_VARIANTS,
                     margin: float = 1.0, solver: str = DEFAULT_SOLVER, current: Plan | None = None,
                     t0: float | None = None) -> Plan:
    """The InfAdapter plan of single-stage `pipeline` at λ̂ = `lam` req/s (see the module doc).

    A mix of one variant is a plain StagePlan; otherwise the stage carries ``mix`` with the
    largest share as its primary. Never raises for an infeasible load or a solver failure.
    """
    t0 = time.perf_counter() if t0 is None else t0
    if len(pipeline.stages) != 1:
        raise ValueError(f"infadapter plans single-stage pipelines; {pipeline.name!r} has {len(pipeline.stages)}")
    if max_variants < 1:
        raise ValueError(f"max_variants must be at least 1, not {max_variants}")
    stage = pipeline.stages[0]
    # Built at an infinite load: latency_ms is then l99 alone (the fill time depends on the split).
    options = [option(stage, v, b, profiles[(v.name, b)], math.inf)
               for v in stage.variants for b in sorted({int(b) for b in batch_sizes})
               if 1 <= b <= v.max_batch_size and (v.name, b) in profiles]
    try:
        # No load is planned as a trickle (the objective divides by the load; solver
        # tolerances are absolute): one variant at batch 1, the most accurate that is worth it.
        members, feasible = _solve(options, max(lam, _TRICKLE_RPS), sla_ms, int(max_replicas), int(max_variants),
                                   weights, solver)
    except Exception:  # never raise from the planner
        logger.exception("infadapter failed for %s at %.3g req/s", pipeline.name, lam)
        members, feasible = None, False
    if not members:
        fallback = current if current is not None and current.pipeline == pipeline.name else pipeline.default_plan()
        return fallback.model_copy(update={
            "policy": "infadapter", "predicted_load_rps": max(lam, 0.0), "predicted_power_w": None,
            "predicted_j_per_request": None, "objective": {"feasible": 0.0},
            "solve_time_s": time.perf_counter() - t0})
    total = sum(l for _, _, l in members)
    members.sort(key=lambda m: (-m[2], m[0].variant))  # the largest share is the primary
    shares = [VariantShare(variant=o.variant, share=l / total, batch_size=o.batch, replicas=n,
                           batch_wait_timeout_ms=round(min(fill_ms(o.batch, lam * l / total), MAX_WAIT_MS), 3))
              for o, n, l in members]
    top = shares[0]
    stage_plan = StagePlan(variant=top.variant, batch_size=top.batch_size, replicas=top.replicas,
                           batch_wait_timeout_ms=top.batch_wait_timeout_ms, mix=tuple(shares) if len(shares) > 1 else None)
    plan = Plan(pipeline=pipeline.name, stages={stage.name: stage_plan}, policy="infadapter")
    # Terms at the plan's own split of λ̂ (a best-effort plan is charged the whole offered load).
    terms = mix_terms([[(option(stage, stage.variant(s.variant), s.batch_size, profiles[(s.variant, s.batch_size)],
                                  s.share * lam), s.replicas, s.share) for s in shares]],
                       lam, weights, linear_accuracy=True)
    terms["mix_size"] = float(len(shares))
    return plan_with_terms(plan, terms, lam, feasible, margin, "infadapter", t0)
