"""Scale mode (sim.fluid, sim.plancache): per-second flows checked against hand arithmetic,
counts conserved, changes in simulated time, and the grid optimizer against the program."""

import math

import numpy as np
import pytest

from experiments.summary import percentile
from planner.optimizer import optimize
from sim.cluster import HostCosts, NodeType, SimCluster
from sim.fluid import FluidEngine
from sim.plancache import GridOptimizer
from tests.unit.sim.test_engine import PIPELINE, PROFILES, cluster, plan


def fluid(counts, p=None, c=None, **kw):
    e = FluidEngine(PIPELINE, PROFILES, c or cluster(), p or plan(), np.asarray(counts), **kw)
    e.method = "simulated (tdp-estimate)"
    return e


def totals(e):
    sent = sum(r.count for r in e.rows)
    answered = sum(r.count for r in e.rows if r.status == 200)
    met = sum(r.count for r in e.rows if r.status == 200 and r.latency_ms <= PIPELINE.sla_ms)
    shed = sum(r.count for r in e.rows if r.shed)
    return sent, answered, met, shed


def test_light_load_is_served_at_its_profiled_time():
    # one replica of `fast` (100 ms at batch 1, no variance): 3 req/s is 30 % of its 10 req/s
    e = fluid([3] * 20)
    e.run_until(25)
    e.close(5)
    sent, answered, met, shed = totals(e)
    assert (sent, answered, met, shed) == (60, 60, 60, 0)
    p50 = percentile([r.latency_ms for r in e.rows], 50, [r.count for r in e.rows])
    assert 100 <= p50 < 100 * 1.5  # the service, plus a short wait for the busy replica
    assert all(r.variants == {"s": "fast"} and r.energy_j == pytest.approx(0.5) for r in e.rows)


def test_overload_builds_a_backlog_then_sheds_at_the_sla():
    # 20 req/s on 10 req/s of capacity: the backlog grows until the shedder's rule
    # (serve_app.shedding: refuse when the backlog ahead takes longer than the 1 s SLA to drain)
    # holds it at what the replica serves in the SLA: 10
    e = fluid([20] * 30)
    e.run_until(1)
    assert e.stages["s"][0].backlog == pytest.approx(10.0)
    e.run_until(5)
    assert e.stages["s"][0].backlog == pytest.approx(10.0)
    e.run_until(60)
    e.close(30)
    sent, answered, met, shed = totals(e)
    assert sent == 600 and answered + shed == sent
    # answered: 30 s × 10 req/s served, and the backlog the drain serves
    assert answered == 30 * 10 + 10 and shed == 600 - answered
    answered_rows = [r for r in e.rows if r.status == 200]
    p50 = percentile([r.latency_ms for r in answered_rows], 50, [r.count for r in answered_rows])
    assert p50 <= PIPELINE.sla_ms + 100 + 1e-6  # the backlog ahead drains in the SLA; then the service


def test_without_the_shedder_serve_bounds_the_queue_and_the_rest_is_unanswered():
    e = fluid([20] * 30, shed=False)
    e.run_until(35)  # the queue is held at 64 batches per replica (Serve's max_queued_requests)
    assert e.stages["s"][0].backlog == pytest.approx(64 - 5 * 10)
    e.close(5)
    sent, answered, met, shed = totals(e)
    unanswered = sum(r.count for r in e.rows if r.status == 0)
    assert sent == 600 and answered + unanswered + shed == 600
    assert unanswered == 14 and shed == 600 - 35 * 10 - 14


def test_a_grow_waits_for_the_cold_start_then_serves():
    host = HostCosts(serving_cpu_s=0.0, overhead_ms=0.0, reconfigure_s=0.0, worker_start_core_s=1.0, switch_core_s=0.5)
    e = fluid([15] * 40, c=cluster(cores=4.0, host=host))
    e.run_until(5)
    change = e.begin(plan(replicas=2))
    assert change.starting == 1 and not e.converged(change)
    assert change.ready_at == pytest.approx(5 + 1.0 + 4.0)  # worker start + the profiled cold start
    assert e.run_until(30, until=lambda: e.converged(change))
    assert e.now == pytest.approx(10)
    e.finish(change)
    assert e.replica_counts() == {"p.s.0": 2}
    e.run_until(20)
    assert e.stages["s"][0].backlog == pytest.approx(0.0, abs=1e-6)  # 20 req/s of capacity drains it


def test_a_plan_that_does_not_fit_never_converges():
    e = fluid([1] * 10, c=cluster(cores=1.0))  # 1 core holds 2 replicas of 0.5 CPU
    change = e.begin(plan(replicas=3))
    assert not change.fits
    assert not e.run_until(10, until=lambda: e.converged(change))
    e.abandon(change)
    assert e.replica_counts() == {"p.s.0": 1}


