"""How the adaptation loop makes changes: scale-ins held, the horizon a cold start sets, the
bridge that carries a ramp while replicas start (the real mini profiles, no Ray)."""

import numpy as np
import pytest

from planner.loop import PlannerLoop
from planner.predictor import MaxPredictor
from tests.unit.planner.loop_helpers import Clock, loop, settled


def test_a_scale_in_waits_until_a_horizon_of_recommendations_agrees(setup, monkeypatch):
    import planner.loop as loop_module
    from ipa_energy.spec import Plan, StagePlan

    pipeline, profiles = setup
    variant = "resnet18-112-mini"
    big, small = (Plan(pipeline="classify", stages={"classifier": StagePlan(variant=variant, replicas=n)}, policy="ipa")
                  for n in (3, 1))
    chosen = [big]

    def optimize(*a, replicas=None, **k):  # as chosen; with replicas fixed where told
        plan = chosen[0]
        if replicas:
            plan = plan.model_copy(update={"stages": {s: sp.model_copy(update={"replicas": replicas[s]})
                                                      for s, sp in plan.stages.items()}})
        return plan

    monkeypatch.setattr(loop_module, "optimize", optimize)
    clock, applied = Clock(), []
    planner = PlannerLoop(pipeline, profiles, MaxPredictor(), applied.append, policy="ipa", interval_s=10,
                          max_replicas=4, clock=clock)
    assert planner.step(np.full(60, 2.0)).changed  # the opening plan: 3 replicas
    chosen[0] = small
    held = []
    while not applied[-1] == small:
        clock.t += planner.interval_s
        d = planner.step(np.full(60, 2.0))  # 3 replicas of resnet18 still serve 2 req/s
        held.append(d)
        assert len(held) < 10
    # the first recommendation of 1 replica is held; the change lands once a horizon of them agrees
    assert held[0].deferred and "classifier: 3 → 1 replicas" in held[0].deferred[0] and not held[0].changed
    assert held[-1].changed and not held[-1].deferred
    assert len(held) - 1 >= planner.horizon_s // planner.interval_s
    # a grow is never held
    chosen[0] = big
    clock.t += planner.interval_s
    assert planner.step(np.full(60, 2.0)).changed
    # when the running plan no longer serves the load, the change is made, but with the replicas kept
    slow = Plan(pipeline="classify", stages={"classifier": StagePlan(variant="resnet152-112-mini", replicas=3)},
                policy="ipa")
    forced = PlannerLoop(pipeline, profiles, MaxPredictor(), applied.append, policy="ipa", interval_s=10,
                         max_replicas=4, current=slow, clock=clock)
    forced._recommended.append((clock.t, {"classifier": 3}))
    chosen[0] = Plan(pipeline="classify", stages={"classifier": StagePlan(variant=variant, replicas=1)}, policy="ipa")
    clock.t += 1
    d = forced.step(np.full(60, 40.0))  # 3 × resnet152 cannot serve 40 req/s
    assert d.changed and d.deferred and applied[-1].stages["classifier"] == StagePlan(variant=variant, replicas=3)

def test_the_horizon_learns_the_cold_start_the_grows_took(setup, monkeypatch):
    import planner.loop as loop_module
    from ipa_energy.messages import ApplyReport, ApplyStep
    from ipa_energy.spec import Plan, StagePlan

    pipeline, profiles = setup
    plans = [Plan(pipeline="classify", stages={"classifier": StagePlan(variant="resnet18-112-mini", replicas=n)},
                  policy="ipa") for n in (1, 2, 3)]
    chosen = [plans[0]]
    monkeypatch.setattr(loop_module, "optimize", lambda *a, **k: chosen[0])
    took = {"steps": []}
    clock = Clock()
    planner = PlannerLoop(pipeline, profiles, MaxPredictor(), lambda plan: ApplyReport(version=2, **took),
                          policy="ipa", interval_s=10, clock=clock)
    profiled = planner.horizon_s
    assert profiled == pytest.approx(10 + max(p.cold_start_s for p in profiles.values()))
    planner.step(np.full(60, 2.0))  # the opening plan starts nothing it can be compared with
    took["steps"] = [ApplyStep(step="apply", seconds=21.5)]
    chosen[0] = plans[1]
    clock.t += 10
    assert planner.step(np.full(60, 2.0)).changed
    assert planner.horizon_s == pytest.approx(10 + 21.5)
    d = planner.step(np.full(60, 2.0))
    assert d.horizon_s == pytest.approx(31.5)
    # a change that starts no replica (a batch size, an in-place switch) teaches nothing
    took["steps"] = [ApplyStep(step="make", seconds=60.0), ApplyStep(step="switch", seconds=1.0)]
    chosen[0] = plans[1].model_copy(update={"stages": {"classifier": StagePlan(variant="resnet34-112-mini", replicas=2)}})
    clock.t += 10
    planner.step(np.full(60, 2.0))
    clock.t += 10
    assert planner.step(np.full(60, 2.0)).changed  # (an optional switch: chosen twice)
    assert planner.horizon_s == pytest.approx(31.5)

