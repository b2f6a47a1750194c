"""The planner as a detached Ray actor driving a running app (one per app and pipeline).

It reads the per-second arrivals the ingress replicas count, summed over all of them by the
app's arrivals actor (`serve_app.arrivals`), and runs `PlannerLoop` every interval;
plans go through `serve_app.control.apply_plan` (make-before-break). Ray restarts the actor
if it dies (max_restarts=-1); the app keeps serving with the last plan meanwhile, and the
restarted actor picks the running plan up from the ingress, and its decision log and what the
loop had learnt from the journal (planner.journal, in the GCS): no decision is lost or repeated.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import ray

from ipa_energy import RAY_NAMESPACE
from ipa_energy.energy import join_methods
from ipa_energy.records import StageObservation
from ipa_energy.state import RayStore
from planner.capacity import supply_from_ray
from planner.constants import SERVING_CPU_S
from planner.journal import PlannerJournal
from serve_app.arrivals import arrivals_actor

__all__ = ["PlannerActor", "start_planner", "stop_planner"]

logger = logging.getLogger(__name__)

#: how often the planner reads the arrivals between intervals, looking for a surge (s)
SURGE_POLL_S = 1.0
#: how long `stop` waits for a step in progress: an apply (replicas cold-starting on busy cores,
#: tens of seconds) and, if it fails, its rollback (s)
STOP_WAIT_S = 300.0
#: how long a restarted planner waits for a change its predecessor started to settle (s)
RESUME_WAIT_S = 300.0


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)
class PlannerActor:
    def __init__(self, app_name: str, pipeline: str, *, tier: str = "mini", policy: str = "ipa-energy",
                 interval_s: float = 10.0, predictor: str = "lstm", hardware: str | None = None,
                 max_replicas: int = 4, margin: float = 1.0, history_from_s: float | None = None,
                 capacity: bool = True, weights: dict | None = None):
        from planner.loop import PlannerLoop
        from planner.predictor import get_predictor
        from planner.profiles import profiles_from_store
        from planner.terms import Weights
        from serve_app import control
        from workloads import catalog
        from workloads.profile_store import PROFILES_DIR, ProfileStore, planning_hardware

        spec = catalog.pipeline(pipeline, tier)
        store = ProfileStore(PROFILES_DIR)
        hardware, warning = planning_hardware(store, hardware)  # e.g. another CPU model: the shipped class
        if warning:
            logger.warning(warning)
        profiles = profiles_from_store(store, hardware, spec)
        methods = {p.energy_method for p in profiles.values()}
        self.journal = PlannerJournal(RayStore(), app_name, pipeline)
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if not restarted:
            self.journal.clear()  # a new planner of this app and pipeline: a new log
        plans = self._settled_plans(control, app_name) if restarted else control.current_plans(app_name)[1]
        self.pipeline, self.interval_s = pipeline, interval_s
        # arrivals before this time are not this run's (experiments run policies back to back)
        self.history_from_s = history_from_s
        self.app_name = app_name
        self.loop = PlannerLoop(
            spec, profiles, get_predictor(predictor), lambda plan: control.apply_plan(plan, app_name=app_name),
            policy=policy, weights=Weights.model_validate(weights or {}), max_replicas=max_replicas, margin=margin,
            interval_s=interval_s,
            energy_method=join_methods(methods) or "tdp-estimate", current=plans.get(pipeline),
            serving_cpu_s=SERVING_CPU_S if capacity else 0.0, record=self._journal,
        )
        if restarted:
            decisions, state, first = self.journal.load(plans.get(pipeline))
            self.loop.restore(state, decisions, first)
            logger.warning("planner of %s/%s restarted: %d decisions resumed", app_name, pipeline, len(decisions))
        self.capacity = capacity
        self._arrivals = None  # the app's arrivals actor, once looked up
        self._refresh_supply()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="planner")
        self._thread.start()

    def _journal(self, index: int, decision) -> None:
        """A decision and the loop's state as of it (a restart mid-apply resumes from both)."""
        self.journal.record(index, decision)
        self.journal.save_state(self.loop.state())

    @staticmethod
    def _settled_plans(control, app_name: str) -> dict:
        """The running plans once a change in progress (started before a restart) has settled."""
        deadline = time.monotonic() + RESUME_WAIT_S
        state = control.plan_state(app_name)
        while state.pending is not None and time.monotonic() < deadline:
            time.sleep(1.0)
            state = control.plan_state(app_name)
        return state.plans

    def _refresh_supply(self) -> None:
        """The cluster's physical cores and memory, read on every node (nodes come and go)."""
        if not self.capacity:
            return
        try:
            self.loop.supply = supply_from_ray()
        except Exception as e:  # keep planning with what was last known
            logger.warning("cluster supply not read (%s); keeping %s", e, self.loop.supply)

    def _history(self) -> np.ndarray:
        """Per-second arrivals summed over every ingress replica (this run's only)."""
        if self._arrivals is None:  # looked up again after a failure (the app may have been redeployed)
            self._arrivals = arrivals_actor(self.app_name)
        try:
            history = np.asarray(ray.get(self._arrivals.history.remote(self.pipeline), timeout=30), dtype=float)
        except Exception:
            self._arrivals = None
            raise
        if self.history_from_s is not None:
            keep = min(len(history), max(0, int(time.time() - self.history_from_s)))
            history = history[len(history) - keep:]
        return history

    def _run(self) -> None:
        # Intervals start on a fixed cadence: a plan change that took longer than an interval
        # (replicas starting on busy cores) is followed by a decision at once, not an interval later.
        # In between, the arrivals are read every second: a surge past the plan's load steps at once.
        due = time.monotonic() + self.interval_s
        while not self._stop.wait(min(SURGE_POLL_S, max(0.0, due - time.monotonic()))):
            between, stepping = time.monotonic() < due, False
            try:
                history = self._history()
                if between and not self.loop.surging(history):
                    continue
                stepping = True
                due = time.monotonic() + self.interval_s  # from this step's start, however long it takes
                self._refresh_supply()
                timed = ray.get(self._arrivals.stages.remote(self.pipeline, int(self.interval_s)), timeout=30)
                window = self.loop.p99_window_s()  # the running plan's calls, pooled for its p99
                pooled = ray.get(self._arrivals.stages.remote(self.pipeline, window), timeout=30) if window else None
                self.loop.replica_cold_starts(ray.get(self._arrivals.cold_starts.remote(f"{self.pipeline}."), timeout=30))
                stages = [StageObservation.model_validate(o) for o in timed]
                self.loop.step(history, stages, trigger="surge" if between else "interval",
                               pooled=[StageObservation.model_validate(o) for o in pooled] if pooled is not None else None)
            except Exception as e:  # a failed step is logged and retried; serving is unaffected
                if not stepping and between:  # a missed poll between intervals is retried in a second
                    logger.debug("planner: arrivals not read between intervals: %s", e)
                    continue
                due = max(due, time.monotonic() + SURGE_POLL_S)
                logger.exception("planner interval failed")

    def decisions(self) -> list[dict]:
        """The decision log, dumped (validate with ipa_energy.records.Decision)."""
        return [d.model_dump(mode="json") for d in self.loop.decisions]

    def stop(self, timeout_s: float = STOP_WAIT_S) -> bool:
        """Stop planning; a step in progress (a plan being applied) finishes first, so the app
        is not redeployed by a change still in flight after whoever stopped the planner goes
        on (to delete the app, or to start the next run). Returns whether the loop ended."""
        self._stop.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


