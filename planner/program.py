"""The program itself: candidates per stage, the MILP over them, and its two solves.

Per stage s the program enumerates *candidates* (m, b, n): a variant m, a batch size b with a
profile, and a replica count n in 1..N (or the fixed n of ``rim``). Each candidate carries
its p99 latency at λ̂ (planner.terms.stage_latency_ms: p99 × stretch + batch fill + the p99
wait for a free replica) and its capacity n × throughput ÷ stretch. One binary z per
candidate:

* ``Σ_k z[s,k] = 1`` per stage (one variant, batch size and replica count);
* latency: ``Σ_s Σ_k latency(s,k)·z[s,k] ≤ SLA`` (ms);
* capacity holds by construction: a candidate that cannot serve λ̂ gets no variable;
* CPU (with a cluster): ``Σ λ̂·cpu_s(s,k)·z ≤ ρ·cores − λ̂·serving_cpu_s``; memory:
  ``Σ n·memory_mb(s,k)·z ≤ 80 % of memory``;
* accuracy floor (ipa-energy's budget): ``Σ z·log a ≥ log(A_ipa − budget)``;
* objective: ``max Σ z·(α·log a − γ·λ̂·e − δ·b − (β·r + γ·p_idle)·n)``, i.e. α·log-accuracy
  − β·cost − γ·power − δ·Σ b (the terms of planner.terms; accuracy is the product of the
  stage accuracies, exact in log form).

Exact presolve: a candidate whose own latency exceeds the SLA, or that cannot serve λ̂, gets no
variable; nor does n past the first with no wait (more replicas only cost more), except the
running (variant, b, n), kept for the fewest-changes tie-break. This shrinks the model without
changing its optimum (the brute-force tests in tests/unit/planner/test_capacity_program.py
compare it with every plan).

:func:`capacities` gives the capacities to try (one per node utilisation cap ρ, each with its
contention stretch); :func:`solve_optimum` solves at one of them, with the fewest-changes
second solve; :func:`solve_best_effort` maximises the load served when nothing is feasible.
The model is solved exactly by :mod:`planner.solver` (HiGHS in-process, or CBC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pulp

from ipa_energy.cluster import ClusterSupply
from ipa_energy.spec import StagePlan
from planner.capacity import stretch
from planner.constants import LAT_TOL, MEMORY_FRACTION, OBJ_TOL, UTILISATION_GRID
from planner.solver import solve_problem
from planner.terms import (
    IPA_LATENCY,
    LatencyModel,
    Option,
    Weights,
    choice_terms,
    stage_capacity_rps,
    stage_latency_ms,
)

__all__ = ["Capacity", "capacities", "solve_best_effort", "solve_optimum"]


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
                 latency: bool = True, target: float | None = None, maximise_served: bool = False,
                 min_log_acc: float | None = None):
        self.cands, self.lam = cands, lam
        self.prob = pulp.LpProblem("ipa", pulp.LpMaximize)
        self.z = [[pulp.LpVariable(f"z_{s}_{k}", cat="Binary") for k in range(len(cs))] for s, cs in enumerate(cands)]
        for s, zs in enumerate(self.z):
            self.prob += pulp.lpSum(zs) == 1, f"one_{s}"
        if min_log_acc is not None:  # the accuracy floor: log of the product of stage accuracies, exact
            self.prob += pulp.lpSum(c.option.log_acc * z for cs, zs in self._pairs()
                                    for c, z in zip(cs, zs)) >= min_log_acc, "accuracy_floor"
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


def solve_optimum(options, lam, sla, n_max, fixed_n, weights, solver, current_stages, capacity: Capacity,
                  tie_break: bool = True, min_log_acc: float | None = None):
    """(choice, objective) of the program's optimum (fewest changes among equal optima); None if infeasible.
    `min_log_acc`: the plan's log pipeline accuracy must reach it (ipa-energy's accuracy budget)."""
    cur = current_stages or [None] * len(options)
    cands = [_candidates(so, lam, sla, n_max, f, capacity.model, _keep(c)) for so, f, c in zip(options, fixed_n, cur)]
    if any(not cs for cs in cands) or sum(min(c.latency_ms for c in cs) for cs in cands) > sla + LAT_TOL:
        return None
    m = _Program(cands, lam, sla, capacity, min_log_acc=min_log_acc)
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


def solve_best_effort(options, lam, sla, n_max, fixed_n, weights, solver, capacity: Capacity):
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


def fill_factor(fill_rps: float | None, lam: float) -> float:
    """The share of λ̂ batches fill at now (the observed rate; 1 when not given)."""
    return 1.0 if fill_rps is None or lam <= 0 else min(1.0, max(fill_rps, 1e-9) / lam)


def capacity_terms(cap: Capacity, supply: ClusterSupply | None, serving_cpu_s: float) -> dict[str, float]:
    """The objective terms that record the capacity a plan is held to (planner.checks.plan_model
    and check_plan read them back)."""
    terms = {"queueing": 1.0 if cap.model.queueing else 0.0, "stretch": cap.model.stretch,
             "fill_factor": cap.model.fill_factor}
    if supply is not None and cap.utilisation is not None:
        terms |= {"utilisation_cap": cap.utilisation, "cores": supply.cores, "serving_cpu_s": serving_cpu_s,
                  "background_cores": supply.background_cores}
    return terms


def capacities(supply: ClusterSupply | None, lam: float, queueing: bool, serving_cpu_s: float,
               fill_factor: float = 1.0) -> list[Capacity]:
    """The capacities to try: one per node utilisation cap ρ of UTILISATION_GRID, or unlimited."""
    if supply is None:
        return [Capacity(model=LatencyModel(queueing=queueing, fill_factor=fill_factor))]
    cores = min(n.cores for n in supply.nodes)  # contention is per node: the smallest one stretches most
    out = []
    for rho in UTILISATION_GRID:
        # ρ caps the node's utilisation: background load (measured) takes its cores first
        cpu = rho * supply.cores - lam * serving_cpu_s - supply.background_cores
        if cpu > 0:
            out.append(Capacity(model=LatencyModel(queueing=queueing, stretch=stretch(cores, rho), fill_factor=fill_factor),
                                cpu_cores=cpu, memory_mb=MEMORY_FRACTION * supply.memory_mb, utilisation=rho))
    return out
