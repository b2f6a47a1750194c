"""A planner restarted from its journal goes on as if it had never stopped."""

import numpy as np
import pytest

from ipa_energy.messages import ApplyReport, ApplyStep
from ipa_energy.records import Decision
from ipa_energy.state import MemoryStore
from planner.journal import RESTARTED, PlannerJournal
from planner.loop import PlannerLoop
from planner.predictor import ReactivePredictor
from planner.profiles import profiles_from_store
from workloads import catalog
from workloads.profile_store import PROFILES_DIR, ProfileStore

HARDWARE = "cpu-amd-epyc-2c"
# a ramp, a plateau and a fall: grows, then scale-ins held while recommendations disagree
LOADS = [2, 2, 25, 25, 25, 3, 3, 3, 3, 3, 3, 3, 3]


@pytest.fixture(scope="module")
def setup():
    pipeline = catalog.pipeline("classify")
    return pipeline, profiles_from_store(ProfileStore(PROFILES_DIR), HARDWARE, pipeline)


class _Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _run(setup, restart_at: int | None):
    """Step LOADS (one interval each); at `restart_at` the loop is replaced by one restored from the journal."""
    pipeline, profiles = setup
    store, clock, applied = MemoryStore(), _Clock(), []
    journal = PlannerJournal(store, "app", "classify")

    def apply(plan):
        applied.append(plan)
        return ApplyReport(version=len(applied), steps=[ApplyStep(step="grow", seconds=12.0 + len(applied))])

    def new_loop(current):
        return PlannerLoop(pipeline, profiles, ReactivePredictor(), apply, interval_s=10, current=current, clock=clock,
                           record=journal.record)

    planner = new_loop(None)
    history = np.full(30, float(LOADS[0]))
    for i, rps in enumerate(LOADS):
        if i == restart_at:
            decisions, state, first = journal.load(planner.current, clock.t)
            planner = new_loop(planner.current)
            planner.restore(state, decisions, first)
        history = np.concatenate([history, np.full(10, float(rps))])
        planner.step(history)
        journal.save_state(planner.state())
        clock.t += 10
    return planner, applied, store


def _rows(decisions):
    return [d.model_dump(exclude={"solve_time_s"}) for d in decisions]


def test_a_restarted_planner_makes_the_decisions_it_would_have_made(setup):
    whole, applied, _ = _run(setup, restart_at=None)
    assert any(d.deferred for d in whole.decisions), "the trace must hold a scale-in for this test to mean anything"
    for restart_at in range(1, len(LOADS)):
        resumed, resumed_applied, store = _run(setup, restart_at)
        assert _rows(resumed.decisions) == _rows(whole.decisions), f"restart before step {restart_at}"
        assert [p.stages for p in resumed_applied] == [p.stages for p in applied]
        # one row per decision in the journal: nothing written twice, nothing lost
        assert len(store.keys("planner/app/classify/decision/")) == len(LOADS)


def test_a_restart_without_the_learnt_state_would_decide_otherwise(setup):
    """The state matters: a loop given only the log does not hold a scale-in for the recommendations
    of its last horizon, where the original did."""
    whole, _, _ = _run(setup, restart_at=None)
    held = next(i for i, d in enumerate(whole.decisions) if any("recommended within" in r for r in d.deferred))
    pipeline, profiles = setup
    forgetful = PlannerLoop(pipeline, profiles, ReactivePredictor(), lambda p: {}, interval_s=10,
                            current=whole.current, clock=lambda: whole.decisions[held].time_s)
    forgetful.restore(None, whole.decisions[:held])
    history = np.concatenate([np.full(30, 2.0), *(np.full(10, float(r)) for r in LOADS[:held + 1])])
    assert not any("recommended within" in r for r in forgetful.step(history).deferred)


