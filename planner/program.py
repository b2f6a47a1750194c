"""The program itself: the MILP over the stages' candidates (planner.candidates), and its two solves.

One binary z per candidate (m, b, n) of each stage:

* ``Σ_k z[s,k] = 1`` per stage (one variant, batch size and replica count);
* latency: ``Σ_s Σ_k latency(s,k)·z[s,k] ≤ SLA`` (ms);
* capacity holds by construction: a candidate that cannot serve λ̂ is none;
* CPU (with a cluster): ``Σ λ̂·cpu_s(s,k)·z ≤ ρ·cores − λ̂·serving_cpu_s``; memory:
  ``Σ n·memory_mb(s,k)·z ≤ 80 % of memory``; on several nodes also, per candidate, its busy
  cores per reserved CPU ``λ̂·cpu_s ÷ (n·cpus) ≤ ρ′`` (nodes are packed by reservation:
  planner.caps.Capacity.packed), which the candidates' scan enforces by starting n there;
* accuracy floor (ipa-energy's budget): ``Σ z·log a ≥ log(A_ipa − budget)``;
* objective: ``max Σ z·(α·log a − γ·λ̂·e − δ·b − (β·r + γ·p_idle)·n)``, i.e. α·log-accuracy
  − β·cost − γ·power − δ·Σ b (the terms of planner.terms; accuracy is the product of the
  stage accuracies, exact in log form).

The candidates come through the exact presolve of planner.candidates, which shrinks the model
without changing its optimum.

Several pipelines (:func:`solve_joint`, :mod:`planner.joint`) are one program of several
groups of stages: each group its own latency constraint, all the capacity.

:func:`planner.caps.capacities` gives the capacities to try (one per node utilisation cap ρ,
each with its contention stretch); :func:`solve_optimum` solves at one of them, with the fewest-changes
second solve; :func:`planner.best_effort.solve_best_effort` maximises the load served when
nothing is feasible, over the same candidates and constraints.
The model is solved exactly by :mod:`planner.solver` (HiGHS in-process, or CBC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulp

from ipa_energy.spec import StagePlan
from planner.candidates import (REPLICA_LIMIT, _Candidate, _candidates, _objective, _undominated,
                                _within_floor)
from planner.caps import Capacity
from planner.constants import LAT_TOL, OBJ_TOL
from planner.solver import solve_problem
from planner.terms import LatencyModel, Option, Weights, choice_terms

__all__ = ["REPLICA_LIMIT", "Demand", "solve_joint", "solve_optimum"]


@dataclass(frozen=True)
class _Group:
    """One pipeline of a program: its stages' candidates, its λ̂ and SLA, its accuracy floor."""

    cands: list[list[_Candidate]]
    lam: float
    sla_ms: float
    min_log_acc: float | None = None


