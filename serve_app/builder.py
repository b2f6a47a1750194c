"""Turn (AppSpec, plans) into a Ray Serve Application whose redeploys keep unchanged replicas.

The app graph is: Ingress → PlanController, plus one StageReplica deployment for every
(pipeline, stage, variant) that currently has replicas. Serve gives imperatively deployed
apps a random code version on every `serve.run`, which restarts every replica; we pin each
deployment's version to a hash of what it runs (package version, class, init arguments), so
a redeploy that changes only replica counts or `user_config` (batch size, routing) updates
replicas in place, and only a deployment whose model changed is restarted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ray import serve
from ray.serve.deployment import Application, Deployment

import ipa_energy
from ipa_energy.spec import Autoscaling, Plan
from serve_app.config import AppSpec

INGRESS = "Ingress"
CONTROLLER = "PlanController"


def deployment_name(pipeline: str, stage: str, variant: str) -> str:
    return f"{pipeline}.{stage}.{variant}"


@dataclass(frozen=True)
class StageDeployment:
    """Desired state of one stage-variant deployment."""

    pipeline: str
    stage: str
    variant: str
    replicas: int  # with autoscaling: the initial count (clamped into [min, max])
    batch_size: int
    batch_wait_timeout_ms: float
    autoscaling: Autoscaling | None = None

    @property
    def name(self) -> str:
        return deployment_name(self.pipeline, self.stage, self.variant)

    @property
    def replica_options(self) -> dict:
        """Serve's `num_replicas`, or its `autoscaling_config` (Serve then owns the count)."""
        if self.autoscaling is None:
            return {"num_replicas": self.replicas}
        return {"autoscaling_config": self.autoscaling.serve_config(self.replicas)}

    @property
    def user_config(self) -> dict:
        return {"max_batch_size": self.batch_size, "batch_wait_timeout_s": self.batch_wait_timeout_ms / 1000}


Layout = dict[str, StageDeployment]


def layout(plans: dict[str, Plan]) -> Layout:
    """The stage deployments that `plans` run: one per variant, every member of a mix."""
    out: Layout = {}
    for plan in plans.values():
        for stage, sp in plan.stages.items():
            for m in sp.members():
                d = StageDeployment(plan.pipeline, stage, m.variant, m.replicas, m.batch_size,
                                    m.batch_wait_timeout_ms, sp.autoscaling)
                out[d.name] = d
    return out


def union(current: Layout, new: Layout) -> Layout:
    """Make-before-break intermediate: everything of both, the larger replica count, new batching."""
    out = dict(current)
    for name, d in new.items():
        if name in out:
            d = StageDeployment(**{**d.__dict__, "replicas": max(d.replicas, out[name].replicas)})
        out[name] = d
    return out


def _pinned(deployment: Deployment, *init_args) -> Deployment:
    digest = hashlib.sha256(
        json.dumps([ipa_energy.__version__, deployment.func_or_class.__qualname__, init_args], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    # Serve removed `version` from its public options; `_internal=True` is how its own
    # builders still set it. tests/integration checks that replicas survive redeploys.
    return deployment.options(version=digest, _internal=True)


def routing_config(plans: dict[str, Plan], version: int) -> dict:
    return {"version": version, "plans": {name: p.model_dump(mode="json") for name, p in plans.items()}}


def build_app(spec: AppSpec, deployments: Layout, plans: dict[str, Plan], version: int) -> Application:
    """The application serving `deployments`, with the ingress routing by `plans`."""
    from serve_app.controller import PlanController
    from serve_app.ingress import Ingress
    from serve_app.stage import StageReplica

    spec_json = spec.model_dump(mode="json")
    stages = {}
    for d in deployments.values():
        variant = spec.pipeline(d.pipeline).stage(d.stage).variant(d.variant)
        args = (d.pipeline, d.stage, variant.model_dump(mode="json"), spec.energy.model_dump(mode="json"))
        stages[d.name] = _pinned(StageReplica, *args).options(
            name=d.name,
            **d.replica_options,
            user_config=d.user_config,
            max_ongoing_requests=max(8, 2 * d.batch_size),
            # a removed variant finishes what it holds (a saturated CPU drains slowly)
            graceful_shutdown_timeout_s=120,
            # A model that fails to load three times will not load on the fourth; fail
            # fast so the plan controller can roll back.
            max_constructor_retry_count=3,
            ray_actor_options=variant.resources.ray_actor_options(),
        ).bind(*args)
    controller = _pinned(PlanController, spec_json).options(name=CONTROLLER).bind(spec_json)
    # The ingress looks stage handles up by name (the set changes with the plan); binding
    # them here only makes them part of the application.
    return _pinned(Ingress, spec_json).options(
        name=INGRESS,
        num_replicas=spec.ingress_replicas,
        user_config=routing_config(plans, version),
        ray_actor_options={"num_cpus": spec.ingress_num_cpus},
    ).bind(spec_json, controller, stages)
