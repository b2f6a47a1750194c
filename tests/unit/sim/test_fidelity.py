"""The simulator against one recorded live run (tests/fixtures/runs/live-bench; docs/simulator.md)."""

from pathlib import Path

import pytest

from experiments.summary import load_run
from sim.fidelity import compare, planner_start, simulate_like

ROOT = Path(__file__).resolve().parents[3]
LIVE = ROOT / "tests" / "fixtures" / "runs" / "live-bench" / "ipa-energy"
CLUSTER = ROOT / "sim" / "clusters" / "host-2c.yaml"


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    return compare(LIVE, CLUSTER, tmp_path_factory.mktemp("fidelity"))


def _changes(run):
    """(seconds after second 0 of the trace, plan) of each plan change."""
    start = run.meta.load_start_s
    return [(d.time_s - start, {s: (v["variant"], v["batch_size"], v["replicas"]) for s, v in d.stages.items()})
            for d in run.decisions if d.changed]


def test_the_simulated_planner_decides_when_the_live_one_did_and_changes_as_it_did(tmp_path):
    live = load_run(LIVE)
    sim = simulate_like(live, CLUSTER, tmp_path)
    assert len(sim.requests) == len(live.requests)  # the same send times
    live_first, sim_first = live.decisions[0].time_s - live.meta.load_start_s, sim.decisions[0].time_s - sim.meta.load_start_s
    assert sim_first == pytest.approx(live_first, abs=0.05)  # the live planner's phase (planner_start)
    assert planner_start(sim) == pytest.approx(planner_start(live), abs=0.05)
    live_changes, sim_changes = _changes(live), _changes(sim)
    assert live_changes  # the ramp of the window changes the plan
    for t, plan in live_changes:  # each live change is made by the simulator within one interval
        assert any(abs(t - u) <= live.meta.interval_s and plan == p for u, p in sim_changes), (t, plan, sim_changes)
    for u, p in sim_changes:
        assert any(abs(t - u) <= live.meta.interval_s and plan == p for t, plan in live_changes), (u, p, live_changes)


def test_p99_is_within_30_percent_of_the_live_run(comparison):
    assert comparison.within()["p99"], comparison.row()


def test_every_issue_13_bound_holds(comparison):
    assert all(comparison.within().values()), comparison.row()
