"""planner.optimizer under IPA's latency model (p99 + batch fill, no queueing wait, no cluster):
the program against brute force, best effort, tie-break, policies. The full model (queueing,
capacity): test_capacity_program.py."""

from __future__ import annotations

import itertools
import math
import random
from datetime import datetime, timezone

import pytest

from ipa_energy.spec import Accuracy, PipelineSpec, Plan, Profile, Resources, StagePlan, StageSpec, VariantSpec
from planner.checks import check_plan, is_feasible
import functools

from planner.optimizer import compare_policies
from planner.optimizer import optimize as _optimize
from planner.terms import Weights
from planner.profiles import profiles_from_store
from planner.tables import comparison_table

optimize = functools.partial(_optimize, queueing=False)  # IPA's program: what these tests check
BATCHES = (1, 2, 4)
NOW = datetime(2026, 11, 28, tzinfo=timezone.utc)


def _variant(name: str, task: str, acc: float, res: Resources) -> VariantSpec:
    return VariantSpec(name=name, task=task, family="t", architecture="t", resources=res, max_batch_size=64,
                       accuracy=Accuracy(value=acc, metric="t", source="t"))


def _profile(name: str, b: int, res: Resources, lat: float, tput: float, e: float, idle: float) -> Profile:
    return Profile(variant=name, batch_size=b, hardware="t", resources=res, latency_p50_ms=lat * 0.9,
                   latency_p99_ms=lat, throughput_rps=tput, energy_per_request_j=e, idle_power_w=idle,
                   energy_method="tdp-estimate", window_s=5.0, weights="random", measured_at=NOW)


def random_problem(seed: int):
    rng = random.Random(seed)
    n_stages, n_variants = rng.choice((2, 3)), rng.choice((2, 3))
    stages, profiles = [], {}
    for s in range(n_stages):
        task = "detect" if s == 0 else "classify-crops"
        variants = []
        for m in range(n_variants):
            name = f"s{s}v{m}"
            res = rng.choice((Resources(num_cpus=0.5), Resources(num_cpus=1), Resources(num_cpus=2),
                              Resources(num_cpus=1, num_gpus=0.25)))
            variants.append(_variant(name, task, rng.uniform(0.2, 0.95), res))
            l1 = rng.uniform(20, 200)
            for b in BATCHES:
                lat = l1 * (1 + rng.uniform(0.3, 0.9) * (b - 1))
                profiles[(name, b)] = _profile(name, b, res, lat, 1000 * b / lat * rng.uniform(0.8, 1.0),
                                               rng.uniform(0.05, 1.5), rng.uniform(0.2, 3.0))
        stages.append(StageSpec(name=f"st{s}", variants=tuple(variants)))
    pipe = PipelineSpec(name="rnd", stages=tuple(stages), sla_ms=rng.uniform(150, 900))
    load = rng.uniform(1, 40)
    n_max = rng.randint(1, 4)
    weights = rng.choice((per_watt(), per_watt(alpha=2, beta=0.05, gamma=0.02, delta=0.001),
                          per_watt(alpha=1, beta=0.0, gamma=0.1, delta=0.0)))
    return pipe, profiles, load, n_max, weights


def per_watt(**kw) -> Weights:
    """Weights with γ per watt as given: no elasticity, no accuracy budget (the program alone,
    which brute force evaluates)."""
    return Weights(gamma_relative=None, accuracy_budget=None, **kw)


def stage_options(pipe, profiles, allowed=None):
    out = []
    for st in pipe.stages:
        out.append([(v, b, profiles[(v.name, b)]) for v in st.variants for b in BATCHES
                    if (v.name, b) in profiles and (allowed is None or v.name in allowed[st.name])])
    return out


def brute_force(pipe, profiles, lam, sla, n_max, w: Weights, *, allowed=None, fixed=None, min_log_acc=None):
    """(best objective or None, max served throughput) by enumerating every plan (with a log
    pipeline accuracy of at least `min_log_acc`, if given)."""
    per_stage = []
    for i, opts in enumerate(stage_options(pipe, profiles, allowed)):
        ns = range(1, n_max + 1) if fixed is None else (fixed[i],)
        per_stage.append([(v, b, p, n) for v, b, p in opts for n in ns])
    best, served_lat, served_any = None, None, 0.0
    for combo in itertools.product(*per_stage):
        lat = sum(p.latency_p99_ms + (1000 * (b - 1) / lam) for v, b, p, n in combo)
        cap = min(p.throughput_rps * n for v, b, p, n in combo)
        served = min(cap, lam)
        served_any = max(served_any, served)
        if lat <= sla:
            served_lat = served if served_lat is None else max(served_lat, served)
        if lat > sla or cap < lam:
            continue
        log_acc = sum(math.log(v.accuracy.value) for v, b, p, n in combo)
        if min_log_acc is not None and log_acc < min_log_acc:
            continue
        cost = sum((v.resources.num_cpus + v.resources.num_gpus) * n for v, b, p, n in combo)
        power = sum(lam * p.energy_per_request_j + p.idle_power_w * n for v, b, p, n in combo)
        obj = w.alpha * log_acc - w.beta * cost - w.gamma * power - w.delta * sum(b for v, b, p, n in combo)
        best = obj if best is None else max(best, obj)
    return best, (served_lat if served_lat is not None else served_any)


