"""Turn (AppSpec, plans) into a Ray Serve Application whose redeploys keep unchanged replicas.

The app graph is: Ingress → PlanController, plus one StageReplica deployment for every stage
slot (serve_app.layout) that currently has replicas. Serve gives imperatively deployed apps a
random code version on every `serve.run`, which restarts every replica; we pin each
deployment's version to a hash of what it runs (package version, class, init arguments: the
stage and the variants its slot may run), so a redeploy that changes only replica counts or
`user_config` (variant, batch size, routing) updates replicas in place.
"""

from __future__ import annotations

import hashlib
import json

from ray.serve.deployment import Application, Deployment

import ipa_energy
from ipa_energy.messages import PlanState
from serve_app.config import AppSpec
from serve_app.constants import CONTROLLER, FAST_PATH_ENV, INGRESS, STAGE_SHUTDOWN_S
from serve_app.ingress import Ingress
from serve_app.layout import Layout
from serve_app.stage import StageReplica

__all__ = ["build_app", "routing_config"]


def _pinned(deployment: Deployment, *init_args) -> Deployment:
    digest = hashlib.sha256(
        json.dumps([ipa_energy.__version__, deployment.func_or_class.__qualname__, init_args], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    # Serve removed `version` from its public options; `_internal=True` is how its own
    # builders still set it. tests/integration checks that replicas survive redeploys.
    return deployment.options(version=digest, _internal=True)


def routing_config(state: PlanState) -> dict:
    """The ingress's `user_config`: converged plans and a pending change (the app's one source of truth)."""
    return state.model_dump(mode="json", exclude={"accuracy"})


def build_app(spec: AppSpec, deployments: Layout, state: PlanState, controller: Deployment) -> Application:
    """The application serving `deployments`, with the ingress routing by `state`.

    `controller` is the PlanController deployment (serve_app.controller): it is part of the
    app it redeploys, so it hands itself in rather than this module importing it.
    """
    spec_json = spec.model_dump(mode="json")
    stages = {}
    for d in deployments.values():
        stage = spec.pipeline(d.pipeline).stage(d.stage)
        # every variant of the slot's shape: the replicas switch among them in place
        variants = {v.name: v.model_dump(mode="json") for v in stage.variants
                    if spec.shape(d.pipeline, d.stage, v.name) == d.shape}
        variant = stage.variant(d.variant)
        args = (d.pipeline, d.stage, variants, spec.energy.model_dump(mode="json"), spec.warm_variants)
        stages[d.name] = _pinned(StageReplica, *args).options(
            name=d.name,
            **d.replica_options,
            user_config=d.user_config,
            max_ongoing_requests=max(8, 2 * d.batch_size),
            max_queued_requests=d.max_queued_requests,
            # a removed variant finishes what it holds (a saturated CPU drains slowly)
            graceful_shutdown_timeout_s=STAGE_SHUTDOWN_S,
            # A model that fails to load three times will not load on the fourth; fail
            # fast so the plan controller can roll back.
            max_constructor_retry_count=3,
            ray_actor_options={**variant.resources.ray_actor_options(), "runtime_env": {"env_vars": FAST_PATH_ENV}},
        ).bind(*args)
    plan_controller = _pinned(controller, spec_json).options(name=CONTROLLER).bind(spec_json)
    # The ingress looks stage handles up by name (the set changes with the plan); binding
    # them here only makes them part of the application.
    return _pinned(Ingress, spec_json).options(
        name=INGRESS,
        num_replicas=spec.ingress_replicas,
        user_config=routing_config(state),
        ray_actor_options={"num_cpus": spec.ingress_num_cpus, "runtime_env": {"env_vars": FAST_PATH_ENV}},
    ).bind(spec_json, plan_controller, stages)
