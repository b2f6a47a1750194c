"""The adaptation loop: every interval, observe → predict → solve → apply, and log it.

`PlannerLoop` is plain Python with its inputs injected (the arrival history, the apply
function, the clock), so the decision logic is tested without Ray; `planner.actor` runs
it as a detached actor against a live app. Decision rows carry IPA's adaptation-log fields
plus the predicted power and J/request (with the energy method of the profiles used).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict

import numpy as np

from ipa_energy.cluster import ClusterSupply
from ipa_energy.diff import diff_plans
from ipa_energy.records import Decision, StageObservation
from ipa_energy.spec import PipelineSpec, Plan
from planner.accuracy_bank import AccuracyBank
from planner.changes import Rent, SafeChanges, stage_replicas, starting_replicas, starting_seconds, worth_applying
from planner.checks import is_feasible, plan_model, stage_p99_ms
from planner.constants import HISTORY_S, MIN_LOAD_RPS, MIN_P99_CALLS, SURGE_WINDOW_S, SURGE_Z
from planner.correction import Corrections
from planner.optimizer import optimize
from planner.policies import check_policy
from planner.terms import Weights
from planner.trend import trend_rps

__all__ = ["DECISIONS_KEPT", "PlannerLoop"]

#: grows whose measured cold start the horizon keeps (the longest counts; an old outlier ages out)
_COLD_STARTS_KEPT = 3
#: decisions a loop keeps (about 28 hours at a 10 s interval): a planner serving for weeks does
#: not grow without bound; the oldest are dropped (from the journal too)
DECISIONS_KEPT = 10_000

logger = logging.getLogger(__name__)


class PlannerLoop(SafeChanges):
    def __init__(
        self,
        pipeline: PipelineSpec,
        profiles: Mapping,
        predictor,
        apply: Callable[[Plan], dict],
        *,
        policy: str = "ipa-energy",
        weights: Weights = Weights(),
        margin: float = 1.0,
        max_replicas: int = 4,
        interval_s: float = 10.0,
        energy_method: str = "tdp-estimate",
        current: Plan | None = None,
        clock: Callable[[], float] = time.time,
        supply: ClusterSupply | None = None,
        serving_cpu_s: float = 0.0,
        queueing: bool = True,
        record: Callable[[int, Decision], None] | None = None,
        optimize: Callable[..., Plan] | None = None,
    ):
        check_policy(pipeline, policy)  # a configuration error fails here, not every interval
        self.pipeline, self.profiles, self.predictor, self.apply = pipeline, profiles, predictor, apply
        self.policy, self.weights, self.margin, self.max_replicas = policy, weights, margin, max_replicas
        self.interval_s, self.energy_method, self.current, self.clock = interval_s, energy_method, current, clock
        self.supply, self.serving_cpu_s, self.queueing = supply, serving_cpu_s, queueing
        # A change takes effect once its new replicas answer, and must hold until the next one does:
        # the horizon is the interval plus a cold start, profiled on an idle host at first and
        # then as measured by the grows this loop made (on cores that were serving meanwhile).
        self.profiled_cold_start_s = max((p.cold_start_s or 0.0 for p in profiles.values()), default=0.0)
        self.cold_starts: deque[float] = deque(maxlen=_COLD_STARTS_KEPT)
        self._replicas_seen: set[str] = set()  # replicas whose own cold start is in cold_starts
        # (time, stage → replicas) the program recommended: a scale-in waits for them to agree
        self._recommended: deque[tuple[float, dict[str, int]]] = deque()
        self.decisions: list[Decision] = []
        self._started = clock()  # a plan given to start with has run since then, as far as this loop knows
        self.dropped = 0  # decisions dropped from the front of the log (DECISIONS_KEPT)
        self.corrections = Corrections()
        self._deferred: tuple | None = None  # an optional variant switch seen once, waiting for a second
        self._outside: deque[tuple[float, float]] = deque()  # (time, cores busy outside the stages) read each step
        # ipa-energy's accuracy budget over the requests served (Weights.accuracy_window_s)
        self.bank = AccuracyBank(weights, policy, interval_s)
        self._weights = weights  # this step's: the budget with what the bank adds
        self.rent = Rent(since=clock())  # what holding a grow has cost (SafeChanges._rent_before_grow)
        # called with (index in the log, decision) when a decision is logged and when its apply
        # ends: planner.journal keeps the log and what the loop learnt across a restart
        self.record = record
        # the program: planner.optimizer.optimize unless given (the simulator's scale mode solves
        # it on a grid of its inputs: sim.plancache)
        self.optimizer = optimize

    def state(self) -> dict:
        """What this loop has learnt beyond its decisions, as JSON (see :meth:`restore`)."""
        return {
            "cold_starts": list(self.cold_starts),
            "replicas_seen": sorted(self._replicas_seen),
            "recommended": [[t, r] for t, r in self._recommended],
            "factors": dict(self.corrections.factors),
            "host_factor": self.corrections.host,
            "deferred": [[s, [list(r) for r in routes]] for s, routes in self._deferred] if self._deferred else None,
            "accuracy_bank": self.accuracy_bank,
            "rent": asdict(self.rent),
        }

    def restore(self, state: Mapping | None, decisions: list[Decision], first_index: int = 0) -> None:
        """Go on from a log (whose first row has index `first_index`) and a :meth:`state` saved
        by an earlier incarnation of this loop."""
        self.decisions, self.dropped = list(decisions), first_index
        if not state:
            return
        self.cold_starts.extend(float(s) for s in state.get("cold_starts", ()))
        self._replicas_seen.update(state.get("replicas_seen", ()))
        self._recommended.extend((float(t), {k: int(n) for k, n in r.items()}) for t, r in state.get("recommended", ()))
        self.corrections.factors.update({v: float(f) for v, f in state.get("factors", {}).items()})
        self.corrections.host = float(state.get("host_factor", 1.0))
        self.bank.balance = float(state.get("accuracy_bank", 0.0))
        self.rent = Rent(**state["rent"]) if isinstance(state.get("rent"), Mapping) else Rent(since=self.clock())
        deferred = state.get("deferred")
        self._deferred = tuple((s, tuple((v, float(w)) for v, w in routes)) for s, routes in deferred) if deferred else None

    def _record(self, decision: Decision) -> None:
        """Hand the decision being made (the last of the log) to `record`."""
        if self.record is not None:
            try:
                self.record(self.dropped + len(self.decisions) - 1, decision)
            except Exception:  # the log in memory stays whole; only a restart would lose it
                logger.exception("planner: decision %s not recorded", decision.time_s)

    @property
    def cold_start_s(self) -> float:
        """Seconds from a change that starts replicas to their first answer: the longest of the
        last grows measured, or the profiled cold start while none is (or if it is longer)."""
        return max(self.profiled_cold_start_s, *self.cold_starts) if self.cold_starts else self.profiled_cold_start_s

    @property
    def horizon_s(self) -> float:
        return self.interval_s + self.cold_start_s

    def _background(self, observed: float) -> ClusterSupply | None:
        """The supply this step plans with: the cores busy outside the stages taken as the most
        they were at any step of the last horizon (the plan must hold that long), less the
        serving path at the observed load.

        Each reading covers a few seconds and moves with what happens on the node (a replica's
        cold start, the load generator, Ray's own work): planned at the last reading alone, a
        plan on the edge of the SLA passed at one step and not at the next, and the replicas
        went 2 → 1 → 2 at a steady 8 req/s (make demo, ipa-energy; the regrow's cold start on
        the busy cores cost a quarter of an interval's requests)."""
        if self.supply is None:
            return None
        now = self.clock()
        current = self.supply.outside_cores
        self._outside.append((now, current))
        while self._outside[0][0] < now - self.horizon_s:
            self._outside.popleft()
        top = max(c for _, c in self._outside)
        supply = self.supply
        if top > current > 0:  # each node's reading at the horizon's most too (planner.caps: the packing bound)
            supply = supply.model_copy(update={"nodes": tuple(
                n.model_copy(update={"outside_cores": n.outside_cores * top / current}) if n.outside_cores else n
                for n in supply.nodes)})
        return supply.with_background(observed * self.serving_cpu_s, top)

    def replica_cold_starts(self, reported: Mapping[str, float]) -> None:
        """Fold in the cold starts replicas reported themselves (replica id → s; each once):
        those of the opening deployment too, before this loop has grown anything."""
        for replica, seconds in reported.items():
            if replica not in self._replicas_seen and seconds and seconds > 0:
                self._replicas_seen.add(replica)
                self.cold_starts.append(float(seconds))

    def _measured(self, report, previous: Plan | None, plan: Plan) -> None:
        """Learn the cold start from a change that started replicas (a stage got more of them)."""
        seconds = starting_seconds(report) if previous is not None and starting_replicas(previous, plan) else None
        if seconds is not None and seconds > 0:
            self.cold_starts.append(seconds)

    def p99_window_s(self) -> int:
        """Seconds the running plan has run unchanged since its last change was applied (or since
        this loop started, for the plan it was given), up to HISTORY_S (what the arrivals book
        keeps); 0 before an interval has passed. The closed loop
        compares the model's p99 with the stage calls pooled over this window: one interval
        holds too few calls for a p99 at a few req/s (MIN_P99_CALLS)."""
        if self.current is None:
            return 0
        since = None
        for d in reversed(self.decisions):
            if d.changed:
                since = d.time_s + (d.apply_s if d.apply_s is not None else math.inf)
                break
        held = self.clock() - (self._started if since is None else since)
        return int(min(HISTORY_S, held)) if held >= self.interval_s else 0

    def _close_the_loop(self, stages: list[StageObservation], pooled: list[StageObservation] | None,
                        history: np.ndarray) -> tuple[dict, dict, dict, int | None]:
        """Compare what the running plan achieved with its model, and fold the last interval into
        the corrections.

        Returns (observed p99, predicted p99, factors, window s). The p99s are compared over the
        plan's window (:meth:`p99_window_s`; `pooled` holds the calls of that window, `stages`
        those of the last interval), at the load observed over it, with the profiles as the
        plan was made (corrected so far)."""
        if self.current is None or not stages:
            return {}, {}, self.corrections.update([], self.profiles), None
        settled = self.p99_window_s() > 0
        rows = pooled if pooled is not None and settled else stages
        by_stage: dict[str, StageObservation] = {}
        for o in rows:  # a mix: the member that served the most
            if o.p99_ms is not None and (o.stage not in by_stage or o.requests > by_stage[o.stage].requests):
                by_stage[o.stage] = o
        observed = {s: round(o.p99_ms, 3) for s, o in by_stage.items()}
        if not settled:
            # the interval saw a change being made: replicas starting on the same cores, traffic
            # moving between variants; neither the old plan's model nor the new one's describes it
            return observed, {}, self.corrections.logged(), None
        seconds = max((o.seconds for o in rows), default=int(self.interval_s))  # the window the rows cover
        load = float(np.mean(history[-seconds:])) if len(history) else 0.0
        # a stage the model says cannot keep up at this load has no finite p99 to compare: left out
        predicted = {s: round(v, 3) for s, v in stage_p99_ms(
            self.pipeline, self.current, self.corrections.apply(self.profiles), load).items()
            if s in observed and by_stage[s].requests >= MIN_P99_CALLS and math.isfinite(v)}
        factors = self.corrections.update(stages, self.profiles, stretch=plan_model(self.current).stretch)
        return observed, predicted, factors, seconds

    def _solve(self, profiles: Mapping, load: float, supply: ClusterSupply | None, fill: float,
               replicas: dict[str, int] | None = None) -> Plan:
        """The program's plan for `load` with this loop's policy, weights and running plan (stage
        replicas fixed where `replicas` says): the optimizer given, else planner.optimizer.optimize."""
        return (self.optimizer or optimize)(
            self.pipeline, profiles, load, policy=self.policy, weights=self._weights, margin=self.margin,
            max_replicas=self.max_replicas, current=self.current, queueing=self.queueing, supply=supply,
            serving_cpu_s=self.serving_cpu_s, fill_rps=fill, replicas=replicas)

    @property
    def accuracy_bank(self) -> float:
        """The accuracy × requests ipa-energy's budget has left unspent (planner.accuracy_bank)."""
        return self.bank.balance

    def _account(self, history: np.ndarray) -> None:
        """Bank what the requests since the last step left of the accuracy budget: they were
        served by the running plan, where IPA's plan at the load was as accurate as the last
        decision's `reference_accuracy`; and, while a change it made started replicas, by its
        bridge, counted against the same reference: a bridge is what the users saw, and a lean
        plan's is deeper (make demo: resnet101 × 1 bridged a grow with resnet18, 7.6 points
        below, for 109 requests; IPA's own run, on 2 replicas already, with resnet50)."""
        last = self.decisions[-1] if self.decisions else None
        if last is None or last.reference_accuracy is None or self.current is None:
            return
        seconds = min(len(history), int(round(self.clock() - last.time_s)))
        bridge = None
        if last.bridge_accuracy is not None and last.apply_s is not None:
            bridge = (last.apply_s, last.reference_accuracy - last.bridge_accuracy)
        self.bank.account(history, seconds, last.reference_accuracy - self.pipeline.accuracy(self.current), bridge)

    def surging(self, history_rps: np.ndarray) -> bool:
        """Whether arrivals since the last step outgrow the load the running plan was made for.

        Checked every second between intervals (planner.actor): the last `SURGE_WINDOW_S`
        seconds, all after the last step finished, hold more arrivals than a Poisson stream at
        the planned rate would by chance (`SURGE_Z` standard deviations). Then the next step
        comes at once instead of up to an interval later: a ramp costs the SLA until the
        replicas it needs have started, and each second of it counts."""
        last = self.decisions[-1] if self.decisions else None
        if self.current is None or last is None or last.apply_s is None and last.changed:
            return False  # nothing planned yet, or a change still being applied
        h = np.asarray(history_rps, dtype=float)
        if len(h) < SURGE_WINDOW_S or self.clock() - (last.time_s + (last.apply_s or 0.0)) < SURGE_WINDOW_S:
            return False
        expected = max(last.planned_rps or last.predicted_rps, MIN_LOAD_RPS) * SURGE_WINDOW_S
        return float(h[-SURGE_WINDOW_S:].sum()) > expected + SURGE_Z * math.sqrt(expected)

    def step(self, history_rps: np.ndarray, stages: list[StageObservation] | None = None, *,
             trigger: str = "interval", pooled: list[StageObservation] | None = None) -> Decision:
        """One interval: `history_rps` is per-second arrivals, most recent last; `stages` what
        each stage variant achieved over the last interval (the closed loop; None: none known);
        `pooled` the same over the last :meth:`p99_window_s` seconds, read just before (None:
        p99s are compared over the last interval only).
        `trigger` "surge": a step ahead of the interval (see `surging`); its window overlaps the
        last step's, so it teaches the closed loop nothing."""
        history = np.asarray(history_rps, dtype=float)
        recent = history[-int(self.interval_s):] if len(history) else history
        observed = float(recent.mean()) if len(recent) else 0.0
        floor = float(recent.max()) if len(recent) else 0.0
        predicted = float(self.predictor.predict(history)) if len(history) else 0.0
        if not math.isfinite(predicted) or predicted < 0:
            predicted = observed
        if len(recent) and floor == 0.0:
            # no arrival in a whole interval: a model trained on live traffic has nothing to
            # forecast from (the LSTM's bias alone says ~4 req/s); follow the load down now
            predicted = 0.0
        planned = max(predicted, floor, trend_rps(history, self.horizon_s))
        if trigger == "interval":
            observed_p99, predicted_p99, factors, p99_window = self._close_the_loop(stages or [], pooled, history)
        else:
            observed_p99, predicted_p99, factors, p99_window = {}, {}, self.corrections.logged(), None
        profiles = self.corrections.apply(self.profiles)
        # what the node spent outside the stages beyond the serving path the program models
        # (Ray's daemons, a co-located load generator) is not the plan's to use
        supply = self._background(observed)
        load, fill = max(planned, MIN_LOAD_RPS), max(observed, MIN_LOAD_RPS)
        self._account(history)
        self._weights = self.bank.weights_for(load)
        plan = self._solve(profiles, load, supply, fill)
        reference = plan.objective.get("reference_accuracy")
        # A variant switch rebuilds models in the running replicas, on the cores that serve (2-3 s
        # on a busy 2-core host): one the running plan does not need must be chosen twice in a
        # row, so a load estimate that wavers between two variants does not switch back and forth.
        self._recommended.append((self.clock(), stage_replicas(plan)))
        while self._recommended and self._recommended[0][0] < self.clock() - max(2 * self.horizon_s, HISTORY_S):
            self._recommended.popleft()
        # what the running replicas would carry a grow with: solved once, for the rent and the apply
        wanted, bridge = plan, self._bridge(plan, history, observed, profiles, supply, fill)
        plan, rented, bought = self._rent_before_grow(plan, bridge, load, profiles, supply, fill)
        # a grow bought after renting was deliberated over intervals already: no optional-switch hold
        optional = () if bought else self._optional_switch(plan, load, profiles, supply, fill)
        deferred = []
        if optional and optional != self._deferred:
            deferred = [f"{s}: {dict(routes)}" for s, routes in optional]
            plan = self.current
        elif deferred := self._held_scale_in(plan, history, profiles, supply, fill):
            if self.serves(self.current, load, profiles, supply, fill):
                plan = self.current
            else:  # a change is needed, but not a shrink the load may outgrow: keep those replicas
                running = stage_replicas(self.current)
                keep = {s: max(n, running.get(s, 0)) for s, n in stage_replicas(plan).items()}
                kept = self._solve(profiles, load, supply, fill, keep)
                if is_feasible(kept):
                    plan = kept
                else:
                    deferred = []
        # a switch seen now counts as seen once, whichever hold kept it back
        self._deferred = optional if deferred else None
        deferred = rented + deferred
        changes = [str(c) for c in diff_plans(self.current, plan) if worth_applying(c)] if self.current else ["initial plan"]
        decision = Decision(
            time_s=self.clock(), observed_rps=observed, predicted_rps=predicted, planned_rps=planned,
            floor_rps=floor, horizon_s=self.horizon_s,
            background_cores=round(supply.background_cores, 4) if supply is not None else None,
            predictor=type(self.predictor).__name__, policy=self.policy,
            stages={s: sp.model_dump(mode="json", include={"variant", "batch_size", "replicas", "mix"})
                    for s, sp in plan.stages.items()},
            accuracy=self.pipeline.accuracy(plan), predicted_power_w=plan.predicted_power_w,
            predicted_j_per_request=plan.predicted_j_per_request, energy_method=self.energy_method,
            feasible=is_feasible(plan), solve_time_s=plan.solve_time_s or 0.0, changed=False,
            observed_p99_ms=observed_p99, p99_window_s=p99_window, predicted_p99_ms=predicted_p99, corrections=factors,
            deferred=deferred,
            trigger=trigger, reference_accuracy=reference,
            accuracy_allowance=self._weights.accuracy_budget if self.bank.active else None,
        )
        self.decisions.append(decision)  # visible while the change is being applied
        if len(self.decisions) > DECISIONS_KEPT:
            del self.decisions[0]
            self.dropped += 1
        stage_changes = [c for c in changes if c != "initial plan"]
        if stage_changes or self.current is None:
            decision.changed, decision.changes = True, changes
        self._record(decision)  # as it is while being applied: a restart closes it (planner.journal)
        if decision.changed:
            start = self.clock()
            try:
                if plan is not wanted:  # a hold changed it
                    bridge = self._bridge(plan, history, observed, profiles, supply, fill)
                if bridge is not None:
                    decision.bridge = {s: sp.model_dump(mode="json", include={"variant", "batch_size", "replicas"})
                                       for s, sp in bridge.stages.items()}
                    decision.bridge_accuracy = self.pipeline.accuracy(bridge)
                    decision.bridge_reference_accuracy = bridge.objective.get("reference_accuracy")
                    self.apply(bridge)
                    self.current = bridge
                report = self.apply(plan)
                self._measured(report, self.current, plan)
                if self.current is not None and starting_replicas(self.current, plan):
                    self.rent.clear()  # the grow is made: a later one rents afresh
                self.current = plan
            except Exception as e:  # serving goes on with the last plan; try again next interval
                decision.changed = False
                decision.error = f"{type(e).__name__}: {e}"
                logger.warning("planner: plan not applied: %s", e)
            decision.apply_s = self.clock() - start
            self._record(decision)
        return decision