def test_matches_brute_force_on_random_problems():
    feasible = infeasible = 0
    for seed in range(60):
        pipe, profiles, load, n_max, w = random_problem(seed)
        plan = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max)
        best, served = brute_force(pipe, profiles, load, pipe.sla_ms, n_max, w)
        if best is None:
            infeasible += 1
            assert not is_feasible(plan), seed
            assert min(plan.objective["capacity_rps"], load) == pytest.approx(served, abs=1e-6), seed
        else:
            feasible += 1
            assert is_feasible(plan), seed
            assert plan.objective["objective"] == pytest.approx(best, abs=1e-6), seed
            assert check_plan(pipe, plan, profiles, max_replicas=n_max) == [], seed
        if feasible >= 25 and infeasible >= 5:
            break
    assert feasible >= 20 and infeasible >= 1, (feasible, infeasible)


def test_matches_brute_force_under_an_accuracy_floor():
    """ipa-energy with an accuracy budget: the best plan within the floor it sets against IPA's,
    on random pipelines of one to three stages (the floor prunes candidates per stage)."""
    bound = 0
    for seed in range(60):
        pipe, profiles, load, n_max, w = random_problem(seed)
        w = w.model_copy(update={"gamma": max(w.gamma, 0.05), "accuracy_budget": 0.02})
        plan = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, policy="ipa-energy")
        if not is_feasible(plan) or "accuracy_floor" not in plan.objective:
            continue
        floor = plan.objective["accuracy_floor"]
        best, _ = brute_force(pipe, profiles, load, pipe.sla_ms, n_max, w, min_log_acc=math.log(floor))
        assert plan.objective["objective"] == pytest.approx(best, abs=1e-6), seed
        assert pipe.accuracy(plan) >= floor - 1e-9, seed
        free, _ = brute_force(pipe, profiles, load, pipe.sla_ms, n_max, w)
        bound += free > best + 1e-6  # the floor decided
    assert bound >= 3, bound


def test_infeasible_load_gives_flagged_max_throughput_plan():
    pipe, profiles, _, _, w = random_problem(3)
    load = 10_000.0  # far beyond 4 replicas of anything
    plan = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=4)
    assert not is_feasible(plan) and plan.objective["feasible"] == 0.0
    _, served = brute_force(pipe, profiles, load, pipe.sla_ms, 4, w)
    assert plan.objective["capacity_rps"] == pytest.approx(served, abs=1e-6)
    assert any("capacity" in v for v in check_plan(pipe, plan, profiles))
    # an SLA nothing can meet: still a plan, no exception
    plan = optimize(pipe, profiles, 5.0, sla_ms=1.0, batch_sizes=BATCHES, max_replicas=4)
    assert not is_feasible(plan) and set(plan.stages) == {s.name for s in pipe.stages}


def _twin_pipeline():
    res = Resources(num_cpus=1)
    a, b = _variant("twin-a", "classify", 0.8, res), _variant("twin-b", "classify", 0.8, res)
    profiles = {(v.name, bs): _profile(v.name, bs, res, 50.0 * bs ** 0.7, 1000 * bs / (50.0 * bs ** 0.7), 0.3, 1.0)
                for v in (a, b) for bs in BATCHES}
    return PipelineSpec(name="twins", stages=(StageSpec(name="c", variants=(a, b)),), sla_ms=500), profiles


def test_fewest_changes_keeps_the_current_twin():
    pipe, profiles = _twin_pipeline()
    base = optimize(pipe, profiles, 30, batch_sizes=BATCHES, max_replicas=4)
    for keep in ("twin-a", "twin-b"):
        sp = base.stages["c"]
        current = Plan(pipeline="twins", stages={"c": StagePlan(variant=keep, batch_size=sp.batch_size,
                                                                 replicas=sp.replicas)})
        plan = optimize(pipe, profiles, 30, batch_sizes=BATCHES, max_replicas=4, current=current)
        assert plan.stages["c"].variant == keep
        assert (plan.stages["c"].batch_size, plan.stages["c"].replicas) == (sp.batch_size, sp.replicas)
        assert plan.objective["objective"] == pytest.approx(base.objective["objective"], abs=1e-9)
    # a worse current plan never lowers the objective
    bad = Plan(pipeline="twins", stages={"c": StagePlan(variant="twin-b", batch_size=1, replicas=4)})
    plan = optimize(pipe, profiles, 30, batch_sizes=BATCHES, max_replicas=4, current=bad)
    assert plan.objective["objective"] == pytest.approx(base.objective["objective"], abs=1e-9)
    assert plan.stages["c"].variant == "twin-b"


