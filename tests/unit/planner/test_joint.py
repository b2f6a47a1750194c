"""The joint plan: K pipelines in one program on a shared cluster."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from ipa_energy.cluster import ClusterSupply, NodeSupply
from planner.capacity import stretch
from planner.checks import check_plan, is_feasible
from planner.constants import MEMORY_FRACTION, UTILISATION_GRID
from planner.joint import optimize_joint
from planner.optimizer import optimize
from tests.unit.planner.test_capacity_program import ways, with_demand
from tests.unit.planner.test_optimizer import BATCHES, random_problem


def _supply(cores: float, memory_mb: float = 64_000, nodes: int = 1) -> ClusterSupply:
    return ClusterSupply(nodes=tuple(NodeSupply(node_id=f"n{i}", cores=cores, memory_mb=memory_mb / nodes)
                                     for i in range(nodes)), source="test")


def _same(a, b) -> bool:
    strip = {"solve_time_s", "created_at"}
    return a.model_dump(exclude=strip) == b.model_dump(exclude=strip)


def _problem(seed: int, name: str):
    pipe, profiles, load, n_max, w = random_problem(seed)
    profiles = with_demand(profiles, seed)
    return pipe.model_copy(update={"name": name}), profiles, load, n_max, w


def brute_force_joint(problems, supply: ClusterSupply, serving_cpu_s: float):
    """Best Σ objective over every plan of two pipelines, one cap for both; None if none fits."""
    cores = min(node.cores for node in supply.nodes)
    total = sum(p[2] for p in problems)
    best = None
    for rho in UTILISATION_GRID:
        s = stretch(cores, rho)
        cpu_cap = rho * supply.cores - total * serving_cpu_s
        plans = []  # per pipeline: (objective, CPU, memory) of each plan within its SLA
        for pipe, profiles, lam, n_max, w in problems:
            ok = []
            for combo in itertools.product(*ways(pipe, profiles, lam, n_max, w, s)):
                if sum(c[1] for c in combo) <= pipe.sla_ms:
                    ok.append((sum(c[0] for c in combo), sum(c[2] for c in combo), sum(c[3] for c in combo)))
            plans.append(ok)
        first, second = plans  # two pipelines: for each plan of the first, the best of the second that fits
        if not first or not second:
            continue
        obj2, cpu2, mem2 = (np.array(col) for col in zip(*second))
        for obj, cpu, mem in first:
            fits = (cpu2 <= cpu_cap - cpu) & (mem2 <= MEMORY_FRACTION * supply.memory_mb - mem)
            if fits.any():
                total_obj = obj + float(obj2[fits].max())
                best = total_obj if best is None else max(best, total_obj)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_one_pipeline_is_optimize(seed):
    pipe, profiles, load, n_max, w = _problem(seed, "one")
    supply = _supply(cores=random.Random(seed).choice((1, 2, 4, 8)))
    for sup in (supply, None):
        alone = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, supply=sup,
                         serving_cpu_s=0.01)
        [joint] = optimize_joint([pipe], [profiles], [load], weights=w, batch_sizes=BATCHES, max_replicas=n_max,
                                 supply=sup, serving_cpu_s=0.01)
        assert _same(joint, alone), seed


def test_one_pipeline_with_a_running_plan_is_optimize():
    pipe, profiles, load, n_max, w = _problem(3, "one")
    supply = _supply(cores=8)
    first = optimize(pipe, profiles, load, weights=w, batch_sizes=BATCHES, max_replicas=n_max, supply=supply)
    alone = optimize(pipe, profiles, load * 1.3, weights=w, batch_sizes=BATCHES, max_replicas=n_max, supply=supply,
                     current=first)
    [joint] = optimize_joint([pipe], profiles, [load * 1.3], weights=w, batch_sizes=BATCHES, max_replicas=n_max,
                             supply=supply, current=[first])
    assert _same(joint, alone)


def test_two_pipelines_match_brute_force_on_a_tight_cluster():
    feasible = infeasible = 0
    for seed in range(200):
        rng = random.Random(1000 + seed)
        a, b = _problem(seed, "a"), _problem(500 + seed, "b")
        a, b = (a[0], a[1], a[2], min(a[3], 3), a[4]), (b[0], b[1], b[2], min(b[3], 3), b[4])
        supply = _supply(cores=rng.choice((2, 4, 8)), memory_mb=rng.choice((4000, 8000, 64_000)))
        if not all(is_feasible(optimize(p, prof, lam, weights=w, batch_sizes=BATCHES, max_replicas=n, supply=supply,
                                        serving_cpu_s=0.01)) for p, prof, lam, n, w in (a, b)):
            continue  # a pair where each fits alone: whether both fit is the question
        plans = optimize_joint([a[0], b[0]], [a[1], b[1]], [a[2], b[2]], weights=[a[4], b[4]], batch_sizes=BATCHES,
                               max_replicas=[a[3], b[3]], supply=supply, serving_cpu_s=0.01)
        best = brute_force_joint([a, b], supply, 0.01)
        if best is None:
            infeasible += 1
            assert not all(is_feasible(p) for p in plans), seed
        else:
            feasible += 1
            assert all(is_feasible(p) for p in plans), seed
            assert sum(p.objective["objective"] for p in plans) == pytest.approx(best, abs=1e-6), seed
            for (pipe, profiles, _, n_max, _), plan in zip((a, b), plans):
                assert check_plan(pipe, plan, profiles, max_replicas=n_max) == [], seed
            # the shared cap holds for both together, memory too
            cap = plans[0].objective["utilisation_cap"]
            used = sum(p.objective["cpu_cores"] + p.predicted_load_rps * 0.01 for p in plans)
            assert used <= cap * supply.cores + 1e-9
            assert plans[0].objective["node_utilisation"] == pytest.approx(plans[1].objective["node_utilisation"])
            mem = sum((prof[(sp.variant, sp.batch_size)].memory_mb_per_replica or 0) * sp.replicas
                      for (_, prof, *_), plan in zip((a, b), plans) for sp in plan.stages.values())
            assert mem <= MEMORY_FRACTION * supply.memory_mb + 1e-6
        if feasible >= 12 and infeasible >= 4:
            break
    assert feasible >= 8 and infeasible >= 2, (feasible, infeasible)


def test_joint_is_not_two_plans_alone():
    """Two pipelines that each fit the cluster alone but not both at their own optimum: the joint
    plan fits, at a total no better than the two optima alone."""
    found = 0
    for seed in range(200):
        a, b = _problem(seed, "a"), _problem(300 + seed, "b")
        supply = _supply(cores=4, memory_mb=64_000)
        alone = [optimize(p, prof, lam, weights=w, batch_sizes=BATCHES, max_replicas=n, supply=supply, serving_cpu_s=0.01)
                 for p, prof, lam, n, w in (a, b)]
        if not all(is_feasible(p) for p in alone):
            continue
        used = sum(p.objective["cpu_cores"] + p.predicted_load_rps * 0.01 for p in alone)
        if used <= 0.5 * supply.cores:
            continue  # both fit together at the lowest cap: nothing shared binds
        joint = optimize_joint([a[0], b[0]], [a[1], b[1]], [a[2], b[2]], weights=[a[4], b[4]], batch_sizes=BATCHES,
                               max_replicas=[a[3], b[3]], supply=supply, serving_cpu_s=0.01)
        if all(is_feasible(p) for p in joint):
            total = sum(p.objective["cpu_cores"] + p.predicted_load_rps * 0.01 for p in joint)
            assert total <= joint[0].objective["utilisation_cap"] * supply.cores + 1e-9
            assert sum(p.objective["objective"] for p in joint) <= sum(p.objective["objective"] for p in alone) + 1e-7
            found += 1
            if found >= 3:
                break
    assert found >= 3


def test_infeasible_joint_load_falls_back_in_order_without_raising():
    a, b = _problem(4, "a"), _problem(5, "b")
    supply = _supply(cores=1, memory_mb=64_000)
    plans = optimize_joint([a[0], b[0]], [a[1], b[1]], [a[2] * 50, b[2] * 50], weights=[a[4], b[4]],
                           batch_sizes=BATCHES, max_replicas=4, supply=supply, serving_cpu_s=0.01)
    assert [p.pipeline for p in plans] == ["a", "b"]
    assert not all(is_feasible(p) for p in plans)
    for (pipe, profiles, *_), plan in zip((a, b), plans):
        assert set(plan.stages) == {st.name for st in pipe.stages}


def test_rejects_what_it_cannot_join():
    a = _problem(1, "a")
    with pytest.raises(ValueError):
        optimize_joint([a[0]], [a[1]], [a[2]], policy="static")
    with pytest.raises(ValueError):
        optimize_joint([a[0], a[0]], [a[1]] * 2, [a[2]])



def test_one_ipa_energy_pipeline_against_ipas_plan_is_optimize():
    """The default weights (an elasticity and an accuracy budget, set against IPA's plan): the
    joint plan of one pipeline plans it as optimize does."""
    from planner.terms import Weights

    against = 0
    for seed in range(10):
        pipe, profiles, load, n_max, _ = _problem(seed, "one")
        supply = _supply(cores=random.Random(seed).choice((1, 2, 4, 8)))
        for sup in (supply, None):
            alone = optimize(pipe, profiles, load, weights=Weights(), batch_sizes=BATCHES, max_replicas=n_max,
                             supply=sup, serving_cpu_s=0.01)
            [joint] = optimize_joint([pipe], [profiles], [load], weights=Weights(), batch_sizes=BATCHES,
                                     max_replicas=n_max, supply=sup, serving_cpu_s=0.01)
            assert _same(joint, alone), seed
            against += "gamma_per_w" in joint.objective and "accuracy_floor" in joint.objective
    assert against >= 3
