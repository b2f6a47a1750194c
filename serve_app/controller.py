"""PlanController: the one place that changes the running application.

A deployment of the app itself (one replica, one request at a time, so plan changes never
interleave). It reads the current plans from the ingress, walks the make-before-break steps
of `serve_app.rollout`, redeploying the app with pinned versions (see `serve_app.builder`)
and waiting for each step to converge; if a step fails it returns to the old plans.
"""

from __future__ import annotations

import logging
import time

import ray
from ray import serve
from ray.serve import metrics
from ray.serve.context import _get_global_client

from ipa_energy.diff import diff_plans
from ipa_energy.errors import PlanApplyError, PlanRejected, SpecError
from ipa_energy.messages import ApplyReport, ApplyStep, PendingChange, PlanState
from ipa_energy.spec import Plan
from serve_app.builder import build_app
from serve_app.config import AppSpec
from serve_app.constants import CONTROLLER, CONVERGE_POLL_S, INGRESS, SWITCH_POLL_S
from serve_app.admission import cluster_totals, replica_memory_mb, shortfalls
from serve_app.arrivals import arrivals_actor
from serve_app.layout import Layout, layout, union
from serve_app.rollout import Step, rollout

__all__ = ["PlanController", "settled", "wait_converged", "wait_switched"]

logger = logging.getLogger("ray.serve")

BAD_STATES = {"DEPLOY_FAILED", "UNHEALTHY"}
# Serve reports an autoscaled deployment UPSCALING/DOWNSCALING while it follows the load.
AUTOSCALING_STATES = {"HEALTHY", "UPSCALING", "DOWNSCALING"}


def settled(want: int | tuple[int, int], status: str, replica_states: dict[str, int]) -> bool:
    """Whether one deployment runs what is wanted: exactly `want` replicas, all RUNNING and
    HEALTHY; or, for an autoscaled one (`want` = (min, max)), any RUNNING count in [min, max]
    (replicas Serve is adding or removing meanwhile do not hold the plan change up)."""
    if isinstance(want, tuple):
        lo, hi = want
        return status in AUTOSCALING_STATES and lo <= replica_states.get("RUNNING", 0) <= hi
    return status == "HEALTHY" and replica_states == {"RUNNING": want}


def wait_converged(app: str, deployments: Layout, ingress_replicas: int, timeout_s: float) -> None:
    """Block until the app runs exactly `deployments` (plus ingress and controller), all healthy."""
    want: dict[str, int | tuple[int, int]] = {
        name: (d.autoscaling.min_replicas, d.autoscaling.max_replicas) if d.autoscaling else d.replicas
        for name, d in deployments.items()
    } | {INGRESS: ingress_replicas, CONTROLLER: 1}
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(app)
        if status is not None:
            have = status.deployments
            failed = {n: d.message for n, d in have.items() if str(d.status.value) in BAD_STATES and n in want}
            if failed:
                raise PlanApplyError(f"deployments failed: {failed}")
            if set(have) == set(want) and all(
                settled(k, str(have[n].status.value), have[n].replica_states) for n, k in want.items()
            ):
                return
        if time.monotonic() > deadline:
            state = {n: (str(d.status.value), d.replica_states) for n, d in (status.deployments if status else {}).items()}
            raise PlanApplyError(f"app {app!r} did not converge within {timeout_s:.0f} s: {state}")
        time.sleep(CONVERGE_POLL_S)


def _running_replicas(app: str, names) -> dict[str, list[str]]:
    deployments = _get_global_client().get_serve_details()["applications"][app]["deployments"]
    return {n: [r["replica_id"] for r in deployments[n]["replicas"] if r["state"] == "RUNNING"] for n in names}


def wait_switched(app: str, deployments: Layout, timeout_s: float) -> None:
    """Block until every running replica of every slot in `deployments` serves the slot's variant.

    A replica switches variant in the background after Serve reconfigured it (serve_app.stage)
    and reports to the app's registry; one whose new variant failed to load raises
    PlanApplyError (the change rolls back: the replicas that did switch switch back in place)."""
    registry = arrivals_actor(app)
    deadline = time.monotonic() + timeout_s
    while True:
        running = _running_replicas(app, deployments)
        states = ray.get(registry.replicas.remote(list(deployments)), timeout=30)
        waiting = []
        for name, d in deployments.items():
            for replica in running[name]:
                state = states.get(name, {}).get(replica)
                if state and state.get("wanted") == d.variant and d.variant in state.get("failed", {}):
                    raise PlanApplyError(f"{name}: variant {d.variant} did not load on replica {replica}: "
                                         f"{state['failed'][d.variant]}")
                if not state or state.get("variant") != d.variant:
                    waiting.append(f"{name}/{replica}")
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise PlanApplyError(f"replicas did not switch variant within {timeout_s:.0f} s: {waiting}")
        time.sleep(SWITCH_POLL_S)


