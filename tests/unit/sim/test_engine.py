"""The simulator's engine on a one-stage pipeline with exact (no-variance) profiles: every
behaviour checked against arithmetic done by hand."""

from datetime import datetime, timezone

import numpy as np
import pytest

from ipa_energy.spec import Accuracy, PipelineSpec, Plan, Profile, Resources, StagePlan, StageSpec, VariantSpec
from sim.cluster import HostCosts, NodeType, SimCluster
from sim.engine import Engine

RES = Resources(num_cpus=0.5)  # as the mini replicas reserve; a batch still keeps one core busy
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def variant(name, acc):
    return VariantSpec(name=name, task="classify", family="synthetic", architecture="synthetic",
                       accuracy=Accuracy(value=acc, metric="synthetic", source="test"), resources=RES, max_batch_size=8)


def profile(name, b, ms, cpu_s=None, cold=4.0):
    return Profile(variant=name, batch_size=b, hardware="test", resources=RES, latency_p50_ms=ms, latency_p99_ms=ms,
                   throughput_rps=1000 * b / ms, energy_per_request_j=0.5 / b, idle_power_w=1.0,
                   energy_method="tdp-estimate", window_s=5.0, weights="random", measured_at=NOW,
                   cpu_s_per_request=cpu_s if cpu_s is not None else ms / 1000 / b, cold_start_s=cold,
                   memory_mb_per_replica=100.0)


PIPELINE = PipelineSpec(name="p", stages=(StageSpec(name="s", variants=(variant("fast", 0.7), variant("slow", 0.8))),),
                        sla_ms=1000.0)
PROFILES = {("fast", 1): profile("fast", 1, 100.0), ("fast", 4): profile("fast", 4, 200.0),
            ("slow", 1): profile("slow", 1, 300.0), ("slow", 4): profile("slow", 4, 600.0)}


def cluster(cores=2.0, count=1, kept=1, host=None, idle_timeout_s=600.0):
    return SimCluster(hardware="test", node_types=(NodeType(name="n", count=count, min_workers=kept, cores=cores,
                                                            memory_mb=4096.0),),
                      host=host or HostCosts(serving_cpu_s=0.0, overhead_ms=0.0, reconfigure_s=0.0,
                                             worker_start_core_s=0.0, switch_core_s=0.5, warm_variants=False),
                      idle_timeout_s=idle_timeout_s)


def plan(variant="fast", batch=1, replicas=1, wait_ms=0.0):
    return Plan(pipeline="p", stages={"s": StagePlan(variant=variant, batch_size=batch, replicas=replicas,
                                                     batch_wait_timeout_ms=wait_ms)}, policy="test")


def engine(p=None, c=None, **kw):
    return Engine(PIPELINE, PROFILES, c or cluster(), p or plan(), seed=0, **kw)


def test_one_request_takes_its_profiled_time():
    e = engine()
    e.schedule(np.array([0.5]), 3)
    e.run_until(3)
    (f,) = e.finished
    assert f.status == 200 and f.variants == {"s": "fast"}
    assert f.finished - f.sent == pytest.approx(0.1)
    assert f.energy_j == pytest.approx(0.5)  # the profile's J/request at batch 1, at the median time


def test_requests_queue_behind_a_busy_replica():
    e = engine()
    e.schedule(np.array([0.0, 0.0, 0.0]), 2)
    e.run_until(2)
    assert sorted(round(f.finished - f.sent, 6) for f in e.finished) == [0.1, 0.2, 0.3]


def test_a_batch_fills_or_waits_its_timeout():
    e = engine(plan(batch=4, wait_ms=50.0))
    e.schedule(np.array([0.0, 0.01, 0.02, 0.03, 1.0]), 3)  # four fill a batch at once; the fifth waits 50 ms
    e.run_until(3)
    first = sorted(f.finished for f in e.finished)[:4]
    assert first == pytest.approx([0.03 + 0.2] * 4)  # batch of 4 starts when full, takes 200 ms
    last = max(f.finished for f in e.finished)
    assert last == pytest.approx(1.0 + 0.05 + 0.1)  # alone after its wait, at batch-1 speed


