"""The adaptation loop's decisions, with the real mini profiles and no Ray (its changes:
test_loop_changes.py; ipa-energy's accuracy budget: test_accuracy_bank.py)."""

import numpy as np
import pytest

from planner.loop import PlannerLoop
from planner.trend import trend_rps
from planner.predictor import MaxPredictor
from tests.unit.planner.loop_helpers import Biased, Clock, loop, settled


def test_load_up_then_down_changes_the_plan_and_back(setup):
    applied, clock = [], Clock()
    planner = loop(setup, applied, current=setup[0].default_plan(), clock=clock)
    low, high = np.full(120, 1.0), np.full(120, 30.0)
    first = planner.step(low)
    clock.t += 10
    up = settled(planner, np.concatenate([low, high]))
    assert up.changed and up.predicted_rps == pytest.approx(30.0)
    capacity = {s: d["replicas"] for s, d in up.stages.items()}
    held = []
    while not (down := planner.step(np.full(240, 1.0))).changed:  # a scale-in waits out a horizon
        held.append(down)
        clock.t += 10
        assert len(held) < 10
    assert down.changed
    assert sum(d["replicas"] for d in down.stages.values()) <= sum(capacity.values())
    assert all(d.energy_method == "tdp-estimate" and d.predicted_power_w > 0 for d in planner.decisions if d.changed)
    assert len(applied) == sum(d.changed for d in (first, up, down, *held))

def test_same_load_twice_changes_nothing(setup):
    applied = []
    planner = loop(setup, applied)
    planner.step(np.full(60, 3.0))
    again = planner.step(np.full(60, 3.0))
    assert not again.changed and len(applied) == 1  # the first step applies the initial plan

def test_a_failed_apply_keeps_the_old_plan_and_is_logged(setup):
    current = setup[0].default_plan()
    planner = loop(setup, [], fail=True, current=current)
    d = settled(planner, np.full(60, 30.0))
    assert not d.changed and "cluster busy" in d.error and planner.current is current

def test_no_traffic_plans_for_a_minimal_load(setup):
    d = loop(setup, []).step(np.zeros(30))
    assert d.predicted_rps == 0.0 and d.feasible and d.changed

def test_small_batch_wait_moves_are_not_plan_changes():
    """(b-1)/λ moves with every load estimate; reconfiguring for a few ms each interval is churn."""
    from ipa_energy.spec import Plan, StagePlan
    from ipa_energy.diff import diff_plans
    from planner.changes import worth_applying

    def plan(wait, batch=4):
        return Plan(pipeline="p", stages={"s": StagePlan(variant="v", batch_size=batch, batch_wait_timeout_ms=wait)})

    assert not [c for c in diff_plans(plan(300), plan(400)) if worth_applying(c)]
    assert [c for c in diff_plans(plan(300), plan(700)) if worth_applying(c)]
    assert [c for c in diff_plans(plan(300), plan(400, batch=8)) if worth_applying(c)]  # the batch size itself counts

def test_flat_zero_load_is_followed_within_one_interval(setup):
    pipeline, profiles = setup
    planner = PlannerLoop(pipeline, profiles, Biased(), lambda plan: {}, interval_s=10)
    busy = planner.step(np.concatenate([np.zeros(100), np.full(20, 1.0)]))
    assert busy.predicted_rps == 4.0  # some load: the predictor is trusted
    idle = planner.step(np.concatenate([np.full(110, 1.0), np.zeros(10)]))  # one interval of nothing
    assert idle.predicted_rps == 0.0 and idle.planned_rps < 1.0

def test_the_plan_never_goes_below_the_last_intervals_peak(setup):
    pipeline, profiles = setup
    planner = PlannerLoop(pipeline, profiles, Biased(), lambda plan: {}, interval_s=10)
    history = np.full(120, 2.0)
    history[-3] = 9.0  # one busy second in the last interval
    d = planner.step(history)
    assert d.floor_rps == 9.0 and d.planned_rps >= 9.0 > d.predicted_rps

def test_a_ramp_is_planned_for_at_the_horizon(setup):
    pipeline, profiles = setup
    ramp = np.linspace(1.0, 10.0, 120)  # +0.075 req/s per second
    planner = PlannerLoop(pipeline, profiles, Biased(), lambda plan: {}, interval_s=10)
    assert planner.horizon_s >= 10.0  # the interval, plus a new replica's cold start where profiled
    d = planner.step(ramp)
    assert d.planned_rps == pytest.approx(10.0 + 0.075 * planner.horizon_s, rel=0.02)
    assert trend_rps(np.full(60, 5.0), 30.0) == pytest.approx(5.0)
    assert trend_rps(np.linspace(10, 0, 60), 30.0) == 0.0  # a fall never plans below zero