def test_a_change_that_starts_replicas_first_switches_the_running_ones_to_carry_the_ramp(setup):
    from ipa_energy.spec import Plan, StagePlan
    from planner.checks import check_plan

    pipeline, profiles = setup
    slow = Plan(pipeline="classify", stages={"classifier": StagePlan(variant="resnet152-112-mini", replicas=1)}, policy="ipa")
    applied, clock = [], Clock()
    planner = PlannerLoop(pipeline, profiles, MaxPredictor(), lambda p: applied.append(p) or {}, policy="ipa",
                          interval_s=10, max_replicas=4, current=slow, clock=clock)
    ramp = np.concatenate([np.full(60, 2.0), np.linspace(2.0, 14.0, 30)])
    d = planner.step(ramp)
    assert d.changed and len(applied) == 2, d
    bridge, final = applied
    # the bridge: the running replica, switched in place to a variant that carries the ramp's load
    assert bridge.stages["classifier"].replicas == 1 and bridge.stages["classifier"].variant != "resnet152-112-mini"
    assert d.bridge == {"classifier": bridge.stages["classifier"].model_dump(
        mode="json", include={"variant", "batch_size", "replicas"})}
    assert not check_plan(pipeline, bridge, profiles, ramp[-10:].mean(), check_predictions=False)
    assert final.stages["classifier"].replicas > 1 and planner.current == final
    # no bridge when the running replicas still serve the load until the new ones answer
    fast = Plan(pipeline="classify", stages={"classifier": StagePlan(variant="resnet18-112-mini", replicas=1)}, policy="ipa")
    applied.clear()
    calm = PlannerLoop(pipeline, profiles, MaxPredictor(), lambda p: applied.append(p) or {}, policy="ipa",
                       interval_s=10, max_replicas=4, current=fast, clock=clock)
    d = calm.step(np.full(60, 2.0))
    assert d.bridge == {} and len(applied) <= 1

def test_the_horizon_takes_the_cold_starts_replicas_report_once_each(setup):
    pipeline, profiles = setup
    planner = PlannerLoop(pipeline, profiles, MaxPredictor(), lambda plan: {}, interval_s=10)
    profiled = planner.cold_start_s
    planner.replica_cold_starts({"a": 1.0})  # quicker than profiled: the profile still bounds it
    assert planner.cold_start_s == profiled
    planner.replica_cold_starts({"a": 1.0, "b": 18.0})
    assert planner.horizon_s == pytest.approx(10 + 18.0)
    for _ in range(3):  # reported again every interval: counted once
        planner.replica_cold_starts({"a": 1.0, "b": 18.0})
    assert list(planner.cold_starts) == [1.0, 18.0]

def test_the_background_planned_for_is_the_most_seen_over_the_horizon(setup):
    from ipa_energy.cluster import ClusterSupply, NodeSupply

    def supply(outside):
        return ClusterSupply(nodes=(NodeSupply(node_id="n", cores=8.0, memory_mb=16_000.0, outside_cores=outside),),
                             source="test")

    applied, clock = [], Clock()
    planner = loop(setup, applied, current=setup[0].default_plan(), clock=clock, supply=supply(1.5), serving_cpu_s=0.02)
    history = np.full(120, 5.0)
    assert planner.step(history).background_cores == pytest.approx(1.5 - 5.0 * 0.02)
    clock.t += 10
    planner.supply = supply(0.5)  # a quieter reading: the busier one of the horizon still counts
    assert planner.step(history).background_cores == pytest.approx(1.5 - 5.0 * 0.02)
    clock.t += planner.horizon_s + 1  # the busy reading is older than a horizon now
    assert planner.step(history).background_cores == pytest.approx(0.5 - 5.0 * 0.02)
    planner.supply = None
    assert planner.step(history).background_cores is None