def start_planner(app_name: str, pipeline: str, **options):
    """Start (or find) the planner of `pipeline` in `app_name`; returns its actor handle."""
    return PlannerActor.options(
        name=f"planner-{app_name}-{pipeline}", namespace=RAY_NAMESPACE, lifetime="detached", get_if_exists=True,
    ).remote(app_name, pipeline, **options)


def stop_planner(app_name: str, pipeline: str) -> None:
    """Stop the planner (a step in progress finishes first), kill it and clear its journal.

    A planner that Ray is restarting cannot take the call yet (ActorUnavailableError): it is
    asked again until it is back, up to RESUME_WAIT_S, and killed whatever happens, so it never
    goes on planning for the next user of the app (an experiment's next run, the next test)."""
    try:
        actor = ray.get_actor(f"planner-{app_name}-{pipeline}", namespace=RAY_NAMESPACE)
    except ValueError:
        return
    try:
        deadline = time.monotonic() + RESUME_WAIT_S
        while True:
            try:
                if not ray.get(actor.stop.remote()):
                    logger.warning("planner of %s/%s: a step still in progress after %.0f s; killed",
                                   app_name, pipeline, STOP_WAIT_S)
                break
            except ray.exceptions.ActorUnavailableError:  # restarting: ask again once it is back
                if time.monotonic() > deadline:
                    logger.warning("planner of %s/%s did not come back from a restart; killed", app_name, pipeline)
                    break
                time.sleep(1.0)
            except ray.exceptions.ActorDiedError:
                break
    finally:
        ray.kill(actor, no_restart=True)
        PlannerJournal(RayStore(), app_name, pipeline).clear()