def test_policies_respect_their_restrictions():
    checked = 0
    for seed in range(40):
        pipe, profiles, load, n_max, w = random_problem(seed)
        low = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, policy="fa2-low")
        high = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, policy="fa2-high")
        rim = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, policy="rim")
        rim2 = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, policy="rim",
                        replicas={s.name: 2 for s in pipe.stages})
        for st in pipe.stages:
            assert low.stages[st.name].variant == min(st.variants, key=lambda v: v.accuracy.value).name
            assert high.stages[st.name].variant == max(st.variants, key=lambda v: v.accuracy.value).name
            assert rim.stages[st.name].replicas == 1 and rim2.stages[st.name].replicas == 2
        # fa2 and rim are the same program restricted (γ = 0): compare with brute force
        w0 = w.model_copy(update={"gamma": 0.0})
        allowed = {st.name: {high.stages[st.name].variant} for st in pipe.stages}
        best, _ = brute_force(pipe, profiles, load, pipe.sla_ms, n_max, w0, allowed=allowed)
        if best is not None:
            assert high.objective["objective"] == pytest.approx(best, abs=1e-6)
            checked += 1
        best, _ = brute_force(pipe, profiles, load, pipe.sla_ms, 2, w0, fixed=[2] * len(pipe.stages))
        if best is not None:
            assert rim2.objective["objective"] == pytest.approx(best, abs=1e-6)
            assert check_plan(pipe, rim2, profiles) == []
            checked += 1
        if checked >= 8:
            break
    assert checked >= 4
    static = Plan(pipeline=pipe.name, stages={s.name: StagePlan(variant=s.variants[0].name, batch_size=2, replicas=3)
                                              for s in pipe.stages})
    out = optimize(pipe, profiles, load, batch_sizes=BATCHES, policy="static", static_plan=static)
    assert out.stages == static.stages and out.policy == "static" and out.predicted_power_w is not None


def test_mini_video_energy_policy_uses_less_power():
    from workloads.catalog import pipelines
    from workloads.profile_store import PROFILES_DIR, ProfileStore

    pipe = pipelines("mini")["video"]
    profiles = profiles_from_store(ProfileStore(PROFILES_DIR), "cpu-amd-epyc-2c", pipe)
    assert profiles, "shipped mini profiles missing"
    plans = compare_policies(pipe, profiles, (2, 5, 10), ("ipa", "ipa-energy"))
    for ipa, ours in zip(plans[::2], plans[1::2]):
        assert is_feasible(ipa) and is_feasible(ours)
        assert check_plan(pipe, ipa, profiles) == [] and check_plan(pipe, ours, profiles) == []
        assert ours.predicted_power_w <= ipa.predicted_power_w + 1e-9
    table = comparison_table(plans).splitlines()
    assert len(table) == 2 + len(plans) and all(" yes " in row for row in table[2:])  # header, rule, a row per plan


def test_cbc_and_highs_agree():
    for seed in range(6):
        pipe, profiles, load, n_max, w = random_problem(seed)
        a = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, solver="cbc")
        b = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, solver="highs")
        assert a.objective["feasible"] == b.objective["feasible"]
        assert a.objective["objective"] == pytest.approx(b.objective["objective"], abs=1e-6)


def test_an_accuracy_budget_bounds_what_ipa_energy_gives_up_against_ipa():
    pipeline, profiles, kw = _classify_on_two_cores()
    for load in (3.0, 7.0, 11.0):
        ipa = _optimize(pipeline, profiles, load, policy="ipa", **kw)
        free = _optimize(pipeline, profiles, load, policy="ipa-energy", weights=per_watt(), **kw)
        bounded = _optimize(pipeline, profiles, load, policy="ipa-energy",
                            weights=Weights(gamma_relative=None, accuracy_budget=0.01), **kw)
        assert is_feasible(bounded) and is_feasible(ipa)
        assert pipeline.accuracy(bounded) >= pipeline.accuracy(ipa) - 0.01 - 1e-12
        assert bounded.objective["accuracy_floor"] == pytest.approx(pipeline.accuracy(ipa) - 0.01)
        # within the budget it still saves what it can, and never more than without one
        assert bounded.predicted_power_w <= ipa.predicted_power_w + 1e-9
        assert bounded.predicted_power_w >= free.predicted_power_w - 1e-9
        assert "accuracy_floor" not in free.objective
    # at 11 req/s on 2 cores energy alone picks a variant more than a point below IPA's
    assert pipeline.accuracy(free) < pipeline.accuracy(ipa) - 0.01


