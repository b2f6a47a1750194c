"""The best-effort program (no plan serves λ̂): its first solve by enumeration (planner.best_effort.
_max_served) and its pruned second solve, against the MILPs over every (option, n) they replace."""

from __future__ import annotations

import random
from dataclasses import replace

import pulp
import pytest

from planner import best_effort
from planner.best_effort import _max_served, solve_best_effort
from planner.caps import Capacity
from planner.candidates import _candidates
from planner.program import _Group, _Program
from planner.terms import LatencyModel, Option, Weights, choice_terms, stage_latency_ms
from planner.constants import LAT_TOL


def random_stage(rng: random.Random, stage: int) -> list[Option]:
    opts = []
    for i in range(rng.randint(1, 4)):
        b = rng.choice((1, 2, 4, 8))
        p50 = rng.uniform(5, 300) * (1 + 0.3 * (b - 1))
        thr = 1000 * b / p50
        opts.append(Option(variant=f"s{stage}v{i % 2}", batch=b, latency_ms=p50 * 1.3, throughput=thr,
                           energy_j=rng.uniform(0.01, 1), idle_w=rng.uniform(0, 5), resources=rng.choice((0.5, 1.0)),
                           log_acc=-rng.uniform(0.05, 0.5), acc=0.7, l99_ms=p50 * 1.3, service_ms=p50,
                           cpu_s=rng.choice((0.0, rng.uniform(0.001, 0.05))),
                           memory_mb_per_replica=rng.choice((0.0, rng.uniform(50, 500)))))
    return opts


def random_case(seed: int):
    rng = random.Random(seed)
    options = [random_stage(rng, s) for s in range(rng.choice((1, 2, 3)))]
    lam = rng.uniform(10, 5000)
    model = LatencyModel(queueing=True, stretch=rng.uniform(1, 2), fill_factor=1.0)
    cap = Capacity(model=model, cpu_cores=rng.choice((None, rng.uniform(0.5, 40))),
                   memory_mb=rng.choice((None, rng.uniform(200, 20000))))
    n_max = rng.choice((1, 4, 30, 200))
    fixed = [rng.choice((None, None, rng.randint(1, 8))) for _ in options]
    sla = rng.uniform(50, 2000)
    return options, lam, sla, n_max, fixed, cap


def milp_served(options, lam, sla, n_max, fixed, cap):
    plain = replace(cap.model, queueing=False)
    keep_latency = sum(min(stage_latency_ms(o, 1, lam, plain) for o in so) for so in options) <= sla + LAT_TOL
    cands = [_candidates(so, lam, sla, n_max, f, cap.model, best_effort=True, latency=keep_latency)
             for so, f in zip(options, fixed)]
    if any(not cs for cs in cands):
        return None, keep_latency, cands
    m = _Program([_Group(cands, lam, sla)], cap, latency=keep_latency, maximise_served=True)
    m.prob.setObjective(pulp.LpAffineExpression([(m.served, 1.0)]))
    if not m.solve("highs"):
        return None, keep_latency, cands
    return min(m.served.varValue or 0.0, lam), keep_latency, cands


@pytest.mark.parametrize("seed", range(120))
def test_enumeration_serves_what_the_milp_serves(seed):
    options, lam, sla, n_max, fixed, cap = random_case(seed)
    served, keep_latency, cands = milp_served(options, lam, sla, n_max, fixed, cap)
    found = _max_served(options, lam, sla, n_max, fixed, cap, keep_latency)
    if served is None:
        assert found is False
        return
    t, choice = found
    assert t == pytest.approx(served, rel=1e-6, abs=1e-6)
    # the choice is a plan of the MILP's candidates that serves t within the constraints
    assert all(any(c.option == o and c.n == n for c in cs) for (o, n), cs in zip(choice, cands))
    terms = choice_terms(choice, lam, Weights(), replace(cap.model, queueing=False))
    assert min(terms["capacity_rps"], lam) >= t - 1e-6
    if cap.memory_mb is not None:
        assert sum(o.memory_mb_per_replica * n for o, n in choice) <= cap.memory_mb + 1e-6
    if cap.cpu_cores is not None:
        assert t * sum(o.cpu_s for o, _ in choice) <= cap.cpu_cores + 1e-6


@pytest.mark.parametrize("seed", range(60))
def test_the_plan_is_as_good_as_the_milps_over_every_n(seed, monkeypatch):
    options, lam, sla, n_max, fixed, cap = random_case(seed)
    w = Weights(gamma=0.01)
    fast = solve_best_effort(options, lam, sla, n_max, fixed, w, "highs", cap)
    served, keep_latency, cands = milp_served(options, lam, sla, n_max, fixed, cap)
    if served is None:
        assert fast is None
        return
    m2 = _Program([_Group(cands, lam, sla)], cap, latency=keep_latency, target=served * (1 - 1e-9))
    m2.prob.setObjective(m2.objective(w))
    assert m2.solve("highs")
    plain = replace(cap.model, queueing=False)
    ref = choice_terms(m2.choice(), lam, w, plain)
    got = choice_terms(fast, lam, w, plain)
    assert min(got["capacity_rps"], lam) >= served - 1e-5
    assert got["objective"] == pytest.approx(ref["objective"], abs=1e-6)
    # past the enumeration's limit, the MILP path gives the same
    monkeypatch.setattr(best_effort, "COMBINATIONS_LIMIT", 0)
    slow = solve_best_effort(options, lam, sla, n_max, fixed, w, "highs", cap)
    assert choice_terms(slow, lam, w, plain)["objective"] == pytest.approx(ref["objective"], abs=1e-6)