def test_replicas_sharing_too_few_cores_slow_down_alike():
    alone = engine(plan(replicas=2), cluster(cores=2.0))
    shared = engine(plan(replicas=2), cluster(cores=1.0))
    for e in (alone, shared):
        e.schedule(np.array([0.0, 0.0]), 2)
        e.run_until(2)
    assert [f.finished for f in alone.finished] == pytest.approx([0.1, 0.1])
    assert [f.finished for f in shared.finished] == pytest.approx([0.2, 0.2])  # two 1-core jobs on one core


def test_background_load_takes_cores_from_the_replicas():
    host = HostCosts(background_cores=1.5, serving_cpu_s=0.0, overhead_ms=0.0)
    e = engine(c=cluster(cores=2.0, host=host))
    e.schedule(np.array([1.5]), 3)  # after the first tick has set the background
    e.run_until(3)
    assert e.finished[0].finished - 1.5 == pytest.approx(0.2)  # half a core left: twice as long
    assert e.outside_cores() == {e.nodes[0].id: pytest.approx(1.5)}


def test_the_background_hidden_in_the_replica_processes_contends_but_is_not_read_as_outside():
    host = HostCosts(background_cores=1.5, hidden_cores=1.0, serving_cpu_s=0.0, overhead_ms=0.0)
    e = engine(c=cluster(cores=2.0, host=host))
    e.schedule(np.array([1.5]), 3)
    e.run_until(3)
    assert e.finished[0].finished - 1.5 == pytest.approx(0.2)  # the same contention
    assert e.outside_cores() == {e.nodes[0].id: pytest.approx(0.5)}  # what the node's energy actor reads


def test_the_shedder_refuses_what_cannot_make_the_sla():
    e = engine(plan(variant="slow"))
    # one request first (the shedder judges a variant once it has timed it), then 20 at once on a
    # 300 ms replica: most would wait past the 1 s SLA
    e.schedule(np.concatenate([[0.0], np.full(20, 1.0)]), 10)
    e.run_until(10)
    shed = [f for f in e.finished if f.shed]
    ok = [f for f in e.finished if f.status == 200]
    assert shed and ok and len(shed) + len(ok) == 21
    assert all(f.status == 503 and f.finished - f.sent < 0.1 for f in shed)


def test_a_change_cold_starts_new_replicas_before_routing_flips():
    e = engine()
    change = e.begin(plan(replicas=2))
    assert not e.converged(change)
    assert e.run_until(10, until=lambda: e.converged(change))
    assert e.now == pytest.approx(4.0)  # the profiled cold start, on an idle core
    e.finish(change)
    assert e.replica_counts() == {"p.s.0": 2}
    assert e.cold_starts[change.starting[0].id] == pytest.approx(4.0)


def test_a_variant_switch_happens_in_place_and_serves_meanwhile():
    e = engine()
    change = e.begin(plan(variant="slow"))
    e.schedule(np.array([0.1]), 3)
    e.run_until(0.3)
    assert e.finished[0].variants == {"s": "fast"}  # the old model serves while the new one builds
    assert e.run_until(3, until=lambda: e.converged(change))
    e.finish(change)
    assert e.replica_counts() == {"p.s.0": 1}
    e.schedule(np.array([2.0]), 3)
    e.run_until(3)
    assert e.finished[-1].variants == {"s": "slow"}


def warm_host():
    return HostCosts(serving_cpu_s=0.0, overhead_ms=0.0, reconfigure_s=0.0, worker_start_core_s=0.0, switch_core_s=0.5)


def test_a_switch_to_a_warm_variant_is_a_swap_and_back_too():
    e = engine(c=cluster(host=warm_host()))
    (r,) = e.slots[("s", 0)].replicas
    assert r.warm == {"slow"}  # the opening replicas built theirs before the load
    change = e.begin(plan(variant="slow"))
    assert e.converged(change)  # no build: converged at once
    e.finish(change)
    assert r.variant == "slow" and r.warm == {"fast"}
    e.schedule(np.array([0.1]), 3)
    e.run_until(3)
    assert e.finished[0].variants == {"s": "slow"}
    back = e.begin(plan(variant="fast"))
    assert e.converged(back)