def _decision(setup, stages, changed=True, apply_s=None) -> Decision:
    return Decision(time_s=100.0, observed_rps=1, predicted_rps=1, predictor="MaxPredictor", policy="ipa",
                    stages=stages, accuracy=0.7, predicted_power_w=None, predicted_j_per_request=None,
                    energy_method="tdp-estimate", feasible=True, solve_time_s=0.01, changed=changed, apply_s=apply_s)


def test_an_apply_the_restart_interrupted_is_closed_against_the_running_plan(setup):
    pipeline, _ = setup
    running = pipeline.default_plan()
    stages = {s: sp.model_dump(mode="json", include={"variant", "batch_size", "replicas", "mix"})
              for s, sp in running.stages.items()}
    other = {s: {**d, "replicas": d["replicas"] + 1} for s, d in stages.items()}
    for chosen, landed in ((stages, True), (other, False)):
        journal = PlannerJournal(MemoryStore(), "app", "classify")
        journal.record(0, _decision(setup, chosen))
        decisions, state, first = journal.load(running, now_s=130.0)
        assert state is None and first == 0
        (d,) = decisions
        assert d.changed is landed and d.error == RESTARTED and d.apply_s == pytest.approx(30.0)
        assert journal.load(running, now_s=500.0)[0][0].apply_s == pytest.approx(30.0)  # closed once, for good


def test_an_unreadable_row_is_left_out_and_clear_forgets_the_log(setup):
    store = MemoryStore()
    journal = PlannerJournal(store, "app", "classify")
    journal.record(0, _decision(setup, {}, changed=False, apply_s=0.0))
    store.put("planner/app/classify/decision/000000001", b"{not json")
    journal.save_state({"cold_starts": [12.0]})
    PlannerJournal(store, "app", "other").record(0, _decision(setup, {}, changed=False))
    decisions, state, first = journal.load(None)
    assert len(decisions) == 1 and state == {"cold_starts": [12.0]}
    assert first == 1  # the next decision is logged after the unreadable one, not over it
    assert journal.clear() == 3
    assert journal.load(None) == ([], None, 0)
    assert store.keys("planner/app/other/")  # another pipeline's planner keeps its log


def test_the_log_keeps_its_bound_in_memory_and_in_the_journal(setup, monkeypatch):
    import planner.loop as loop_module

    monkeypatch.setattr(loop_module, "DECISIONS_KEPT", 3)
    pipeline, profiles = setup
    store = MemoryStore()
    journal = PlannerJournal(store, "app", "classify", keep=3)
    clock = _Clock()
    planner = PlannerLoop(pipeline, profiles, ReactivePredictor(), lambda p: None, interval_s=10, clock=clock,
                          record=journal.record)
    for _ in range(5):
        planner.step(np.full(30, 2.0))
        clock.t += 10
    assert len(planner.decisions) == 3 and planner.dropped == 2
    assert [k.rsplit("/", 1)[1] for k in store.keys("planner/app/classify/decision/")] == ["000000002", "000000003",
                                                                                         "000000004"]
    decisions, _, first = journal.load(planner.current)
    assert first == 2 and [d.time_s for d in decisions] == [d.time_s for d in planner.decisions]


def test_a_planner_killed_while_applying_is_closed_by_its_successor(setup):
    """The journal as it stood while a change was being applied: the successor closes that row."""
    pipeline, profiles = setup
    store, clock, snapshot = MemoryStore(), _Clock(), {}
    journal = PlannerJournal(store, "app", "classify")

    def apply(plan):  # the planner dies here: the journal is what it had written by now
        snapshot.update(store.data)
        return ApplyReport(version=1)

    planner = PlannerLoop(pipeline, profiles, ReactivePredictor(), apply, interval_s=10, clock=clock,
                          record=journal.record)
    d = planner.step(np.full(30, 2.0))
    assert d.changed
    died = MemoryStore()
    died.data.update(snapshot)
    clock.t += 40
    (row,), _, _ = PlannerJournal(died, "app", "classify").load(planner.current, clock.t)
    assert row.changed and row.error == RESTARTED and row.apply_s == pytest.approx(40.0)