def test_a_scale_in_waits_until_the_busiest_second_of_the_predictors_window_is_served(setup):
    from planner.predictor import ReactivePredictor

    pipeline, profiles = setup
    clock = Clock()
    planner = PlannerLoop(pipeline, profiles, ReactivePredictor(), lambda plan: {}, interval_s=10,
                          current=pipeline.default_plan(), clock=clock)  # it forecasts from the last 10 s only
    up = settled(planner, np.full(240, 30.0))
    most = sum(d["replicas"] for d in up.stages.values())
    quiet = np.full(240, 1.0)
    quiet[-60] = 30.0  # one busy second a minute ago: inside the predictor's 120 s
    reasons = []
    for _ in range(12):  # long past any horizon of recommendations
        clock.t += 10
        d = planner.step(quiet)
        assert sum(r["replicas"] for r in d.stages.values()) == most
        reasons += d.deferred
    assert any("busiest second of the last 120 s, 30 req/s" in r for r in reasons), reasons
    quiet[-60] = 1.0  # the busy second has left the window: the shrink comes
    for _ in range(12):
        clock.t += 10
        if (d := planner.step(quiet)).changed:
            break
    assert sum(r["replicas"] for r in d.stages.values()) < most

def test_the_bridge_judges_the_running_replicas_on_the_cores_the_cold_starts_leave(setup):
    """At the demo's ramp (resnet152 × 1 at ~3 req/s on 2 cores, growing to 2 replicas), the
    running replica serves the load on paper, but not with a core taken by the new replica's
    cold start: so the bridge switches it in place to a lighter variant first."""
    from ipa_energy.cluster import ClusterSupply, NodeSupply
    from ipa_energy.spec import Plan, StagePlan
    from planner import changes as changes_module
    from planner.changes import during_cold_start

    pipeline, profiles = setup
    supply = ClusterSupply(nodes=(NodeSupply(node_id="n", cores=2.0, memory_mb=16_000.0, outside_cores=0.27),),
                           source="test")
    assert during_cold_start(supply, 0) is supply and during_cold_start(None, 3) is None
    assert during_cold_start(supply, 1).background_cores == pytest.approx(1.0)
    assert during_cold_start(supply, 5).background_cores == pytest.approx(2.0)  # never more than the cluster has

    class Forecast:  # the LSTM's forecast at that step
        def predict(self, history):
            return 5.0

    history = np.concatenate([np.full(60, 2.0), [2, 2, 0, 1, 3, 7, 3, 5, 3, 6]])  # the demo's arrivals up to the step

    def step(starting_cores):
        applied = []
        slow = Plan(pipeline="classify", stages={"classifier": StagePlan(variant="resnet152-112-mini", replicas=1)},
                    policy="ipa")
        with pytest.MonkeyPatch.context() as m:
            m.setattr(changes_module, "STARTING_REPLICA_CORES", starting_cores)
            planner = PlannerLoop(pipeline, profiles, Forecast(), lambda p: applied.append(p) or {}, policy="ipa",
                                  interval_s=10, current=slow, supply=supply, serving_cpu_s=0.02)
            return planner.step(history), applied

    d, applied = step(1.0)
    assert d.changed and d.stages["classifier"]["replicas"] == 2 and len(applied) == 2
    assert d.bridge["classifier"]["replicas"] == 1 and d.bridge["classifier"]["variant"] != "resnet152-112-mini"
    d, applied = step(0.0)  # with the cold start's core left to the running replica, it would carry on as it is
    assert d.changed and d.bridge == {} and len(applied) == 1

