"""planner.infadapter: the variant-mix program against brute force, and how it plugs in."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from ipa_energy.spec import PipelineSpec, Plan, Resources, StageSpec
from planner.loop import PlannerLoop
from planner.checks import check_plan, is_feasible
from planner.optimizer import optimize
from planner.terms import Weights
from planner.tables import describe
from planner.predictor import MaxPredictor
from tests.unit.planner.test_optimizer import _profile, _variant, random_problem

BATCHES = (1, 2, 4)


def single_stage_problem(seed: int):
    rng = random.Random(seed)
    variants, profiles = [], {}
    for m in range(rng.choice((2, 3))):
        res = rng.choice((Resources(num_cpus=0.5), Resources(num_cpus=1), Resources(num_cpus=1, num_gpus=0.25)))
        v = _variant(f"v{m}", "classify", rng.uniform(0.5, 0.95), res)
        variants.append(v)
        l1 = rng.uniform(20, 200)
        for b in BATCHES:
            lat = l1 * (1 + rng.uniform(0.3, 0.9) * (b - 1))
            profiles[(v.name, b)] = _profile(v.name, b, res, lat, 1000 * b / lat * rng.uniform(0.8, 1.0),
                                             rng.uniform(0.05, 1.5), rng.uniform(0.2, 3.0))
    pipe = PipelineSpec(name="one", stages=(StageSpec(name="s", variants=tuple(variants)),),
                        sla_ms=rng.uniform(150, 900))
    weights = rng.choice((Weights(), Weights(alpha=2, beta=0.05, delta=0.001), Weights(alpha=1, beta=0.002)))
    return pipe, profiles, rng.uniform(1, 60), rng.randint(1, 4), rng.randint(1, 3), weights


def brute_force(pipe, profiles, lam, sla, n_max, k_max, w):
    """(best objective or None, most load served) over every mix, replica vector and split.

    For a fixed set of members and replicas the best split is a fractional knapsack: each
    member gets its batch-fill minimum, the rest goes to the highest value per req/s first.
    """
    opts = [(v, b, profiles[(v.name, b)]) for v in pipe.stages[0].variants for b in BATCHES]
    best, served_sla, served_any = None, 0.0, 0.0
    for k in range(1, k_max + 1):
        for combo in itertools.combinations(opts, k):
            if len({v.name for v, _, _ in combo}) < k:
                continue
            for ns in itertools.product(range(1, n_max + 1), repeat=k):
                if sum(ns) > n_max:
                    continue
                hi = [min(p.throughput_rps * n, lam) for (_, _, p), n in zip(combo, ns)]
                served_any = max(served_any, min(lam, sum(hi)))
                meets = all(p.latency_p99_ms < sla or (b == 1 and p.latency_p99_ms <= sla) for _, b, p in combo)
                if not meets:
                    continue
                lo = [0.0 if b == 1 else 1000 * (b - 1) / (sla - p.latency_p99_ms) for _, b, p in combo]
                if any(a > c for a, c in zip(lo, hi)):
                    continue
                served_sla = max(served_sla, min(lam, sum(hi)))
                if sum(lo) > lam or sum(hi) < lam:
                    continue
                value = [w.alpha * v.accuracy.value / lam for v, _, _ in combo]
                load, rest = list(lo), lam - sum(lo)
                for i in sorted(range(k), key=lambda i: -value[i]):
                    add = min(rest, hi[i] - load[i])
                    load[i] += add
                    rest -= add
                obj = sum(vi * li for vi, li in zip(value, load)) - sum(
                    w.beta * (v.resources.num_cpus + v.resources.num_gpus) * n + w.delta * b
                    for (v, b, _), n in zip(combo, ns))
                best = obj if best is None else max(best, obj)
    return best, served_sla if served_sla > 0 else served_any


def test_matches_brute_force_on_random_single_stage_problems():
    feasible = infeasible = mixed = 0
    for seed in range(80):
        pipe, profiles, load, n_max, k_max, w = single_stage_problem(seed)
        plan = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max,
                        max_variants=k_max, policy="infadapter")
        best, served = brute_force(pipe, profiles, load, pipe.sla_ms, n_max, k_max, w.model_copy(update={"gamma": 0}))
        sp = plan.stages["s"]
        assert len(sp.members()) <= k_max, seed
        if best is None:
            infeasible += 1
            assert not is_feasible(plan), seed
            assert min(plan.objective["capacity_rps"], load) == pytest.approx(served, rel=1e-6), seed
        else:
            feasible += 1
            assert is_feasible(plan), seed
            assert plan.objective["objective"] == pytest.approx(best, abs=1e-5), seed
            assert check_plan(pipe, plan, profiles, max_replicas=n_max) == [], seed
            assert plan.objective["accuracy"] == pytest.approx(pipe.accuracy(plan), rel=1e-9)
        mixed += sp.mix is not None
        if feasible >= 30 and infeasible >= 5 and mixed >= 3:
            break
    assert feasible >= 20 and infeasible >= 1 and mixed >= 1, (feasible, infeasible, mixed)


def capped_problem():
    """The accurate variant cannot carry the load within the replica cap; the cheap one can."""
    res = Resources(num_cpus=1)
    big, small = _variant("big", "classify", 0.80, res), _variant("small", "classify", 0.70, res)
    profiles = {(big.name, 1): _profile(big.name, 1, res, 100, 10.0, 1.0, 1.0),
                (small.name, 1): _profile(small.name, 1, res, 10, 100.0, 0.1, 1.0)}
    return PipelineSpec(name="capped", stages=(StageSpec(name="c", variants=(big, small)),), sla_ms=500), profiles


def test_a_mix_beats_any_single_variant_when_the_replica_cap_binds():
    pipe, profiles = capped_problem()
    ipa = optimize(pipe, profiles, 30, batch_sizes=(1,), max_replicas=2, policy="ipa")
    mix = optimize(pipe, profiles, 30, batch_sizes=(1,), max_replicas=2, policy="infadapter")
    assert ipa.stages["c"].variant == "small"
    sp = mix.stages["c"]
    assert is_feasible(mix) and sp.mix is not None
    shares = {m.variant: m for m in sp.mix}
    # one replica of "big" at its 10 req/s, the other 20 on "small": share-weighted accuracy
    assert shares["big"].share == pytest.approx(1 / 3) and shares["big"].replicas == 1
    assert sp.variant == "small" and sp.replicas == shares["small"].replicas  # primary = largest share
    assert pipe.accuracy(mix) == pytest.approx((10 * 0.8 + 20 * 0.7) / 30)
    assert pipe.accuracy(mix) > pipe.accuracy(ipa)
    assert check_plan(pipe, mix, profiles, max_replicas=2) == []
    assert "33% big×1@b1" in describe(mix)
    # the plan round-trips through JSON (the format PUT /v1/plan takes)
    assert Plan.model_validate_json(mix.model_dump_json()) == mix
    # one variant only: no mix, and the load is infeasible for "big" alone
    one = optimize(pipe, profiles, 30, batch_sizes=(1,), max_replicas=2, policy="infadapter", max_variants=1)
    assert one.stages["c"].mix is None and one.stages["c"].variant == "small"
    # a static evaluation of the mixed plan predicts the same
    again = optimize(pipe, profiles, 30, policy="static", static_plan=mix.model_copy(update={"policy": "infadapter"}),
                     queueing=False)  # InfAdapter's program has no queueing term
    assert again.predicted_power_w == pytest.approx(mix.predicted_power_w) and is_feasible(again)


def test_infeasible_load_gives_a_flagged_best_effort_mix():
    pipe, profiles = capped_problem()
    plan = optimize(pipe, profiles, 1000, batch_sizes=(1,), max_replicas=2, policy="infadapter")
    assert not is_feasible(plan)
    assert plan.objective["capacity_rps"] == pytest.approx(200.0)  # two replicas of "small"
    plan = optimize(pipe, profiles, 5, sla_ms=1.0, batch_sizes=(1,), max_replicas=2, policy="infadapter")
    assert not is_feasible(plan) and set(plan.stages) == {"c"}


def test_cbc_and_highs_agree():
    for seed in range(4):
        pipe, profiles, load, n_max, k_max, w = single_stage_problem(seed)
        kw = dict(weights=w, batch_sizes=BATCHES, max_replicas=n_max, max_variants=k_max, policy="infadapter")
        a, b = optimize(pipe, profiles, load, solver="cbc", **kw), optimize(pipe, profiles, load, solver="highs", **kw)
        assert a.objective["feasible"] == b.objective["feasible"]
        assert a.objective["objective"] == pytest.approx(b.objective["objective"], abs=1e-5)


def test_multi_stage_pipeline_is_a_configuration_error():
    pipe, profiles, load, *_ = random_problem(0)
    assert len(pipe.stages) > 1
    with pytest.raises(ValueError, match="single-stage"):
        optimize(pipe, profiles, load, policy="infadapter")
    with pytest.raises(ValueError, match="single-stage"):
        PlannerLoop(pipe, profiles, MaxPredictor(), lambda p: {}, policy="infadapter")
    with pytest.raises(ValueError, match="unknown policy"):
        PlannerLoop(pipe, profiles, MaxPredictor(), lambda p: {}, policy="nope")


def test_planner_loop_applies_and_logs_a_mix():
    pipe, profiles = capped_problem()
    applied, now = [], [0.0]
    loop = PlannerLoop(pipe, profiles, MaxPredictor(), applied.append, policy="infadapter", max_replicas=2,
                       clock=lambda: now[0])
    d = loop.step(np.full(30, 30.0))
    assert d.changed and d.feasible and len(applied) == 1
    assert {m["variant"] for m in d.stages["c"]["mix"]} == {"big", "small"}
    assert d.accuracy == pytest.approx((10 * 0.8 + 20 * 0.7) / 30)
    # back to a load "big" carries alone: the mix goes, and the change says so
    now[0] += loop.interval_s
    d = loop.step(np.full(30, 5.0))
    assert not d.changed and d.deferred  # the mix still serves 5 req/s: dropping a member is held once
    now[0] += loop.interval_s
    d = loop.step(np.full(30, 5.0))
    assert d.changed and "mix" not in d.stages["c"] and any(".mix:" in c for c in d.changes)
    assert math.isclose(d.accuracy, 0.8)