@serve.deployment(num_replicas=1, max_ongoing_requests=1, ray_actor_options={"num_cpus": 0})
class PlanController:
    def __init__(self, spec: dict):
        self.spec = AppSpec.model_validate(spec)
        self.app_name = serve.get_replica_context().app_name
        self._memory_mb = replica_memory_mb(self.spec)  # per variant, from this machine's profiles
        self._changes = metrics.Counter("ipa_energy_plan_changes", "Plan changes applied (converged; rollbacks not counted)",
                                        tag_keys=("pipeline", "policy"))

    def _route_prefix(self) -> str | None:
        details = _get_global_client().get_serve_details()
        return details.get("applications", {}).get(self.app_name, {}).get("route_prefix")

    def _deploy(self, deployments: Layout, state: PlanState, timeout_s: float) -> None:
        status = serve.status().applications.get(self.app_name)
        if status is None or str(status.status.value) == "DELETING":
            # serve.run would bring back an app its owner is deleting (the delete then never ends)
            raise PlanApplyError(f"app {self.app_name!r} is being deleted; plan change abandoned")
        app = build_app(self.spec, deployments, state, controller=PlanController)
        serve.run(app, name=self.app_name, route_prefix=self.route_prefix)
        wait_converged(self.app_name, deployments, self.spec.ingress_replicas, timeout_s)
        wait_switched(self.app_name, deployments, timeout_s)

    def _drain(self, deployments: list[str], timeout_s: float) -> None:
        """Wait until the ingress has no call in flight to `deployments` (queued ones included).

        Removing a deployment whose handle still holds queued calls would leave those calls
        unanswered. With several ingress replicas each is asked in turn (the handle spreads calls).
        """
        ingress = serve.get_deployment_handle(INGRESS, self.app_name)
        deadline = time.monotonic() + timeout_s
        clear = 0
        while clear < max(1, self.spec.ingress_replicas) * 2 and time.monotonic() < deadline:
            pending = ingress.in_flight_to.remote(deployments).result(timeout_s=30)
            clear = clear + 1 if pending == 0 else 0
            if pending:
                time.sleep(0.2)
        if clear == 0:
            logger.warning("calls to %s still in flight after %.0f s; removing them anyway", deployments, timeout_s)

    def apply(self, plans: list[dict], timeout_s: float = 300.0) -> dict:
        """Apply `plans` (one per pipeline to change); returns a dumped ApplyReport."""
        start = time.monotonic()
        state = PlanState.model_validate(serve.get_deployment_handle(INGRESS, self.app_name).current.remote().result())
        current, version = state.plans, state.version
        incoming = {}
        for raw in plans:
            plan = Plan.model_validate(raw)
            try:
                self.spec.pipeline(plan.pipeline).check_plan(plan)
            except KeyError:
                raise SpecError(f"unknown pipeline {plan.pipeline!r}") from None
            incoming[plan.pipeline] = plan
        new = current | incoming
        changes = [str(c) for name, plan in incoming.items() for c in diff_plans(current.get(name), plan)]
        if not changes and all(current.get(n) == p for n, p in incoming.items()):
            return ApplyReport(version=version).model_dump()
        shape = self.spec.shape
        running = layout(current, shape)
        missing = shortfalls(self.spec, union(running, layout(new, shape)), cluster_totals(), self._memory_mb, running)
        if missing:
            raise PlanRejected("plan does not fit the cluster; " + "; ".join(missing))

        self.route_prefix = self._route_prefix()
        since = time.time()

        def pending(step: Step, name: str | None = None) -> PlanState:
            change = PendingChange(version=version + 1, plans=incoming, step=name or step.name,
                                   routed=step.routing == new, since_s=since)
            return PlanState(version=version, plans=current, pending=change)

        steps_done = []
        try:
            steps = rollout(current, new, shape)
            for step in steps:
                t0 = time.monotonic()
                if step.name == "break":  # no call may still be on its way to what is removed
                    self._drain([n for n in running if n not in step.deployments], timeout_s)
                # The new plans are active once every replica they need has run: after "make"
                # (so from the switch on); an "apply" step starts replicas itself.
                converged = step.name in ("switch", "break") and step is steps[-1]
                self._deploy(step.deployments, PlanState(version=version + 1, plans=new) if converged else pending(step),
                             timeout_s)
                running = step.deployments
                steps_done.append(ApplyStep(step=step.name, seconds=round(time.monotonic() - t0, 3)))
                logger.info("plan v%d: step %s done in %.2f s", version + 1, step.name, time.monotonic() - t0)
            if not converged:
                self._deploy(running, PlanState(version=version + 1, plans=new), timeout_s)
        except Exception as e:
            logger.error("plan v%d failed (%s); returning to v%d", version + 1, e, version)
            routed_new = any(done.step in ("switch", "apply") for done in steps_done)
            # Traffic already on the new plan goes back make-before-break; otherwise the old
            # deployments still serve everything and whatever failed to start is just removed.
            back = rollout(new, current, shape) if routed_new else [Step("rollback", layout(current, shape), current)]
            try:
                for step in back:
                    done = step is back[-1]
                    self._deploy(step.deployments, PlanState(version=version, plans=current) if done
                                 else pending(step, f"rollback:{step.name}"), timeout_s)
            except Exception as rollback_error:  # report both; serving goes on with what runs
                raise PlanApplyError(f"{e}; and the rollback failed too: {rollback_error}") from e
            raise PlanApplyError(f"plan not applied, still on v{version}: {e}") from e
        for name, plan in incoming.items():
            if diff_plans(current.get(name), plan):
                self._changes.inc(tags={"pipeline": name, "policy": plan.policy})
        return ApplyReport(version=version + 1, changes=changes, steps=steps_done,
                           seconds=round(time.monotonic() - start, 3)).model_dump()