def test_nodes_follow_the_replicas_and_are_released_after_the_idle_timeout():
    many = SimCluster(hardware="test", node_types=(NodeType(name="n", count=10, min_workers=1, cores=1.0, memory_mb=4096.0),),
                      host=HostCosts(serving_cpu_s=0.0, overhead_ms=0.0, reconfigure_s=0.0, worker_start_core_s=0.0),
                      idle_timeout_s=20.0)
    e = fluid([1] * 100, p=plan(replicas=6), c=many)
    assert e.active_nodes() == 3  # 6 × 0.5 CPU on 1-core nodes
    e.run_until(10)
    change = e.begin(plan(replicas=2))
    e.run_until(11, until=lambda: e.converged(change))
    e.finish(change)
    e.run_until(25)
    assert e.active_nodes() == 3  # emptied at 10 s: kept for the 20 s idle timeout
    e.run_until(40)
    assert e.active_nodes() == 1


def test_energy_counts_idle_power_and_each_request():
    e = fluid([3] * 10)
    e.run_until(10)
    (g,) = e.groups
    idle, other, loadgen, consumers = e.energy_since(g)
    assert idle == pytest.approx(10 * g.idle_w)
    assert consumers == {"p.s.0": pytest.approx(30 * 0.5)}  # 30 requests × 0.5 J at batch 1


def test_contention_stretches_service_when_replicas_outnumber_cores():
    e = fluid([0] * 5, p=plan(replicas=4), c=cluster(cores=2.0))
    for m in e.stages["s"]:
        m.util, m.cores = 1.0, 1.0  # four busy single-threaded replicas on two cores
    assert e._contention(1) == pytest.approx(2.0)
    for m in e.stages["s"]:
        m.util = 0.0
    assert e._contention(1) == pytest.approx(1.0)


def test_rows_conserve_counts_in_buckets():
    counts = np.random.default_rng(1).poisson(6, 300)
    e = fluid(counts, p=plan(replicas=1), aggregate_s=60)
    e.run_until(330)
    e.close(30)
    assert sum(r.count for r in e.rows) == counts.sum()
    assert len({r.sent_s for r in e.rows}) == 5  # one set of rows per 60 s bucket


def test_grid_optimizer_is_the_program_at_rounded_inputs():
    grid = GridOptimizer(PROFILES, step=0.02)
    a = grid(PIPELINE, PROFILES, 7.3, max_replicas=4)
    b = grid(PIPELINE, PROFILES, 7.31, max_replicas=4)  # the same grid step: kept
    assert (grid.misses, grid.hits) == (2, 2)  # a: ipa-energy's plan and the IPA plan it is made against; b: both kept
    load_q = 1.02 ** math.ceil(math.log(7.3) / math.log(1.02))
    assert load_q >= 7.3 and load_q / 1.02 < 7.3
    direct = optimize(PIPELINE, PROFILES, load_q, max_replicas=4)
    for p in (a, b):
        assert {s: (sp.variant, sp.batch_size, sp.replicas) for s, sp in p.stages.items()} == \
            {s: (sp.variant, sp.batch_size, sp.replicas) for s, sp in direct.stages.items()}
    assert a.predicted_load_rps == pytest.approx(direct.predicted_load_rps)


def test_grid_optimizer_keys_the_allowance_by_the_plans_it_admits():
    # the loop's accuracy bank moves ipa-energy's allowance every step; only the floor it sets
    # matters, and between two pipeline accuracies (here 0.7 and 0.8) every floor admits the same
    from planner.terms import Weights

    def same(p, q):
        return {s: (sp.variant, sp.batch_size, sp.replicas) for s, sp in p.stages.items()} == \
            {s: (sp.variant, sp.batch_size, sp.replicas) for s, sp in q.stages.items()}

    grid = GridOptimizer(PROFILES, step=0.02)
    load_q = 1.02 ** math.ceil(math.log(7.3) / math.log(1.02))
    reference = optimize(PIPELINE, PROFILES, load_q, max_replicas=4, policy="ipa")
    top = PIPELINE.accuracy(reference)
    assert top == pytest.approx(0.8)  # IPA's plan is the accurate variant: an allowance can matter
    plans = {}
    for budget in (0.0, 0.03, 0.09, 0.11, 0.2, 0.5):
        w = Weights(accuracy_budget=budget, gamma_relative=10.0)  # energy weighs: the floor binds
        plans[budget] = grid(PIPELINE, PROFILES, 7.3, max_replicas=4, weights=w)
        direct = optimize(PIPELINE, PROFILES, load_q, max_replicas=4, weights=w)
        assert same(plans[budget], direct), budget
        assert plans[budget].objective["reference_accuracy"] == direct.objective["reference_accuracy"]
    # two floors admit the same variants: {slow} below 0.1 of allowance, {fast, slow} above
    assert grid.misses == 1 + 2  # IPA's plan once, then one plan per admitted set
    assert plans[0.0].stages["s"].variant == "slow"
    assert {plans[b].stages["s"].variant for b in (0.11, 0.2, 0.5)} == {"fast"}


