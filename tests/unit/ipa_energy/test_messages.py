"""The plan state: converged plans are active; a change in progress is shown apart and routes once switched."""

from ipa_energy.messages import PendingChange, PlanState
from ipa_energy.spec import Plan, StagePlan


def _plan(pipeline: str, variant: str) -> Plan:
    return Plan(pipeline=pipeline, stages={"s": StagePlan(variant=variant)})


def test_routing_follows_a_pending_change_only_once_it_is_routed():
    old = {"a": _plan("a", "small"), "b": _plan("b", "small")}
    change = PendingChange(version=4, plans={"a": _plan("a", "large")}, step="make", routed=False, since_s=1.0)
    state = PlanState(version=3, plans=old, pending=change)
    assert state.routing() == (3, old)
    switched = state.model_copy(update={"pending": change.model_copy(update={"step": "switch", "routed": True})})
    version, plans = switched.routing()
    assert version == 4 and plans["a"].stages["s"].variant == "large" and plans["b"] == old["b"]
    assert switched.version == 3 and switched.plans == old  # still not active: not converged


def test_plan_state_round_trips_as_the_ingress_config():
    state = PlanState(version=2, plans={"a": _plan("a", "x")},
                      pending=PendingChange(version=3, plans={"a": _plan("a", "y")}, step="apply", routed=True, since_s=5.0))
    assert PlanState.model_validate(state.model_dump(mode="json")) == state