def _classify_on_two_cores():
    from ipa_energy.cluster import ClusterSupply, NodeSupply
    from planner.constants import SERVING_CPU_S
    from workloads import catalog
    from workloads.profile_store import PROFILES_DIR, ProfileStore

    pipeline = catalog.pipeline("classify")
    profiles = profiles_from_store(ProfileStore(PROFILES_DIR), "cpu-amd-epyc-2c", pipeline)
    supply = ClusterSupply(nodes=(NodeSupply(node_id="n", cores=2, memory_mb=20_000),), source="test")
    return pipeline, profiles, dict(max_replicas=4, supply=supply, serving_cpu_s=SERVING_CPU_S)


def _stages(plan):
    return {s: (sp.variant, sp.batch_size, sp.replicas) for s, sp in plan.stages.items()}


def test_gamma_relative_is_a_weight_per_watt_set_against_ipas_plan_at_the_same_load():
    pipeline, profiles, kw = _classify_on_two_cores()
    for load in (2.0, 7.0, 11.0):
        ipa = _optimize(pipeline, profiles, load, policy="ipa", **kw)
        relative = _optimize(pipeline, profiles, load, policy="ipa-energy",
                             weights=Weights(gamma_relative=0.1, accuracy_budget=None), **kw)
        gamma = 0.1 / ipa.predicted_power_w
        assert relative.objective["gamma_per_w"] == pytest.approx(gamma)
        per_w = _optimize(pipeline, profiles, load, policy="ipa-energy", weights=per_watt(gamma=gamma), **kw)
        assert _stages(relative) == _stages(per_w)
        assert relative.objective["objective"] == pytest.approx(per_w.objective["objective"])


def test_gamma_relative_trades_accuracy_for_the_same_share_of_power_at_any_power_scale():
    """Profiles whose watts are all 10× (another machine, a bigger model family) make the same
    plans under an elasticity; a weight per watt then buys a tenth of the accuracy it did."""
    pipeline, profiles, kw = _classify_on_two_cores()
    hot = {k: p.model_copy(update={"energy_per_request_j": 10 * p.energy_per_request_j,
                                   "idle_power_w": 10 * p.idle_power_w}) for k, p in profiles.items()}
    differs = False
    for load in (2.0, 3.0, 5.0, 7.0, 9.0):
        for w in (Weights(), Weights(accuracy_budget=None)):
            a = _optimize(pipeline, profiles, load, policy="ipa-energy", weights=w, **kw)
            b = _optimize(pipeline, hot, load, policy="ipa-energy", weights=w, **kw)
            assert _stages(a) == _stages(b), (load, w)
        a = _optimize(pipeline, profiles, load, policy="ipa-energy", weights=per_watt(), **kw)
        b = _optimize(pipeline, hot, load, policy="ipa-energy", weights=per_watt(), **kw)
        differs |= _stages(a) != _stages(b)
    assert differs


def test_the_default_ipa_energy_stays_within_a_point_of_ipa_and_saves_at_low_load():
    """The default weights: an elasticity of 0.1 and a one-point budget. At 3 req/s a weight per
    watt (0.01) keeps IPA's variants (it may batch more); the elasticity trades under a point of
    accuracy for a fifth of the power."""
    pipeline, profiles, kw = _classify_on_two_cores()
    for load in (1.0, 2.0, 3.0, 5.0, 7.0, 9.0, 11.0, 14.0):
        ipa = _optimize(pipeline, profiles, load, policy="ipa", **kw)
        energy = _optimize(pipeline, profiles, load, policy="ipa-energy", **kw)
        assert is_feasible(energy)
        assert pipeline.accuracy(energy) >= pipeline.accuracy(ipa) - 0.01 - 1e-12, load
        assert energy.predicted_power_w <= ipa.predicted_power_w + 1e-9, load
    ipa = _optimize(pipeline, profiles, 3.0, policy="ipa", **kw)
    energy = _optimize(pipeline, profiles, 3.0, policy="ipa-energy", **kw)
    per_w = _optimize(pipeline, profiles, 3.0, policy="ipa-energy", weights=per_watt(), **kw)
    assert pipeline.accuracy(per_w) == pipeline.accuracy(ipa)
    assert pipeline.accuracy(energy) < pipeline.accuracy(ipa)
    assert energy.predicted_power_w < 0.85 * ipa.predicted_power_w
