"""The best-effort program: when no plan serves λ̂ within the SLA and the cluster, the most load any plan serves.

:func:`solve_best_effort` solves it in two steps over the program's own candidates and
constraints (:mod:`planner.program`): first the most served throughput t ≤ λ̂, by enumerating
one option per stage (:func:`_max_served`; the MILP past ``COMBINATIONS_LIMIT`` combinations),
then the best objective among the plans that serve t. The latency constraint is kept when
any choice of variants and batches meets the SLA at all, and dropped otherwise.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pulp

from planner.constants import LAT_TOL
from planner.caps import Capacity
from planner.candidates import _Candidate, _candidates, _first_n
from planner.program import _Group, _Program
from planner.terms import LatencyModel, Option, choice_terms, stage_base_ms, stage_capacity_rps

__all__ = ["COMBINATIONS_LIMIT", "solve_best_effort"]


#: the most (one option per stage) combinations :func:`_max_served` enumerates; past it the MILP
COMBINATIONS_LIMIT = 20_000


def solve_best_effort(options, lam, sla, n_max, fixed_n, weights, solver, capacity: Capacity):
    """Max served throughput t (≤ λ̂), then the best objective among plans serving t."""
    if any(not o for o in options):
        return None
    plain = replace(capacity.model, queueing=False)
    min_lat = sum(min(stage_base_ms(o, lam, capacity.model) for o in so) for so in options)
    keep_latency = min_lat <= sla + LAT_TOL
    found = _max_served(options, lam, sla, n_max, fixed_n, capacity, keep_latency)
    if found is None:  # too many combinations to enumerate: the MILP over every (option, n)
        cands = [_candidates(so, lam, sla, n_max, f, capacity.model, best_effort=True, latency=keep_latency)
                 for so, f in zip(options, fixed_n)]
        if any(not cs for cs in cands):
            return None
        m = _Program([_Group(cands, lam, sla)], capacity, latency=keep_latency, maximise_served=True)
        m.prob.setObjective(pulp.LpAffineExpression([(m.served, 1.0)]))
        if not m.solve(solver):
            return None
        first = m.choice()
        served = min(m.served.varValue or 0.0, lam)
    elif found is False:
        return None
    else:
        served, first = found
    # Second solve: the program itself with throughput target `served` (latency as above). Every
    # candidate's latency is its n-free base, its CPU the target's: of an option's n that reach the
    # target, the fewest is as good in every constraint and no worse in the objective; only it is kept.
    target = served * (1 - 1e-9)
    cands = [_target_candidates(so, lam, sla, n_max, f, capacity.model, target, keep_latency)
             for so, f in zip(options, fixed_n)]
    if all(cands):
        m2 = _Program([_Group(cands, lam, sla)], capacity, latency=keep_latency, target=target)
        m2.prob.setObjective(m2.objective(weights))
        if m2.solve(solver):
            second = m2.choice()
            if min(choice_terms(second, lam, weights, plain)["capacity_rps"], lam) >= served - 1e-6:
                return second
    return first


def _n_range(o: Option, lam: float, n_max: int, fixed: int | None, model: LatencyModel) -> tuple[int, int]:
    """The n a best-effort stage may run `o` at (as :func:`_candidates` makes them): the fixed
    count, else 1 to the first n that carries λ̂ (more only costs), at most `n_max`."""
    if fixed is not None:
        return fixed, fixed
    top = _first_n(o, lam, model, 0.0)
    return 1, n_max if top is None else min(top, n_max)


def _best_effort_rows(opts, lam, sla, n_max, fixed, model, keep_latency):
    """(option, base latency, lowest n, highest n) of each option a best-effort stage may run."""
    for o in opts:
        base = stage_base_ms(o, lam, model)
        if not (keep_latency and base > sla + LAT_TOL):
            yield (o, base, *_n_range(o, lam, n_max, fixed, model))


def _target_candidates(opts, lam, sla, n_max, fixed, model, target, keep_latency) -> list[_Candidate]:
    out = []
    for o, base, lo, hi in _best_effort_rows(opts, lam, sla, n_max, fixed, model, keep_latency):
        n = lo if fixed is not None else max(lo, _first_n(o, target, model, 0.0) or hi + 1)
        if n <= hi and stage_capacity_rps(o, n, model) >= target:
            out.append(_Candidate(o, n, base, stage_capacity_rps(o, n, model)))
    return out


def _max_served(options, lam, sla, n_max, fixed_n, capacity: Capacity, keep_latency: bool):
    """The best-effort program's first solve, exactly, by enumeration: (t, choice) with the most
    served load t ≤ λ̂ any plan reaches under the latency (base), CPU (t × Σ CPU s per request)
    and memory (Σ n × MB) constraints; False if no plan is feasible; None if the stages'
    combinations exceed COMBINATIONS_LIMIT (the caller then solves the MILP).

    For one option per stage, t is bounded by λ̂, the CPU and each stage's largest n; within
    those, memory grows with t in steps (each stage runs the fewest n that carry t), so the
    largest t that fits is found by bisection and then raised to the capacity its n give. A
    combination whose bound cannot beat the best t so far is skipped. The MILP over every
    (option, n) (hundreds of binaries per option at 1,000 replicas, with a linearised product
    per binary) took seconds per solve; this takes milliseconds."""
    model = capacity.model
    stages = []
    for opts, fixed in zip(options, fixed_n):
        rows = [(o, base, lo, hi, stage_capacity_rps(o, hi, model))
                for o, base, lo, hi in _best_effort_rows(opts, lam, sla, n_max, fixed, model, keep_latency)]
        if not rows:
            return False
        stages.append(rows)
    if math.prod(len(rows) for rows in stages) > COMBINATIONS_LIMIT:
        return None
    lam_cap = max(lam, 0.0)
    combos = []
    for combo in itertools.product(*stages):
        if keep_latency and sum(r[1] for r in combo) > sla + LAT_TOL:
            continue
        upper = min([lam_cap] + [r[4] for r in combo])
        cpu_s = sum(r[0].cpu_s for r in combo if r[0].cpu_s > 0)
        if capacity.cpu_cores is not None and cpu_s > 0:
            if capacity.cpu_cores < 0:
                continue
            upper = min(upper, capacity.cpu_cores / cpu_s)
        combos.append((upper, combo))
    combos.sort(key=lambda c: -c[0])
    best: tuple[float, list] | None = None
    for upper, combo in combos:
        if best is not None and upper <= best[0]:
            break

        def counts(t: float) -> list[int]:
            return [r[2] if r[2] == r[3] else min(r[3], max(r[2], _first_n(r[0], t, model, 0.0) or r[3])) for r in combo]

        def fits(ns: list[int]) -> bool:
            return capacity.memory_mb is None or sum(
                r[0].memory_mb_per_replica * n for r, n in zip(combo, ns)) <= capacity.memory_mb

        if not fits(counts(0.0)):
            continue
        t = upper
        if not fits(counts(upper)):
            lo, hi = 0.0, upper
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if fits(counts(mid)) else (lo, mid)
            t = lo
        ns = counts(t)
        t = min([upper] + [stage_capacity_rps(r[0], n, model) for r, n in zip(combo, ns)])
        if best is None or t > best[0]:
            best = (t, [(r[0], n) for r, n in zip(combo, ns)])
    if best is None:
        return False
    return min(best[0], lam), best[1]
