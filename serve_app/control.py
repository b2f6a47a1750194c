"""Python API to deploy the app and change its plan (the planner and experiments use it)."""

from __future__ import annotations

from collections.abc import Iterable

from ray import serve
from ray.serve.handle import DeploymentHandle

from ipa_energy.spec import Plan
from serve_app.builder import CONTROLLER, INGRESS, build_app, layout
from serve_app.config import AppSpec

APP_NAME = "ipa"


def deploy(spec: AppSpec, plans: dict[str, Plan] | None = None, *, name: str = APP_NAME, route_prefix: str = "/") -> DeploymentHandle:
    """Start (or replace) the app on the connected Ray cluster and wait until it runs."""
    plans = spec.complete_plans(plans)
    return serve.run(build_app(spec, layout(plans), plans, version=1), name=name, route_prefix=route_prefix)


def apply_plan(plans: Plan | Iterable[Plan], *, app_name: str = APP_NAME, timeout_s: float = 300.0) -> dict:
    """Apply plans make-before-break; returns {version, changes, steps, seconds}.

    Raises SpecError for a plan that does not fit its pipeline and PlanApplyError when the
    change could not be made (the app then stays on its previous plan).
    """
    plans = [plans] if isinstance(plans, Plan) else list(plans)
    handle = serve.get_deployment_handle(CONTROLLER, app_name)
    response = handle.apply.remote([p.model_dump(mode="json") for p in plans], timeout_s)
    try:
        return response.result(timeout_s=timeout_s * 6 + 60)  # up to 3 steps, and 3 more to roll back
    except Exception as e:  # surface the controller's own error, not Ray's wrapper
        cause = getattr(e, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise


def current_plans(app_name: str = APP_NAME) -> tuple[int, dict[str, Plan]]:
    """(version, plans) the ingress routes by."""
    state = serve.get_deployment_handle(INGRESS, app_name).current.remote().result()
    return state["version"], {n: Plan.model_validate(p) for n, p in state["plans"].items()}