def test_a_stage_with_no_variant_to_bridge_a_regrow_holds_its_replicas_for_the_predictors_window(setup):
    """After a busy spell, ipa shrinks once a horizon agrees (a regrow can be bridged with a
    lighter variant); fa2-high, whose one variant cannot bridge, keeps its replicas until the
    predictor's whole window (HISTORY_S) has stopped asking for them."""
    from ipa_energy.cluster import ClusterSupply, NodeSupply
    from planner.constants import HISTORY_S

    supply = ClusterSupply(nodes=(NodeSupply(node_id="n", cores=2.0, memory_mb=16_000.0, outside_cores=0.27),),
                           source="test")
    busy, quiet = np.full(HISTORY_S, 6.0), np.full(HISTORY_S, 1.0)  # resnet152 × 2, then × 1 for both

    def replicas_over_time(policy):
        clock = Clock()
        planner = loop(setup, [], clock=clock, policy=policy, max_replicas=2, supply=supply, serving_cpu_s=0.02)
        assert sum(r["replicas"] for r in planner.step(busy).stages.values()) == 2
        out = []
        for _ in range(int(HISTORY_S // 10) + 3):
            clock.t += 10
            out.append((clock.t - 1000, planner.step(quiet).stages["classifier"]["replicas"]))
        return planner, out

    ipa, ipa_counts = replicas_over_time("ipa")
    fa2, fa2_counts = replicas_over_time("fa2-high")
    assert ipa._bridgeable("classifier") and not fa2._bridgeable("classifier")
    assert min(t for t, n in ipa_counts if n == 1) <= 2 * ipa.horizon_s + 10
    shrunk = min(t for t, n in fa2_counts if n == 1)
    assert HISTORY_S <= shrunk <= HISTORY_S + 20


def _at_a_ramp(setup, policy, paid=0.0):
    """A loop on resnet101 b4 × 1 (ipa-energy's lean plan in make demo) that has seen the load
    rise from 2 to 10 req/s over 30 s, on a 2-core node; `paid`: rent paid already (accuracy × s)."""
    from ipa_energy.cluster import ClusterSupply, NodeSupply
    from ipa_energy.spec import Plan, StagePlan

    supply = ClusterSupply(nodes=(NodeSupply(node_id="n", cores=2.0, memory_mb=16_000.0, outside_cores=0.27),),
                           source="test")
    lean = Plan(pipeline="classify", stages={"classifier": StagePlan(variant="resnet101-112-mini", batch_size=4,
                                                                     replicas=1)}, policy=policy)
    applied = []
    planner = loop(setup, applied, clock=Clock(), policy=policy, supply=supply, serving_cpu_s=0.02, max_replicas=2,
                   current=lean)
    planner.rent.paid = paid
    return planner, applied, np.concatenate([np.full(60, 2.0), np.linspace(2.0, 10.0, 30)])


def test_ipa_energy_rents_the_running_replicas_while_a_grows_bridge_would_cost_more(setup):
    """At 10 req/s the program wants resnet101 × 2; growing from 1 replica bridges the cold start
    with a variant far lighter than resnet50, which the running replica serves the load with.
    ipa-energy holds the grow, switches in place and pays the difference as rent, by the
    second held; the decision says so, and the rent is kept across a restart. IPA's own loop
    grows at once."""
    from planner.changes import Rent, stage_replicas

    planner, applied, history = _at_a_ramp(setup, "ipa-energy")
    d = planner.step(history)
    assert d.stages["classifier"]["replicas"] == 1 and not d.bridge, d
    assert applied and all(stage_replicas(p)["classifier"] == 1 for p in applied)
    assert applied[-1].stages["classifier"].variant == "resnet50-112-mini"
    assert d.deferred and d.deferred[0].startswith("classifier: grow to") and "held" in d.deferred[0]
    rate = planner.rent.rate
    assert rate > 0 and planner.rent.paid == 0.0
    planner.clock.t += 4  # a surge step 4 s later pays 4 s, not an interval
    planner.step(np.concatenate([history, np.full(4, 10.0)]), trigger="surge")
    assert planner.rent.paid == pytest.approx(4 * rate)
    saved = planner.state()
    planner.rent = Rent()
    planner.restore(saved, planner.decisions)
    assert planner.rent.paid == pytest.approx(4 * rate) and planner.rent.rate == rate

    ipa, applied, history = _at_a_ramp(setup, "ipa")
    d = ipa.step(history)
    assert d.stages["classifier"]["replicas"] == 2 and not any("held" in x for x in d.deferred), d


def test_ipa_energy_grows_once_the_rent_paid_passes_the_bridges_price(setup):
    """The same ramp held until the rent paid, with an interval's more, passes what the grow's
    bridge costs: the grow then goes ahead at once, bridged (no optional-switch hold after
    renting), and the rent is cleared once it is made."""
    planner, applied, history = _at_a_ramp(setup, "ipa-energy")
    held = 0
    while (d := planner.step(history)).stages["classifier"]["replicas"] == 1:
        assert any("held" in x for x in d.deferred), d  # held for the grow, no other reason
        held += 1
        assert held < 20
        planner.clock.t += 10
        history = np.concatenate([history, np.full(10, 10.0)])
    assert held >= 1 and d.changed and d.bridge, d
    assert planner.rent.paid == 0.0 and planner.rent.rate == 0.0


def test_a_rent_is_cleared_when_the_load_falls_back(setup):
    """A grow held at a ramp that then falls back is never bought, and its rent does not count
    towards the next grow."""
    class Recent:  # the mean of the last 10 s: a ramp that fell back is forgotten at once
        def predict(self, history):
            return float(np.mean(history[-10:]))

    planner, applied, history = _at_a_ramp(setup, "ipa-energy")
    planner.predictor = Recent()
    assert any("held" in x for x in planner.step(history).deferred)
    planner.clock.t += 10
    d = planner.step(np.concatenate([history, np.full(60, 2.0)]))
    assert d.stages["classifier"]["replicas"] == 1 and not any("held" in x for x in d.deferred), d
    assert planner.rent.paid == 0.0 and planner.rent.rate == 0.0