class _Program:
    """The MILP over candidates: one binary z per (stage, option, n), exactly one per stage.

    `groups`: one per pipeline; each keeps its own latency constraint (and accuracy floor),
    and all share the capacity (CPU, memory): :func:`optimize` plans one group,
    :func:`planner.joint.optimize_joint` several. Stages are numbered across groups."""

    def __init__(self, groups: Sequence[_Group], capacity: Capacity, *,
                 latency: bool = True, target: float | None = None, maximise_served: bool = False):
        if (target is not None or maximise_served) and len(groups) != 1:
            raise ValueError("a throughput target or the served load is a one-pipeline program")
        self.groups = list(groups)
        self.cands = [cs for g in groups for cs in g.cands]
        self.lams = [g.lam for g in groups for _ in g.cands]
        self.group_of = [i for i, g in enumerate(groups) for _ in g.cands]
        self.lam = groups[0].lam if groups else 0.0
        self.prob = pulp.LpProblem("ipa", pulp.LpMaximize)
        self.z = [[pulp.LpVariable(f"z_{s}_{k}", cat="Binary") for k in range(len(cs))] for s, cs in enumerate(self.cands)]
        for s, zs in enumerate(self.z):
            self.prob += pulp.LpAffineExpression([(z, 1) for z in zs]) == 1, f"one_{s}"
        for i, g in enumerate(groups):
            tag = "" if i == 0 else f"_{i}"
            pairs = [(c, z) for s in self._stages(i) for c, z in zip(self.cands[s], self.z[s])]
            if g.min_log_acc is not None:  # the accuracy floor: log of the product of stage accuracies, exact
                self.prob += _expr((z, c.option.log_acc) for c, z in pairs) >= g.min_log_acc, f"accuracy_floor{tag}"
            if latency:
                self.prob += _expr((z, c.latency_ms) for c, z in pairs) <= g.sla_ms, f"latency{tag}"
        if target is not None:
            for s, (cs, zs) in enumerate(self._pairs()):
                self.prob += _expr((z, c.capacity_rps) for c, z in zip(cs, zs)) >= target, f"tput_{s}"
        self.served = None
        lam = self.lam
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
            loads = self.lams if target is None else [target] * len(self.cands)
            self.prob += _expr((z, load * c.option.cpu_s) for load, cs, zs in zip(loads, self.cands, self.z)
                               for c, z in zip(cs, zs)) <= capacity.cpu_cores, "cpu"
        if capacity.memory_mb is not None:
            self.prob += _expr((z, c.option.memory_mb_per_replica * c.n) for cs, zs in self._pairs()
                               for c, z in zip(cs, zs)) <= capacity.memory_mb, "memory"

    def _stages(self, group: int) -> list[int]:
        return [s for s, g in enumerate(self.group_of) if g == group]

    def _pairs(self):
        return zip(self.cands, self.z)

    def objective(self, w: Weights | Sequence[Weights]) -> pulp.LpAffineExpression:
        """The objective: each group's with its weights (one Weights: the same for every group)."""
        ws = [w] * len(self.groups) if isinstance(w, Weights) else list(w)
        terms = []
        for s, (cs, zs) in enumerate(self._pairs()):
            wg, lam = ws[self.group_of[s]], self.lams[s]
            for c, z in zip(cs, zs):
                o = c.option
                terms.append((z, wg.alpha * o.log_acc - wg.gamma * lam * o.energy_j - wg.delta * o.batch
                              - (wg.beta * o.resources + wg.gamma * o.idle_w) * c.n))
        return pulp.LpAffineExpression(terms)

    def solve(self, solver: str) -> bool:
        return solve_problem(self.prob, solver)

    def choice(self) -> list[tuple[Option, int]]:
        """(option, replicas) of every stage, stages numbered across groups."""
        out = []
        for cs, zs in self._pairs():
            k = max(range(len(cs)), key=lambda j: zs[j].varValue or 0.0)
            out.append((cs[k].option, cs[k].n))
        return out

    def choices(self) -> list[list[tuple[Option, int]]]:
        """:meth:`choice` per group."""
        flat = self.choice()
        return [[flat[s] for s in self._stages(i)] for i in range(len(self.groups))]


def _expr(pairs) -> pulp.LpAffineExpression:
    """Σ coefficient·variable, zero coefficients left out (as pulp.lpSum of products leaves them)."""
    return pulp.LpAffineExpression([(z, a) for z, a in pairs if a != 0])


def _keep(cur: StagePlan | None) -> tuple[str, int, int] | None:
    return None if cur is None else (cur.variant, cur.batch_size, cur.replicas)


@dataclass(frozen=True)
class Demand:
    """One pipeline's part of a program: its stages' options at λ̂, SLA, replica limits, weights,
    latency model (its own batch-fill rate), running stages (the tie-break) and accuracy floor."""

    options: Sequence[Sequence[Option]]
    lam: float
    sla_ms: float
    n_max: int
    fixed: Sequence[int | None]
    weights: Weights
    model: LatencyModel
    current: Sequence[StagePlan | None] | None = None
    min_log_acc: float | None = None


