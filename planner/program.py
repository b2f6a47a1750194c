"""The program itself: candidates per stage, the MILP over them, and its two solves.

Per stage s the program enumerates *candidates* (m, b, n): a variant m, a batch size b with a
profile, and a replica count n in 1..N (or the fixed n of ``rim``). Each candidate carries
its p99 latency at λ̂ (planner.terms.stage_latency_ms: the stretched service, the batch fill
and the p99 wait for a free replica, combined as a p99 of their sum) and its capacity
n × throughput ÷ stretch. One binary z per
candidate:

* ``Σ_k z[s,k] = 1`` per stage (one variant, batch size and replica count);
* latency: ``Σ_s Σ_k latency(s,k)·z[s,k] ≤ SLA`` (ms);
* capacity holds by construction: a candidate that cannot serve λ̂ gets no variable;
* CPU (with a cluster): ``Σ λ̂·cpu_s(s,k)·z ≤ ρ·cores − λ̂·serving_cpu_s``; memory:
  ``Σ n·memory_mb(s,k)·z ≤ 80 % of memory``; on several nodes also, per candidate, its busy
  cores per reserved CPU ``λ̂·cpu_s ÷ (n·cpus) ≤ ρ′`` (nodes are packed by reservation:
  planner.caps.Capacity.packed), which the scan enforces by starting n there;
* accuracy floor (ipa-energy's budget): ``Σ z·log a ≥ log(A_ipa − budget)``;
* objective: ``max Σ z·(α·log a − γ·λ̂·e − δ·b − (β·r + γ·p_idle)·n)``, i.e. α·log-accuracy
  − β·cost − γ·power − δ·Σ b (the terms of planner.terms; accuracy is the product of the
  stage accuracies, exact in log form).

Exact presolve: a candidate whose own latency exceeds the SLA, or that cannot serve λ̂, gets no
variable; nor does n past the first with no wait (more replicas only cost more), except the
running (variant, b, n), kept for the fewest-changes tie-break; nor does a candidate another of
its stage beats by more than OBJ_TOL in the objective with no more latency, CPU or memory. The
scan over n starts at the first n that can carry λ̂ and carries Erlang's recursion across n
(linear in the replicas, for clusters of thousands). This shrinks the model without changing
its optimum (the brute-force tests in tests/unit/planner/test_capacity_program.py compare it
with every plan; tests/unit/planner/test_presolve.py the scan with the one from n = 1).

Several pipelines (:func:`solve_joint`, :mod:`planner.joint`) are one program of several
groups of stages: each group its own latency constraint, all the capacity.

:func:`planner.caps.capacities` gives the capacities to try (one per node utilisation cap ρ,
each with its contention stretch); :func:`solve_optimum` solves at one of them, with the fewest-changes
second solve; :func:`planner.best_effort.solve_best_effort` maximises the load served when
nothing is feasible, over the same candidates and constraints.
The model is solved exactly by :mod:`planner.solver` (HiGHS in-process, or CBC).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pulp

from ipa_energy.spec import StagePlan
from planner.capacity import WaitSeries
from planner.caps import Capacity
from planner.constants import LAT_TOL, OBJ_TOL
from planner.solver import solve_problem
from planner.terms import (LatencyModel, Option, Weights, choice_terms, latency_parts, stage_capacity_rps,
                           stage_latency_ms, with_wait)

__all__ = ["REPLICA_LIMIT", "Demand", "solve_joint", "solve_optimum"]


#: the most replicas a StagePlan holds (its schema's bound): N never exceeds it
REPLICA_LIMIT: int = next(int(m.le) for m in StagePlan.model_fields["replicas"].metadata if getattr(m, "le", None))


class _Candidate(NamedTuple):
    """One way to run a stage: `n` replicas of an option, with its latency and capacity at λ̂.
    (A tuple: at scale a program's presolve makes millions of them.)"""

    option: Option
    n: int
    latency_ms: float
    capacity_rps: float


def _first_n(o: Option, lam: float, model: LatencyModel, slack: float) -> int | None:
    """The smallest n ≥ 1 whose capacity reaches λ̂·(1 − slack) (None: no n does): the closed
    form ⌈λ̂·(1 − slack)·stretch ÷ throughput⌉, corrected by a step either way for float error
    so that it agrees with :func:`stage_capacity_rps` exactly."""
    need = lam * (1 - slack)
    if stage_capacity_rps(o, 1, model) >= need:
        return 1
    guess = need * model.stretch / o.throughput if o.throughput > 0 else math.inf
    if not math.isfinite(guess) or guess > 2**52:
        return None
    n = max(1, math.ceil(guess))
    while n > 1 and stage_capacity_rps(o, n - 1, model) >= need:
        n -= 1
    while stage_capacity_rps(o, n, model) < need:
        n += 1
    return n


def _candidates(opts: Sequence[Option], lam: float, sla_ms: float, n_max: int, fixed: int | None,
                model: LatencyModel, keep: tuple[str, int, int] | None = None, *,
                best_effort: bool = False, latency: bool = True, packed: float | None = None) -> list[_Candidate]:
    """The (option, n) a stage may run (see :func:`_scan`). The scan does not read the weights,
    so ipa-energy's solve and the IPA solve it is planned against, at the same load and cap,
    share it: the last scans are kept (scale mode, ipa-energy, 6 simulated hours: ~15 % less time)."""
    return list(_scan(tuple(opts), lam, sla_ms, n_max, fixed, model, keep, best_effort, latency, packed))


def _packed_n(o: Option, lam: float, packed: float | None) -> int:
    """The fewest replicas of `o` that keep each one's busy cores within `packed` × the CPUs it
    reserves at λ̂ (planner.caps.Capacity.packed; 1 when not limited or not known)."""
    if packed is None or o.cpus <= 0 or o.cpu_s <= 0 or lam <= 0:
        return 1
    if packed <= 0:  # the nodes in use are busy outside the replicas up to the cap: none fits
        return REPLICA_LIMIT + 1
    return max(1, math.ceil(lam * o.cpu_s / (packed * o.cpus) - 1e-9))


@functools.lru_cache(maxsize=64)
def _scan(opts: tuple[Option, ...], lam: float, sla_ms: float, n_max: int, fixed: int | None, model: LatencyModel,
          keep: tuple[str, int, int] | None, best_effort: bool, latency: bool,
          packed: float | None = None) -> tuple[_Candidate, ...]:
    """The (option, n) a stage may run. Exact presolve: a candidate that cannot serve λ̂ or meet
    the SLA on its own gets no variable, nor does n past the point where more replicas no longer
    shorten the wait (they only cost more); `keep` (the running variant, batch, n) stays a
    candidate for the fewest-changes tie-break. `best_effort`: latency without the wait (an
    overloaded stage queues without bound; the served load is what is maximised), every n up
    to the first whose capacity reaches λ̂ (beyond it a replica adds cost and memory, and
    neither latency nor served load). `packed` (a cluster of several nodes; planner.caps): n
    starts at the fewest replicas whose busy cores per reserved CPU stay within it
    (:func:`_packed_n`), and a fixed count (``rim``, a bridge) below that is no candidate; best
    effort (which maximises the load served, not within any bound) is not held to it.

    The scan over n starts at the first n that can carry λ̂ (:func:`_first_n`) and carries
    Erlang's recursion from one n to the next (:class:`planner.capacity.WaitSeries`): linear
    in the replicas scanned, with the same candidates, bit for bit, as trying every n from 1."""
    out = []
    for o in opts:
        head, tail2 = latency_parts(o, lam, model)
        base = with_wait(head, tail2, 0.0)  # the latency with no wait: the same for every n
        if best_effort:
            if fixed is not None:
                ns = (fixed,)
            else:
                top = _first_n(o, lam, model, 0.0)
                ns = range(1, n_max + 1 if top is None else min(top, n_max) + 1)
            if latency and base > sla_ms + LAT_TOL:
                continue
            out += [_Candidate(o, n, base, stage_capacity_rps(o, n, model)) for n in ns]
            continue
        if fixed is not None:
            ns = (fixed,) if stage_capacity_rps(o, fixed, model) >= lam * (1 - 1e-12) \
                and fixed >= _packed_n(o, lam, packed) else ()
        else:
            n0 = _first_n(o, lam, model, 1e-12)
            ns = () if n0 is None else range(max(n0, _packed_n(o, lam, packed)), n_max + 1)
        waits = WaitSeries(lam, o.batch, o.service_ms * model.stretch, o.cs2).waits_from(ns[0]) if ns else None
        throughput, stretch, queueing, limit = o.throughput, model.stretch, model.queueing, sla_ms + LAT_TOL
        for n in ns:
            cap = throughput * n / stretch  # stage_capacity_rps, inline: this loop runs millions of times at scale
            lat = with_wait(head, tail2, next(waits)) if queueing else base
            if lat <= limit:
                out.append(_Candidate(o, n, lat, cap))
            if lat <= base and fixed is None:  # no wait: n past this only costs more; keep the running n, if larger
                if keep is not None and (o.variant, o.batch) == keep[:2] and keep[2] > n:
                    big = _Candidate(o, keep[2], stage_latency_ms(o, keep[2], lam, model),
                                     stage_capacity_rps(o, keep[2], model))
                    if keep[2] <= n_max and big.latency_ms <= sla_ms + LAT_TOL:
                        out.append(big)
                break
    return tuple(out)


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


def _objective(c: _Candidate, lam: float, w: Weights) -> float:
    """A candidate's share of the objective (as :meth:`_Program.objective` counts it)."""
    o = c.option
    return w.alpha * o.log_acc - w.gamma * lam * o.energy_j - w.delta * o.batch - (w.beta * o.resources + w.gamma * o.idle_w) * c.n


def _within_floor(cands: list[list[_Candidate]], min_log_acc: float) -> tuple[list[list[_Candidate]], float | None]:
    """(candidates, floor left to the program) under an accuracy floor: each stage less the
    candidates that miss it even with the most accurate of every other stage. One stage: every
    candidate left meets it, so the program needs no floor, and prunes as without one (a floor
    makes accuracy a dimension of dominance: ten pipelines' joint plan took 2.3 s, not 0.3)."""
    if len(cands) == 1:
        return [[c for c in cands[0] if c.option.log_acc >= min_log_acc]], None
    best = [max(c.option.log_acc for c in cs) for cs in cands]
    others = sum(best)
    # the slack keeps a candidate float rounding would drop; the program's floor still holds it
    return [[c for c in cs if c.option.log_acc + others - b >= min_log_acc - 1e-9] for cs, b in zip(cands, best)], \
        min_log_acc


def _undominated(cands: list[_Candidate], lam: float, w: Weights, safe: float | None) -> list[_Candidate]:
    """`cands` less those another candidate of the stage beats by more than OBJ_TOL in the
    objective while needing no more latency, CPU or memory. Under an accuracy floor (`safe`:
    the log-accuracy at which this stage meets it whatever the other stages run), the better
    one must also have no less accuracy, unless it reaches `safe`.

    Exact, the fewest-changes tie-break included: swapping such a candidate for its better one
    keeps every constraint and gains more than OBJ_TOL, so no plan within OBJ_TOL of the
    optimum uses it. (Every candidate serves λ̂, so capacity plays no part.)"""
    if len(cands) < 2:
        return cands
    obj = np.array([_objective(c, lam, w) for c in cands])
    cols = [np.array([c.latency_ms for c in cands]), np.array([lam * c.option.cpu_s for c in cands]),
            np.array([c.option.memory_mb_per_replica * c.n for c in cands])]
    cols = [(col, col) for col in cols]  # (as the better one, as the worse one)
    if safe is not None:
        acc = -np.array([c.option.log_acc for c in cands])
        # a candidate whose accuracy meets the floor whatever the other stages run beats a more accurate one too
        cols.append((np.where(-acc >= safe, -np.inf, acc), acc))
    keep = np.ones(len(cands), dtype=bool)
    step = max(1, 4_000_000 // len(cands))  # rows of the comparison at a time
    for lo in range(0, len(cands), step):
        hi = min(len(cands), lo + step)
        beats = obj[None, :] > obj[lo:hi, None] + OBJ_TOL  # [j, i]: i beats j in the objective
        for better, worse in cols:
            beats &= better[None, :] <= worse[lo:hi, None]
        keep[lo:hi] = ~beats.any(axis=1)
    return [c for c, k in zip(cands, keep) if k]


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
