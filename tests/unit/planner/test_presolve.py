"""The large-n presolve (start at the first n that carries λ̂, Erlang carried across n) against
the plain scan over every n from 1, kept here as the reference."""

from __future__ import annotations

import random
import pytest

from planner.capacity import WaitSeries, stretch, wait_p99_ms
from planner.constants import LAT_TOL
from planner.candidates import _Candidate, _candidates
from planner.terms import LatencyModel, Option, stage_base_ms, stage_capacity_rps, stage_latency_ms


def reference_candidates(opts, lam, sla_ms, n_max, fixed, model, keep=None, *, best_effort=False, latency=True):
    """planner.candidates._candidates as it was: every n from 1 to N, Erlang C from scratch each time."""
    out = []
    for o in opts:
        for n in ((fixed,) if fixed is not None else range(1, n_max + 1)):
            cap = stage_capacity_rps(o, n, model)
            if best_effort:
                lat = stage_base_ms(o, lam, model)
                if not latency or lat <= sla_ms + LAT_TOL:
                    out.append(_Candidate(o, n, lat, cap))
                continue
            if cap < lam * (1 - 1e-12):
                continue
            lat = stage_latency_ms(o, n, lam, model)
            if lat <= sla_ms + LAT_TOL:
                out.append(_Candidate(o, n, lat, cap))
            no_wait = lat <= stage_base_ms(o, lam, model)
            if no_wait and fixed is None:
                if keep is not None and (o.variant, o.batch) == keep[:2] and keep[2] > n:
                    big = _Candidate(o, keep[2], stage_latency_ms(o, keep[2], lam, model),
                                     stage_capacity_rps(o, keep[2], model))
                    if keep[2] <= n_max and big.latency_ms <= sla_ms + LAT_TOL:
                        out.append(big)
                break
    return out


def random_options(rng: random.Random, k: int) -> list[Option]:
    opts = []
    for i in range(k):
        b = rng.choice((1, 2, 4, 8, 16, 32))
        p50 = rng.uniform(5, 400) * (1 + 0.5 * (b - 1))
        p99 = p50 * rng.uniform(1.0, 2.0)
        thr = 1000 * b / p50 * rng.uniform(0.8, 1.05) if rng.random() > 0.02 else 0.0
        opts.append(Option(variant=f"v{i % 3}", batch=b, latency_ms=p99, throughput=thr, energy_j=0.1, idle_w=1.0,
                           resources=0.5, log_acc=-0.3, acc=0.74, l99_ms=p99, service_ms=p50,
                           cs2=rng.uniform(0, 0.5)))
    return opts


def random_case(seed: int):
    rng = random.Random(seed)
    lam = rng.choice((0.0, rng.uniform(0.1, 20), rng.uniform(20, 3000), 1000.0))
    model = LatencyModel(queueing=rng.random() > 0.15, stretch=rng.choice((1.0, stretch(2, 0.5), stretch(4, 0.9),
                                                                              rng.uniform(1, 3))),
                         fill_factor=rng.choice((1.0, rng.uniform(0.2, 1.0))))
    opts = random_options(rng, rng.randint(1, 6))
    n_max = rng.choice((1, 3, 16, 200, 1500))
    fixed = rng.choice((None, None, None, rng.randint(1, 40)))
    sla = rng.uniform(50, 5000)
    keep = None
    if rng.random() < 0.4:
        o = rng.choice(opts)
        keep = (o.variant, o.batch, rng.randint(1, n_max + 5))
    return opts, lam, sla, n_max, fixed, model, keep


@pytest.mark.parametrize("seed", range(300))
def test_candidates_equal_the_full_scan(seed):
    opts, lam, sla, n_max, fixed, model, keep = random_case(seed)
    assert _candidates(opts, lam, sla, n_max, fixed, model, keep) == \
        reference_candidates(opts, lam, sla, n_max, fixed, model, keep)


@pytest.mark.parametrize("seed", range(150))
def test_best_effort_drops_only_dominated_replica_counts(seed):
    """Best effort: past the first n that carries λ̂, a replica adds cost and memory and neither
    latency nor served load (t ≤ λ̂): those candidates are the only ones left out."""
    opts, lam, sla, n_max, fixed, model, _ = random_case(seed)
    for latency in (True, False):
        new = _candidates(opts, lam, sla, n_max, fixed, model, best_effort=True, latency=latency)
        old = reference_candidates(opts, lam, sla, n_max, fixed, model, best_effort=True, latency=latency)
        kept = set(new)
        assert kept <= set(old) and [c for c in old if c in kept] == new
        for c in old:
            if c not in kept:
                top = max((k for k in new if k.option == c.option), key=lambda k: k.n)
                assert top.n < c.n and top.capacity_rps >= lam and top.latency_ms == c.latency_ms


def test_wait_series_is_wait_p99_bit_for_bit():
    rng = random.Random(7)
    for _ in range(60):
        lam, b, s, cs2 = rng.uniform(0.1, 5000), rng.choice((1, 4, 16)), rng.uniform(5, 500), rng.uniform(0, 1)
        series = WaitSeries(lam, b, s, cs2)
        for n in sorted(rng.sample(range(1, 3000), 40)):
            assert series.at(n) == wait_p99_ms(n, lam, b, s, cs2)


def test_wait_series_scan_is_wait_p99_bit_for_bit_from_any_start():
    rng = random.Random(11)
    for _ in range(60):
        lam, b, s, cs2 = rng.uniform(0.1, 5000), rng.choice((1, 4, 16)), rng.uniform(5, 500), rng.uniform(0, 1)
        start = rng.randrange(1, 2000)
        scan = WaitSeries(lam, b, s, cs2).waits_from(start)
        for n in range(start, start + 300):  # the stages that cannot keep up (inf) included
            assert next(scan) == wait_p99_ms(n, lam, b, s, cs2)
    assert [next(WaitSeries(0.0, 1, 10.0).waits_from(1)) for _ in range(2)] == [0.0, 0.0]


def test_replicas_stop_at_what_a_plan_can_hold():
    """N past the StagePlan's bound (1,000 replicas) plans within it: best effort past it, not a crash."""
    from ipa_energy.spec import PipelineSpec, Resources, StageSpec
    from planner.checks import is_feasible
    from planner.optimizer import optimize
    from planner.program import REPLICA_LIMIT
    from tests.unit.planner.test_optimizer import _profile, _variant

    res = Resources(num_cpus=0.5)
    pipe = PipelineSpec(name="one", stages=(StageSpec(name="c", variants=(_variant("v", "classify", 0.7, res),)),),
                        sla_ms=5000)
    profiles = {("v", 1): _profile("v", 1, res, 100.0, 10.0, 0.5, 0.6)}
    ok = optimize(pipe, profiles, 9_000, batch_sizes=(1,), max_replicas=5000)
    assert is_feasible(ok) and ok.stages["c"].replicas <= REPLICA_LIMIT
    over = optimize(pipe, profiles, 20_000, batch_sizes=(1,), max_replicas=5000)
    assert not is_feasible(over) and over.stages["c"].replicas == REPLICA_LIMIT
    assert over.objective["capacity_rps"] == pytest.approx(10.0 * REPLICA_LIMIT)