def test_a_trend_is_not_carried_past_the_window_it_was_fitted_to():
    burst = np.r_[np.full(50, 1000.0), np.linspace(1000.0, 2000.0, 10)]  # 10 s of a steep rise
    fitted = np.polyfit(np.arange(60), burst, 1)
    at_window = float(np.polyval(fitted, 59 + 60))
    assert trend_rps(burst, 300.0) == pytest.approx(at_window)  # 60 s ahead at most, not 300
    assert trend_rps(burst, 300.0) < float(np.polyval(fitted, 59 + 300))
    assert trend_rps(burst, 20.0) == pytest.approx(float(np.polyval(fitted, 59 + 20)))  # within it: as before

def test_batches_wait_no_longer_than_the_observed_rate_fills_them(setup):
    """A rise is planned for (batches of several), but the present load fills them slowly:
    the batch wait is the fill time at the observed rate, inside the SLA."""
    pipeline, profiles = setup

    class _Rise:
        def predict(self, history):
            return 20.0

    d_plan = []
    planner = PlannerLoop(pipeline, profiles, _Rise(), lambda plan: d_plan.append(plan) or {}, interval_s=10)
    planner.step(np.full(120, 0.5))
    (plan,) = d_plan
    for sp in plan.stages.values():
        assert sp.batch_wait_timeout_ms <= 1000 * (sp.batch_size - 1) / 0.5 + 1e-6
    assert plan.objective["latency_ms"] <= pipeline.sla_ms

def test_an_optional_variant_switch_must_be_chosen_twice_a_forced_one_is_made_at_once(setup, monkeypatch):
    import planner.loop as loop_module
    from ipa_energy.spec import Plan, StagePlan
    from planner.optimizer import optimize

    pipeline, profiles = setup
    current = optimize(pipeline, profiles, 4.0, policy="ipa", max_replicas=4)
    running = current.stages["classifier"].variant
    other = next(v.name for v in pipeline.stages[0].variants if v.name != running)
    switch = Plan(pipeline="classify", stages={"classifier": StagePlan(variant=other, replicas=2)}, policy="ipa")
    monkeypatch.setattr(loop_module, "optimize", lambda *a, **k: switch)
    applied = []
    planner = PlannerLoop(pipeline, profiles, MaxPredictor(), applied.append, policy="ipa", interval_s=10,
                          max_replicas=4, current=current)
    first = planner.step(np.full(60, 4.0))  # the running plan still serves 4 req/s: hold
    assert not first.changed and first.deferred and applied == [] and first.stages["classifier"]["variant"] == running
    second = planner.step(np.full(60, 4.0))
    assert second.changed and applied == [switch] and not second.deferred
    forced = PlannerLoop(pipeline, profiles, MaxPredictor(), applied.append, policy="ipa", interval_s=10,
                         max_replicas=4, current=current)
    overload = forced.step(np.full(60, 400.0))  # far beyond the running plan: switch at once
    assert overload.changed and not overload.deferred

def test_a_surge_past_the_plans_load_steps_before_the_interval(setup):
    pipeline, profiles = setup
    clock = Clock()
    planner = PlannerLoop(pipeline, profiles, Biased(), lambda plan: {}, interval_s=10, clock=clock)
    steady = np.full(120, 2.0)
    assert not planner.surging(steady)  # nothing planned yet
    first = planner.step(steady)
    planned = first.planned_rps  # 4 req/s: the predictor's
    clock.t += 1.0
    surge = np.concatenate([steady, np.full(3, 9.0)])
    assert not planner.surging(surge)  # the window must lie wholly after the last step
    clock.t += 3.0
    assert planner.surging(surge)
    # Poisson noise at the planned rate does not count: 3 s at 4 req/s is 12 ± 3.5 arrivals
    assert not planner.surging(np.concatenate([steady, [5.0, 6.0, 6.0]]))
    assert planner.surging(np.concatenate([steady, [8.0, 8.0, 8.0]]))  # 24 > 12 + 3·√12
    d = planner.step(surge, trigger="surge")
    assert d.trigger == "surge" and d.planned_rps >= 9.0 > planned
    assert d.observed_p99_ms == {} and d.predicted_p99_ms == {}  # an overlapping window teaches nothing
    assert first.trigger == "interval"
