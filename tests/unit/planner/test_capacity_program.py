"""The program with queueing and a cluster's capacity, against brute force over every plan and cap."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from ipa_energy.cluster import ClusterSupply, NodeSupply
from ipa_energy.spec import Resources
from planner.capacity import cs2_from_profile, stretch, wait_p99_ms
from planner.checks import check_plan, is_feasible
from planner.constants import MEMORY_FRACTION, UTILISATION_GRID
from planner.optimizer import optimize
from tests.unit.planner.test_optimizer import BATCHES, random_problem


def _supply(cores: float, memory_mb: float = 64_000) -> ClusterSupply:
    return ClusterSupply(nodes=(NodeSupply(node_id="n", cores=cores, memory_mb=memory_mb),), source="test")


def with_demand(profiles: dict, seed: int) -> dict:
    """The random problem's profiles with CPU per request (≈ busy threads / throughput) and memory."""
    rng = random.Random(seed)
    return {k: p.model_copy(update={"cpu_s_per_request": max(1, int(p.resources.num_cpus)) / p.throughput_rps
                                    * rng.uniform(0.6, 1.2), "memory_mb_per_replica": rng.uniform(200, 900)})
            for k, p in profiles.items()}


def ways(pipe, profiles, lam, n_max, w, s):
    """Every (variant, batch, n) per stage at stretch s: (objective part, latency, CPU, memory)."""
    per_stage = []
    for st in pipe.stages:
        out = []
        for v, b in itertools.product(st.variants, BATCHES):
            p = profiles.get((v.name, b))
            for n in range(1, n_max + 1):
                if p is None or p.throughput_rps * n / s < lam:
                    continue
                cs2 = cs2_from_profile(p.latency_p50_ms, p.latency_p99_ms)
                # the p99 of the sum: the service's mean + the root-sum-square of the parts' p99 excesses
                fill = 1000 * (b - 1) / lam if b > 1 else 0.0
                wait = wait_p99_ms(n, lam, b, p.latency_p50_ms * s, cs2)
                latency = p.latency_p50_ms * s + math.sqrt(((p.latency_p99_ms - p.latency_p50_ms) * s) ** 2
                                                           + fill ** 2 + wait ** 2)
                obj = (w.alpha * math.log(v.accuracy.value) - w.beta * (v.resources.num_cpus + v.resources.num_gpus) * n
                       - w.gamma * (lam * p.energy_per_request_j + p.idle_power_w * n) - w.delta * b)
                out.append((obj, latency, lam * (p.cpu_s_per_request or 0.0), (p.memory_mb_per_replica or 0.0) * n))
        per_stage.append(out)
    return per_stage


def brute_force(pipe, profiles, lam, n_max, w, supply: ClusterSupply, serving_cpu_s: float = 0.0):
    """Best objective over every (variant, batch, replicas) per stage and every utilisation cap; None if none fits."""
    cores = min(node.cores for node in supply.nodes)
    best = None
    for rho in UTILISATION_GRID:
        s = stretch(cores, rho)
        cpu_cap = rho * supply.cores - lam * serving_cpu_s
        per_stage = ways(pipe, profiles, lam, n_max, w, s)  # (objective part, latency, CPU, memory) per stage
        for combo in itertools.product(*per_stage):
            if (sum(c[1] for c in combo) <= pipe.sla_ms and sum(c[2] for c in combo) <= cpu_cap
                    and sum(c[3] for c in combo) <= MEMORY_FRACTION * supply.memory_mb):
                obj = sum(c[0] for c in combo)
                best = obj if best is None else max(best, obj)
    return best


def test_matches_brute_force_with_queueing_and_capacity():
    feasible = infeasible = 0
    for seed in range(80):
        pipe, profiles, load, n_max, w = random_problem(seed)
        profiles = with_demand(profiles, seed)
        supply = _supply(cores=random.Random(seed).choice((1, 2, 4, 8)))
        plan = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, supply=supply,
                        serving_cpu_s=0.01)
        best = brute_force(pipe, profiles, load, n_max, w, supply, serving_cpu_s=0.01)
        if best is None:
            infeasible += 1
            assert not is_feasible(plan), seed
        else:
            feasible += 1
            assert is_feasible(plan), seed
            assert plan.objective["objective"] == pytest.approx(best, abs=1e-6), seed
            assert check_plan(pipe, plan, profiles, max_replicas=n_max) == [], seed
            assert plan.objective["node_utilisation"] <= plan.objective["utilisation_cap"] + 1e-9
        if feasible >= 20 and infeasible >= 5:
            break
    assert feasible >= 12 and infeasible >= 3, (feasible, infeasible)


def test_queueing_alone_matches_brute_force_on_an_unlimited_cluster():
    for seed in range(30):
        pipe, profiles, load, n_max, w = random_problem(seed)
        big = _supply(cores=1000, memory_mb=1e12)  # capacity never binds: only the wait (the stretch is ≈ 1)
        plan = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, supply=big)
        best = brute_force(pipe, profiles, load, n_max, w, big)
        assert (best is None) == (not is_feasible(plan)), seed
        if best is not None:
            assert plan.objective["objective"] == pytest.approx(best, abs=1e-6), seed


def test_cpu_capacity_refuses_what_the_profiles_alone_would_promise():
    """Four replicas of a 7.5 req/s, one-thread variant 'serve' 30 req/s on paper; on 2 cores they cannot."""
    from tests.unit.planner.test_optimizer import _profile, _variant
    from ipa_energy.spec import PipelineSpec, StageSpec

    res = Resources(num_cpus=0.5)
    big = _variant("big", "classify", 0.78, res)
    profiles = {("big", 1): _profile("big", 1, res, 140.0, 7.5, 0.5, 0.6).model_copy(
        update={"cpu_s_per_request": 1 / 7.5, "latency_p50_ms": 133.0})}
    pipe = PipelineSpec(name="one", stages=(StageSpec(name="c", variants=(big,)),), sla_ms=5000)
    ipa = optimize(pipe, profiles, 30, batch_sizes=(1,), max_replicas=4, queueing=False)
    assert is_feasible(ipa) and ipa.stages["c"].replicas == 4  # capacity-blind: 4 × 7.5 = 30
    true = optimize(pipe, profiles, 30, batch_sizes=(1,), max_replicas=4, supply=_supply(cores=2))
    assert not is_feasible(true)  # 30 × 0.133 = 4 cores of work on 2 cores
    served = optimize(pipe, profiles, 10, batch_sizes=(1,), max_replicas=4, supply=_supply(cores=2))
    assert is_feasible(served) and served.objective["cpu_cores"] == pytest.approx(10 / 7.5)
    assert served.objective["node_utilisation"] <= served.objective["utilisation_cap"]
    # the wait: two replicas at 10 req/s would meet a loose SLA, a tight one needs a third
    tight = optimize(pipe, profiles, 10, sla_ms=260, batch_sizes=(1,), max_replicas=4, supply=_supply(cores=8))
    loose = optimize(pipe, profiles, 10, sla_ms=5000, batch_sizes=(1,), max_replicas=4, supply=_supply(cores=8))
    assert tight.stages["c"].replicas > loose.stages["c"].replicas >= 2
