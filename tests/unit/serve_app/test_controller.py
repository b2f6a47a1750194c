"""The plan controller does not bring back an app that is being deleted."""

from types import SimpleNamespace

import pytest

from ipa_energy.errors import PlanApplyError
from serve_app import controller


def _status(app: str, state: str | None):
    apps = {} if state is None else {app: SimpleNamespace(status=SimpleNamespace(value=state))}
    return lambda: SimpleNamespace(applications=apps)


@pytest.mark.parametrize("state", ["DELETING", None])
def test_a_change_in_flight_does_not_redeploy_an_app_being_deleted(monkeypatch, state):
    deployed = []
    monkeypatch.setattr(controller.serve, "status", _status("ipa", state))
    monkeypatch.setattr(controller.serve, "run", lambda *a, **k: deployed.append(a))
    plan_controller = object.__new__(controller.PlanController.func_or_class)
    plan_controller.app_name = "ipa"
    with pytest.raises(PlanApplyError, match="being deleted"):
        plan_controller._deploy({}, None, timeout_s=1.0)
    assert deployed == []
