"""The planner actor adapts the running app to a load step, losing no request."""

import asyncio
import time

import pytest
import ray

from loadgen.driver import closed_loop, summarize
from planner.actor import start_planner, stop_planner
from workloads import payloads

pytestmark = pytest.mark.integration


def test_planner_follows_a_load_step_up_and_down(base_url):
    planner = start_planner("ipa", "classify", policy="ipa-energy", interval_s=2.0, predictor="reactive", max_replicas=2)
    try:
        time.sleep(5)  # a few idle intervals: the plan for (almost) no load
        body = payloads.image_request(seed=5)
        records = asyncio.run(closed_loop(f"{base_url}/v1/pipelines/classify", lambda i: body, clients=8, duration_s=25))
        assert summarize(records)["failed"] == 0, [r.error for r in records if r.status != 200][:3]
        step_up_end = time.time()
        deadline = time.time() + 60
        while time.time() < deadline:  # load is gone: wait for the planner to scale back
            decisions = ray.get(planner.decisions.remote())
            if any(d["changed"] and d["time_s"] > step_up_end for d in decisions):
                break
            time.sleep(2)
        decisions = ray.get(planner.decisions.remote())
    finally:
        stop_planner("ipa", "classify")
    during = [d for d in decisions if d["predicted_rps"] >= 1.0]
    assert any(d["changed"] for d in during), decisions
    assert any(d["changed"] and d["time_s"] > step_up_end for d in decisions), decisions
    assert all(d["error"] is None for d in decisions), [d["error"] for d in decisions if d["error"]]
    assert all(d["energy_method"] == "tdp-estimate" for d in decisions)
    # the closed loop saw what the stage achieved while loaded, beside what its model predicted
    timed = [d for d in during if d["observed_p99_ms"]]
    assert timed and all(d["observed_p99_ms"].keys() == {"classifier"} for d in timed)
    # an interval that saw a change has no prediction (no one plan ran through it; with 2 s
    # intervals and changes taking longer, that may be every loaded interval here)
    assert all(d["predicted_p99_ms"].keys() in ({"classifier"}, set()) for d in timed), timed
