"""Python API to deploy the app and change its plan (the planner and experiments use it)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from ray import serve
from ray.serve.handle import DeploymentHandle

from ipa_energy.messages import ApplyReport, PlanState
from ipa_energy.spec import Plan
from serve_app.builder import build_app
from serve_app.config import AppSpec
from serve_app.constants import APP_NAME, CONTROLLER, INGRESS, NODE_ENV
from serve_app.controller import PlanController
from serve_app.layout import layout

__all__ = ["apply_plan", "current_plans", "deploy", "node_environment", "plan_state"]


def node_environment() -> dict[str, str]:
    """Put serve_app.constants.NODE_ENV into this process's environment, where not set already.

    Call it before `ray.init` starts a local cluster: the node's processes, Serve's HTTP proxy
    among them, inherit the environment of the process that starts it. Returns what applies.
    """
    for key, value in NODE_ENV.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in NODE_ENV}


def deploy(spec: AppSpec, plans: dict[str, Plan] | None = None, *, name: str = APP_NAME, route_prefix: str = "/") -> DeploymentHandle:
    """Start (or replace) the app on the connected Ray cluster and wait until it runs."""
    plans = spec.complete_plans(plans)
    return serve.run(build_app(spec, layout(plans, spec.shape), PlanState(version=1, plans=plans), controller=PlanController),
                     name=name, route_prefix=route_prefix)


def apply_plan(plans: Plan | Iterable[Plan], *, app_name: str = APP_NAME, timeout_s: float = 300.0) -> ApplyReport:
    """Apply plans make-before-break; returns what changed, the steps and how long they took.

    Raises SpecError for a plan that does not fit its pipeline and PlanApplyError when the
    change could not be made (the app then stays on its previous plan).
    """
    plans = [plans] if isinstance(plans, Plan) else list(plans)
    handle = serve.get_deployment_handle(CONTROLLER, app_name)
    response = handle.apply.remote([p.model_dump(mode="json") for p in plans], timeout_s)
    try:
        return ApplyReport.model_validate(response.result(timeout_s=timeout_s * 6 + 60))  # 3 steps, and 3 to roll back
    except Exception as e:  # surface the controller's own error, not Ray's wrapper
        cause = getattr(e, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise


def plan_state(app_name: str = APP_NAME) -> PlanState:
    """The converged plans and any change in progress, as the ingress holds them."""
    return PlanState.model_validate(serve.get_deployment_handle(INGRESS, app_name).current.remote().result())


def current_plans(app_name: str = APP_NAME) -> tuple[int, dict[str, Plan]]:
    """(version, plans) of the converged plans (a change in progress is in :func:`plan_state`)."""
    state = plan_state(app_name)
    return state.version, state.plans