def test_a_new_replica_warms_its_slots_other_variants_on_idle_cores_only():
    e = engine(c=cluster(cores=2.0, host=warm_host()))
    e.schedule(np.array([]), 30)
    change = e.begin(plan(replicas=2))
    assert e.run_until(10, until=lambda: e.converged(change))
    e.finish(change)
    new = change.starting[0]
    assert new.warm == set()
    e.run_until(e.now + 1.01)  # the next second's idle cores build the 0.5 core-s model
    assert new.warm == {"slow"}
    # on a saturated node (1 core, 20 req/s of 100 ms), nothing is left idle for warm builds
    busy = engine(c=cluster(cores=1.0, host=warm_host()))
    busy.schedule(np.arange(0.0, 30.0, 0.05), 31)
    grow = busy.begin(plan(replicas=2))
    assert busy.run_until(29, until=lambda: busy.converged(grow))
    busy.finish(grow)
    busy.run_until(29)
    assert grow.starting[0].warm == set()


def test_a_change_with_no_room_does_not_converge_and_rolls_back():
    e = engine(c=cluster(cores=2.0))
    change = e.begin(plan(replicas=5))  # 5 half-CPU replicas on 2 cores
    assert not e.run_until(30, until=lambda: e.converged(change))
    e.abandon(change)
    assert e.replica_counts() == {"p.s.0": 1}
    assert e.routing.stages["s"].replicas == 1


def test_scale_in_drains_and_loses_nothing():
    e = engine(plan(replicas=2))
    e.schedule(np.linspace(0, 2, 30), 10)
    e.run_until(1.0)
    change = e.begin(plan(replicas=1))
    assert e.converged(change)
    e.finish(change)
    e.run_until(10)
    assert len(e.finished) == 30 and all(f.status == 200 for f in e.finished)
    assert e.replica_counts() == {"p.s.0": 1}


def test_an_empty_node_is_released_after_the_idle_timeout_and_draws_nothing():
    c = cluster(cores=0.5, count=2, kept=1, idle_timeout_s=5.0)
    e = engine(plan(replicas=2), c)  # the second replica needs the second node
    second = e.nodes[1]
    assert second.active
    change = e.begin(plan(replicas=1))
    e.finish(change)
    e.schedule(np.zeros(0), 20)
    e.run_until(20)
    assert not second.active and e.nodes[0].active
    idle, *_ = e.energy_since(second)
    assert idle == pytest.approx(1.0 * 5.0, rel=0.25)  # idle power (1 W for its half core) until its release
    e.run_until(30)
    assert e.energy_since(second)[0] == 0.0


def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        e = Engine(PIPELINE, {k: v.model_copy(update={"latency_p99_ms": v.latency_p50_ms * 1.5}) for k, v in PROFILES.items()},
                   cluster(), plan(replicas=2), seed=7)
        e.schedule(np.sort(np.random.default_rng(1).uniform(0, 5, 40)), 10)
        e.run_until(10)
        runs.append([(f.sent, f.finished, f.status) for f in e.finished])
    assert runs[0] == runs[1]


def test_a_slot_that_switches_and_grows_grows_on_its_variant_first():
    """serve_app.rollout's grow step: capacity never dips below the running plan's."""
    e = engine()
    change = e.begin(plan(variant="slow", replicas=2))
    e.schedule(np.array([2.0]), 10)
    e.run_until(3.0)
    assert e.finished[0].variants == {"s": "fast"} and not change.switching  # still growing: no switch yet
    assert e.run_until(10, until=lambda: e.converged(change))
    assert e.now == pytest.approx(4.0 + 0.5)  # the cold start, then the switch's build
    e.finish(change)
    assert {r.variant for r in e.slots[("s", 0)].replicas} == {"slow"}
