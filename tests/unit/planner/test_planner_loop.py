"""The adaptation loop's decisions, with the real mini profiles and no Ray."""

import numpy as np
import pytest

from planner.loop import PlannerLoop
from planner.profiles import profiles_from_store
from planner.predictor import MaxPredictor
from workloads import catalog
from workloads.profile_store import PROFILES_DIR, ProfileStore

HARDWARE = "cpu-amd-epyc-2c"


@pytest.fixture(scope="module")
def setup():
    pipeline = catalog.pipeline("classify")
    return pipeline, profiles_from_store(ProfileStore(PROFILES_DIR), HARDWARE, pipeline)


def loop(setup, applied, fail=False, **kw):
    pipeline, profiles = setup

    def apply(plan):
        if fail:
            raise RuntimeError("cluster busy")
        applied.append(plan)
        return {}

    return PlannerLoop(pipeline, profiles, MaxPredictor(), apply, interval_s=10, **kw)


def test_load_up_then_down_changes_the_plan_and_back(setup):
    applied = []
    planner = loop(setup, applied, current=setup[0].default_plan())
    low, high = np.full(120, 1.0), np.full(120, 30.0)
    first = planner.step(low)
    up = planner.step(np.concatenate([low, high]))
    assert up.changed and up.predicted_rps == pytest.approx(30.0)
    capacity = {s: d["replicas"] for s, d in up.stages.items()}
    down = planner.step(np.concatenate([high[:0], np.full(240, 1.0)]))
    assert down.changed
    assert sum(d["replicas"] for d in down.stages.values()) <= sum(capacity.values())
    assert all(d.energy_method == "tdp-estimate" and d.predicted_power_w > 0 for d in planner.decisions)
    assert len(applied) == sum(d.changed for d in (first, up, down))


def test_same_load_twice_changes_nothing(setup):
    applied = []
    planner = loop(setup, applied)
    planner.step(np.full(60, 3.0))
    again = planner.step(np.full(60, 3.0))
    assert not again.changed and len(applied) == 1  # the first step applies the initial plan


def test_a_failed_apply_keeps_the_old_plan_and_is_logged(setup):
    current = setup[0].default_plan()
    planner = loop(setup, [], fail=True, current=current)
    d = planner.step(np.full(60, 30.0))
    assert not d.changed and "cluster busy" in d.error and planner.current is current


def test_no_traffic_plans_for_a_minimal_load(setup):
    d = loop(setup, []).step(np.zeros(30))
    assert d.predicted_rps == 0.0 and d.feasible and d.changed


def test_small_batch_wait_moves_are_not_plan_changes():
    """(b-1)/λ moves with every load estimate; reconfiguring for a few ms each interval is churn."""
    from ipa_energy.spec import Plan, StagePlan
    from ipa_energy.diff import diff_plans
    from planner.loop import _worth_applying

    def plan(wait, batch=4):
        return Plan(pipeline="p", stages={"s": StagePlan(variant="v", batch_size=batch, batch_wait_timeout_ms=wait)})

    assert not [c for c in diff_plans(plan(300), plan(400)) if _worth_applying(c)]
    assert [c for c in diff_plans(plan(300), plan(700)) if _worth_applying(c)]
    assert [c for c in diff_plans(plan(300), plan(400, batch=8)) if _worth_applying(c)]  # the batch size itself counts