def test_weighted_percentile():
    assert percentile([1, 2, 3], 50) == 2.0
    assert percentile([10.0, 20.0], 50, [3, 1]) == 10.0
    assert percentile([10.0, 20.0], 80, [3, 1]) == 20.0
    assert percentile([5.0, 1.0], 99, [1, 1]) == pytest.approx(np.percentile([5.0, 1.0], 99))


def test_grid_optimizer_rounds_learnt_factors_up():
    from planner.correction import Corrections

    learnt = Corrections()
    learnt.factors = {"fast": 1.13, "slow": 1.0}
    grid = GridOptimizer(PROFILES, step=0.05, factor_step=0.10)
    got = grid(PIPELINE, learnt.apply(PROFILES), 9.0, max_replicas=4)
    rounded = Corrections()
    rounded.factors = {"fast": 1.1 ** 2, "slow": 1.0}  # 1.13 → the next 10 % step up: 1.21
    want = optimize(PIPELINE, rounded.apply(PROFILES), 1.05 ** math.ceil(math.log(9.0) / math.log(1.05)), max_replicas=4)
    assert got.stages["s"].model_dump() == want.stages["s"].model_dump()
    assert got.predicted_power_w == pytest.approx(want.predicted_power_w)


def test_serve_autoscaling_grows_to_what_the_cluster_places():
    from ipa_energy.spec import Autoscaling, StagePlan
    from ipa_energy.spec import Plan as P

    auto = P(pipeline="p", policy="test", stages={"s": StagePlan(
        variant="fast", batch_size=1, replicas=1, autoscaling=Autoscaling(min_replicas=1, max_replicas=100,
                                                                          upscale_delay_s=5.0))})
    host = HostCosts(serving_cpu_s=0.0, overhead_ms=0.0, reconfigure_s=0.0, worker_start_core_s=0.0)
    e = fluid([40] * 60, p=auto, c=cluster(cores=2.0, host=host))  # 2 cores hold 4 replicas of 0.5 CPU
    e.run_until(30)
    assert e.replica_counts() == {"p.s.0": 4}  # it wanted more; Ray places what fits, the rest stays pending


def test_serve_autoscaling_counts_requests_in_flight_not_batches():
    # Serve's target is per request (target × batch size): two replicas serving full batches of
    # 4 in 200 ms at 40 req/s hold 8 requests in service, not 2 batches
    from ipa_energy.spec import Autoscaling, StagePlan
    from ipa_energy.spec import Plan as P

    auto = P(pipeline="p", policy="test", stages={"s": StagePlan(
        variant="fast", batch_size=4, replicas=2, batch_wait_timeout_ms=1000.0,
        autoscaling=Autoscaling(min_replicas=1, max_replicas=100, target_ongoing_requests=8.0, upscale_delay_s=5.0))})
    host = HostCosts(serving_cpu_s=0.0, overhead_ms=0.0, reconfigure_s=0.0, worker_start_core_s=0.0)
    e = fluid([40] * 60, p=auto, c=cluster(cores=8.0, host=host))
    e.run_until(3)
    m = e.stages["s"][0]
    assert m.k == pytest.approx(4.0) and m.batch_s == pytest.approx(0.2)
    assert e._ongoing(m) == pytest.approx(m.backlog + 40 * 0.2)
    assert e._ongoing(m) >= 8.0  # a target's worth per replica wanted: not the 2 batches' count


def test_grid_optimizer_keys_the_share_busy_outside_the_replicas():
    # the packing bound reads a node in use's share busy outside the replicas: supplies that
    # differ there are different keys; the same share on more nodes in use is the same plan
    from ipa_energy.cluster import ClusterSupply, NodeSupply

    def supply(busy_nodes, outside):
        return ClusterSupply(nodes=tuple(NodeSupply(node_id=f"n{i}", cores=2, memory_mb=8000,
                                                    outside_cores=outside if i < busy_nodes else 0.0)
                                         for i in range(20)), source="test")

    grid = GridOptimizer(PROFILES)
    cool = grid(PIPELINE, PROFILES, 30.0, max_replicas=64, policy="ipa", supply=supply(4, 0.1))
    same = grid(PIPELINE, PROFILES, 30.0, max_replicas=64, policy="ipa", supply=supply(8, 0.1))
    assert (grid.misses, grid.hits) == (1, 1) and same.stages == cool.stages
    hot = grid(PIPELINE, PROFILES, 30.0, max_replicas=64, policy="ipa", supply=supply(4, 0.6))
    assert grid.misses == 2
    for p, share in ((cool, 0.05), (hot, 0.3)):  # 0.1 / 0.6 of 2 cores on each node in use
        assert p.objective["packed_cores_per_cpu"] == pytest.approx(p.objective["utilisation_cap"] - share)
    direct = optimize(PIPELINE, PROFILES, 1.05 ** math.ceil(math.log(30.0) / math.log(1.05)), max_replicas=64,
                      policy="ipa", supply=supply(4, 0.6))
    assert {s: (sp.variant, sp.batch_size, sp.replicas) for s, sp in hot.stages.items()} == \
        {s: (sp.variant, sp.batch_size, sp.replicas) for s, sp in direct.stages.items()}