def solve_optimum(options, lam, sla, n_max, fixed_n, weights, solver, current_stages, capacity: Capacity,
                  tie_break: bool = True, min_log_acc: float | None = None, beat: float | None = None):
    """(choice, objective) of the program's optimum (fewest changes among equal optima); None if infeasible,
    or if no plan can exceed `beat` by more than OBJ_TOL.
    `min_log_acc`: the plan's log pipeline accuracy must reach it (ipa-energy's accuracy budget)."""
    found = solve_joint([Demand(options, lam, sla, n_max, fixed_n, weights, capacity.model, current_stages,
                                min_log_acc)], solver, capacity, tie_break, beat=beat)
    return None if found is None else (found[0][0], found[1])


def solve_joint(demands: Sequence[Demand], solver: str, capacity: Capacity, tie_break: bool = True, *,
                beat: float | None = None, stats: dict | None = None,
                ) -> tuple[list[list[tuple[Option, int]]], float] | None:
    """(choice per pipeline, total objective) of one program over every pipeline of `demands`:
    each keeps its own latency constraint, all share `capacity` (its CPU and memory; each
    pipeline's own latency model). Among equal optima, the fewest changes to the running
    stages (summed over pipelines). None if infeasible, or if no plan can exceed `beat` by
    more than OBJ_TOL (its bound, Σ over stages of the best candidate, says so before the MILP
    is built). `stats` (a dict) receives that ``bound`` and the program's ``binaries``."""
    groups, curs = [], []
    for d in demands:
        cur = d.current or [None] * len(d.options)
        cands = [_candidates(so, d.lam, d.sla_ms, d.n_max, f, d.model, _keep(c), packed=capacity.packed)
                 for so, f, c in zip(d.options, d.fixed, cur)]
        if any(not cs for cs in cands) or sum(min(c.latency_ms for c in cs) for cs in cands) > d.sla_ms + LAT_TOL:
            return None
        floor = d.min_log_acc
        if floor is not None:
            cands, floor = _within_floor(cands, floor)
            if any(not cs for cs in cands) or sum(min(c.latency_ms for c in cs) for cs in cands) > d.sla_ms + LAT_TOL:
                return None
        if floor is None:
            cands = [_undominated(cs, d.lam, d.weights, None) for cs in cands]
        else:
            least = [min(c.option.log_acc for c in cs) for cs in cands]
            cands = [_undominated(cs, d.lam, d.weights, floor - (sum(least) - low)) for cs, low in zip(cands, least)]
        groups.append(_Group(cands, d.lam, d.sla_ms, floor))
        curs += cur
    if stats is not None or beat is not None:
        bound = sum(max(_objective(c, d.lam, d.weights) for c in cs) for g, d in zip(groups, demands) for cs in g.cands)
        if stats is not None:
            stats.update(bound=bound, binaries=sum(len(cs) for g in groups for cs in g.cands))
        if beat is not None and bound + 1e-9 <= beat + OBJ_TOL:
            return None
    m = _Program(groups, capacity)
    obj = m.objective([d.weights for d in demands])
    m.prob.setObjective(obj)
    if not m.solve(solver):
        return None

    def value(choices) -> float:
        return sum(choice_terms(ch, d.lam, d.weights, d.model)["objective"] for ch, d in zip(choices, demands))

    choices = m.choices()
    best = value(choices)
    if all(d.current is None for d in demands) or not tie_break:
        return choices, best
    # Second solve: stay at the optimum, minimise changes (variant, batch size, replicas per stage).
    m.prob += obj >= best - OBJ_TOL, "stay_optimal"
    changes = []
    for cs, zs, c in zip(m.cands, m.z, curs):
        if c is None:
            continue
        changes += [(z, (cand.option.variant != c.variant) + (cand.option.batch != c.batch_size) + (cand.n != c.replicas))
                    for cand, z in zip(cs, zs)]
    m.prob.sense = pulp.LpMinimize
    m.prob.setObjective(pulp.LpAffineExpression(changes))
    if m.solve(solver):
        alt = m.choices()
        if value(alt) >= best - OBJ_TOL:
            return alt, best
    return choices, best
