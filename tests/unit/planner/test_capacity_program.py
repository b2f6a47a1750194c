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


def ways(pipe, profiles, lam, n_max, w, s, packed=None):
    """Every (variant, batch, n) per stage at stretch s: (objective part, latency, CPU, memory).
    `packed`: each replica's busy cores per reserved CPU at most this (nodes packed by reservation)."""
    per_stage = []
    for st in pipe.stages:
        out = []
        for v, b in itertools.product(st.variants, BATCHES):
            p = profiles.get((v.name, b))
            for n in range(1, n_max + 1):
                if p is None or p.throughput_rps * n / s < lam:
                    continue
                if packed is not None and lam * (p.cpu_s_per_request or 0.0) > packed * n * p.resources.num_cpus:
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
        busy = [node for node in supply.nodes if node.outside_cores > 0]
        share = sum(node.outside_cores for node in busy) / sum(node.cores for node in busy) if busy else 0.0
        packed = rho - share if len(supply.nodes) > 1 else None  # a node in use's share outside the replicas
        if packed is not None and packed <= 0:
            continue
        per_stage = ways(pipe, profiles, lam, n_max, w, s, packed)  # (objective part, latency, CPU, memory) per stage
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


def test_matches_brute_force_on_several_nodes_packed_by_reservation():
    """On several nodes every replica holds its busy cores per reserved CPU within ρ less the
    busiest node's outside share: Ray fills nodes by reservation, so a full node holds that."""
    bound = 0
    for seed in range(60):
        pipe, profiles, load, n_max, w = random_problem(seed)
        profiles = with_demand(profiles, seed)
        rng = random.Random(seed)
        cores = rng.choice((1, 2, 4))
        supply = ClusterSupply(nodes=tuple(NodeSupply(node_id=f"n{i}", cores=cores, memory_mb=64_000,
                                                      outside_cores=rng.choice((0.0, 0.1 * cores)))
                                           for i in range(rng.choice((2, 3, 8)))), source="test")
        plan = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, supply=supply)
        best = brute_force(pipe, profiles, load, n_max, w, supply)
        assert (best is None) == (not is_feasible(plan)), seed
        if best is None:
            continue
        assert plan.objective["objective"] == pytest.approx(best, abs=1e-6), seed
        assert check_plan(pipe, plan, profiles, max_replicas=n_max) == [], seed
        packed = plan.objective["packed_cores_per_cpu"]
        unpacked = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max,
                            supply=ClusterSupply(nodes=(NodeSupply(node_id="one", cores=supply.cores, memory_mb=supply.memory_mb),),
                                                 source="test"))
        for st in pipe.stages:
            sp = plan.stages[st.name]
            p = profiles[(sp.variant, sp.batch_size)]
            busy = load * p.cpu_s_per_request / sp.replicas
            assert busy <= packed * p.resources.num_cpus * (1 + 1e-9), (seed, st.name)
            if is_feasible(unpacked) and any(
                    load * profiles[(u.variant, u.batch_size)].cpu_s_per_request / u.replicas
                    > packed * profiles[(u.variant, u.batch_size)].resources.num_cpus for u in unpacked.stages.values()):
                bound += 1
    assert bound >= 3  # the bound changed some plans: one node of the same cores would have run them hotter


def test_packed_nodes_need_replicas_their_reservations_can_hold():
    """A 0.5-CPU replica that keeps a core busy: 8 cores on one node serve 10 req/s (1.33 busy
    cores) with 2 replicas; on four 2-core nodes Ray packs four replicas a node, so each replica
    may keep only ρ × 0.5 cores busy, and the plan needs enough of them."""
    from tests.unit.planner.test_optimizer import _profile, _variant
    from ipa_energy.spec import PipelineSpec, StageSpec

    res = Resources(num_cpus=0.5)
    big = _variant("big", "classify", 0.78, res)
    profiles = {("big", 1): _profile("big", 1, res, 140.0, 7.5, 0.5, 0.6).model_copy(
        update={"cpu_s_per_request": 1 / 7.5, "latency_p50_ms": 133.0})}
    pipe = PipelineSpec(name="one", stages=(StageSpec(name="c", variants=(big,)),), sla_ms=5000)
    one = optimize(pipe, profiles, 10, batch_sizes=(1,), max_replicas=16, supply=_supply(cores=8))
    four = ClusterSupply(nodes=tuple(NodeSupply(node_id=f"n{i}", cores=2, memory_mb=16_000) for i in range(4)),
                         source="test")
    packed = optimize(pipe, profiles, 10, batch_sizes=(1,), max_replicas=16, supply=four)
    assert is_feasible(one) and "packed_cores_per_cpu" not in one.objective
    assert is_feasible(packed)
    rho = packed.objective["packed_cores_per_cpu"]
    assert rho == packed.objective["utilisation_cap"]  # no load outside the replicas
    n = packed.stages["c"].replicas
    assert (10 / 7.5) / n <= rho * 0.5 < (10 / 7.5) / (n - 1)  # the fewest replicas that hold it
    assert n > one.stages["c"].replicas
    problems = check_plan(pipe, packed.model_copy(update={"stages": {"c": one.stages["c"]}}), profiles)
    assert any("packed by reservation" in p for p in problems), problems  # too few for packed nodes: refused
    # a fixed count (rim's, a bridge's) is held to it too: two replicas cannot be packed nodes' plan
    fixed = optimize(pipe, profiles, 10, batch_sizes=(1,), max_replicas=16, supply=four, replicas=2)
    assert not is_feasible(fixed)
    held = optimize(pipe, profiles, 10, batch_sizes=(1,), max_replicas=16, supply=four, replicas=n)
    assert is_feasible(held) and check_plan(pipe, held, profiles) == []
    # the nodes in use busy outside the replicas leave each replica less: more of them
    busy = ClusterSupply(nodes=tuple(NodeSupply(node_id=f"n{i}", cores=2, memory_mb=16_000, outside_cores=0.2 if i < 2 else 0.0)
                                     for i in range(4)), source="test")
    assert busy.outside_share == pytest.approx(0.1)  # the two nodes in use: 0.4 of 4 cores
    hotter = optimize(pipe, profiles, 10, batch_sizes=(1,), max_replicas=16, supply=busy)
    assert hotter.objective["packed_cores_per_cpu"] == pytest.approx(hotter.objective["utilisation_cap"] - 0.1)
    assert check_plan(pipe, hotter, profiles) == []


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
