"""A stage's candidates for the program (planner.program) and the exact presolve over them.

Per stage the program picks one *candidate* (m, b, n): a variant m, a batch size b with a
profile and a replica count n in 1..N (or a fixed n: ``rim``'s, a bridge's). Each carries its
p99 latency at λ̂ (planner.terms.stage_latency_ms: the stretched service, the batch fill and the
p99 wait for a free replica, combined as a p99 of their sum) and its capacity n × throughput ÷
stretch.

Exact presolve: a candidate whose own latency exceeds the SLA, or that cannot serve λ̂, is no
candidate; nor is n past the first with no wait (more replicas only cost more), except the
running (variant, b, n), kept for the fewest-changes tie-break; nor, on several nodes, n below
the fewest replicas whose busy cores per reserved CPU stay within ρ′ (planner.caps.Capacity.packed);
nor a candidate another of its stage beats by more than OBJ_TOL in the objective with no more
latency, CPU or memory (:func:`_undominated`). The scan over n starts at the first n that can
carry λ̂ and carries Erlang's recursion across n (linear in the replicas, for clusters of
thousands). This shrinks the model without changing its optimum (the brute-force tests in
tests/unit/planner/test_capacity_program.py compare it with every plan;
tests/unit/planner/test_presolve.py the scan with the one from n = 1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ipa_energy.spec import StagePlan
from planner.capacity import WaitSeries
from planner.constants import LAT_TOL, OBJ_TOL
from planner.terms import LatencyModel, Option, Weights, latency_parts, stage_capacity_rps, stage_latency_ms, with_wait

__all__ = ["REPLICA_LIMIT", "packed_replicas"]


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


def packed_replicas(o: Option, lam: float, packed: float | None) -> int:
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
    (:func:`packed_replicas`), and a fixed count (``rim``, a bridge) below that is no candidate; best
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
                and fixed >= packed_replicas(o, lam, packed) else ()
        else:
            n0 = _first_n(o, lam, model, 1e-12)
            ns = () if n0 is None else range(max(n0, packed_replicas(o, lam, packed)), n_max + 1)
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
