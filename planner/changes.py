"""How the adaptation loop makes a change safely: what a change starts, and the holds on it.

A change that starts replicas waits for their cold start, under load, on the cores that
serve; one that removes replicas the load soon needs again pays that cold start in a ramp; a
variant switch rebuilds models in the running replicas. So the loop (planner.loop) holds a
scale-in until the recommendations agree (`_held_scale_in`), bridges a regrow by switching the
running replicas in place first (`_bridge`), holds ipa-energy's grows while their bridge
would cost more accuracy than not growing (`_rent_before_grow`), and makes an optional switch
only when it is chosen twice in a row (`_optional_switch`). :class:`SafeChanges` holds these as a mixin of
:class:`~planner.loop.PlannerLoop`, whose state they read; the functions are the plan
arithmetic they share with the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ipa_energy.cluster import ClusterSupply
from ipa_energy.diff import StageChange, diff_plans
from ipa_energy.messages import ApplyReport
from ipa_energy.spec import Plan
from planner.caps import capacities, capacity_terms, fill_factor
from planner.checks import check_plan, is_feasible
from planner.constants import HISTORY_S, MIN_LOAD_RPS, STARTING_REPLICA_CORES, WAIT_HYSTERESIS
from planner.policies import restrictions
from planner.trend import trend_rps

__all__ = ["Rent", "SafeChanges", "during_cold_start", "stage_replicas", "starting_replicas", "starting_seconds",
           "worth_applying"]

#: apply steps that start replicas (serve_app.rollout): how long they took is a cold start under load
_STARTING_STEPS = ("grow", "make", "apply")


def stage_replicas(plan: Plan) -> dict[str, int]:
    """stage → replicas the plan runs for it (a mix's members together)."""
    return {s: sum(m.replicas for m in sp.members()) for s, sp in plan.stages.items()}


def starting_replicas(old: Plan, new: Plan) -> int:
    """How many replicas `new` starts beyond `old` (each a process cold-starting on a node; 0: a
    change that starts none)."""
    before = stage_replicas(old)
    return sum(max(0, n - before.get(s, 0)) for s, n in stage_replicas(new).items())


def during_cold_start(supply: ClusterSupply | None, starting: int) -> ClusterSupply | None:
    """`supply` while `starting` replicas cold-start: each takes a core (STARTING_REPLICA_CORES)
    from what the running replicas have (never more than the cluster has)."""
    if supply is None or starting <= 0:
        return supply
    busy = min(supply.cores, supply.background_cores + starting * STARTING_REPLICA_CORES)
    return supply.model_copy(update={"background_cores": busy})


def starting_seconds(report) -> float | None:
    """The longest replica-starting step of an apply report, if any (None: not an ApplyReport)."""
    if not isinstance(report, ApplyReport):
        return None
    return max((st.seconds for st in report.steps if st.step in _STARTING_STEPS), default=None)


def worth_applying(change: StageChange) -> bool:
    """The batch wait follows the load ((b-1)/λ), so it moves every interval; only large moves count."""
    if change.field != "batch_wait_timeout_ms" or not change.old or not change.new:
        return True
    return max(change.old, change.new) / min(change.old, change.new) > WAIT_HYSTERESIS


@dataclass
class Rent:
    """What ipa-energy has paid, in accuracy × seconds against the program's plan, by holding a
    grow (SafeChanges._rent_before_grow): `paid` so far, at `rate` a second since `since`
    (rate 0: no grow held now)."""

    paid: float = 0.0
    rate: float = 0.0
    since: float = 0.0

    def charge(self, now: float) -> None:
        """Add the seconds held since the last charge (a surge step between intervals pays only those)."""
        self.paid += self.rate * max(0.0, now - self.since)
        self.since = now

    def clear(self) -> None:
        self.paid = self.rate = 0.0


class SafeChanges:
    """The holds and the bridge of :class:`~planner.loop.PlannerLoop` (a mixin: it reads the
    loop's pipeline, policy, running plan, recommendations and cold starts)."""

    def _held_scale_in(self, plan: Plan, history: np.ndarray, profiles: Mapping, supply: ClusterSupply | None,
                       fill: float) -> list[str]:
        """The stages `plan` would give fewer replicas than the running plan while the program
        recommended more for them within the last horizon, or while `plan` would not serve the
        busiest second of the predictor's window (empty: nothing to hold).

        A replica removed and then needed again costs a cold start under load, so a scale-in
        waits until every recommendation of a horizon (the time a regrow would take to land)
        agrees with it: the stabilisation window of Kubernetes' HPA and Serve's downscale delay,
        sized by this host's measured cold start instead of a constant. Nor does a shrink come
        while the smaller plan would not serve the busiest second of the last `HISTORY_S` (the
        window the predictor reads): a quiet spell of a bursty trace is not yet a lower load
        (make bench, ipa: 2 → 1 replicas after 20 s at 1.5 req/s, then a regrow's cold start
        in the ramp ten seconds later cost 7 % of the run's requests). The caller keeps the
        running plan while it serves the load, and otherwise plans with these stages' replicas
        kept (a shrink the load outgrows within a horizon would cost a regrow).

        A stage with no variant to bridge a regrow with (`_bridgeable`: fa2-low and fa2-high, or
        a stage of one variant) waits for every recommendation of the predictor's window
        (`HISTORY_S`) instead: there the replicas left carry a regrow's cold start alone (make
        bench, fa2-high: 2 → 1 replicas at 1.6 req/s ten seconds before a 2 → 7 req/s ramp; the
        regrow took 13–16 s on the busy cores, and 12–14 % of the run's requests missed)."""
        if self.current is None:
            return []
        running, new = stage_replicas(self.current), stage_replicas(plan)
        shrinking = [s for s, n in new.items() if n < running.get(s, 0)]
        if not shrinking:
            return []
        held = []
        for stage in shrinking:
            n, window = new[stage], self.horizon_s if self._bridgeable(stage) else max(self.horizon_s, HISTORY_S)
            most = max((r.get(stage, 0) for t, r in self._recommended if t >= self.clock() - window), default=n)
            if most > n:
                held.append(f"{stage}: {running[stage]} → {n} replicas ({most} recommended within {window:.0f} s)")
        if not held and len(history):
            peak = float(np.max(history[-HISTORY_S:]))
            if peak > (plan.predicted_load_rps or 0.0) and not self.serves(plan, peak, profiles, supply, fill):
                held = [f"{s}: {running[s]} → {new[s]} replicas (would not serve the busiest second of the last "
                        f"{HISTORY_S} s, {peak:.0f} req/s)" for s in shrinking]
        return held

    def _bridgeable(self, stage: str) -> bool:
        """Whether the policy lets `stage` switch the running replicas in place to another variant
        (one of the running variant's resource shape: what `_bridge` may do while a regrow starts)."""
        sp = self.current.stages.get(stage) if self.current is not None else None
        if sp is None or sp.mix is not None:
            return sp is not None  # a mix (InfAdapter) moves traffic between variants that run already
        # InfAdapter's own program (planner.infadapter) restricts no variant
        allowed = None if self.policy == "infadapter" else restrictions(self.pipeline, self.policy, self.weights, None)[1]
        spec = next(st for st in self.pipeline.stages if st.name == stage)
        if sp.variant not in {v.name for v in spec.variants}:
            return True  # a plan from outside the catalog (a journal of an older one): the usual hold
        shape = spec.variant(sp.variant).resources
        return any(v.name != sp.variant and v.resources == shape and (allowed is None or v.name in allowed[stage])
                   for v in spec.variants)

    def serves(self, plan: Plan, load: float, profiles: Mapping, supply: ClusterSupply | None, fill: float) -> bool:
        """Whether `plan` serves `load` within the SLA and the cluster, under any utilisation cap
        the program may plan with at that load (the cap a running plan was made under fitted the
        load of its day; a higher load may take a higher one: its stretch then decides)."""
        for cap in capacities(supply, load, self.queueing, self.serving_cpu_s, fill_factor(fill, load)):
            terms = capacity_terms(cap, supply, self.serving_cpu_s)
            candidate = plan.model_copy(update={"objective": {**plan.objective, **terms}})
            if not check_plan(self.pipeline, candidate, profiles, load, max_replicas=self.max_replicas,
                              check_predictions=False):
                return True
        return False

    def _bridge(self, plan: Plan, history: np.ndarray, observed: float, profiles: Mapping,
                supply: ClusterSupply | None, fill: float) -> Plan | None:
        """What the running replicas serve while the ones `plan` adds cold-start (None: nothing).

        A change that starts replicas takes a cold start (tens of seconds on busy cores) before
        they answer; meanwhile the running replicas carry the load, which at a ramp is already
        past what the running plan serves. So when the running plan does not serve the load
        expected by the end of the cold start, the replicas that exist first switch in place
        (a model rebuild: seconds) to the plan the program makes for that load with their counts
        fixed, and the change follows. Only in-place switches qualify: every variant changed
        keeps its stage's resource shape (serve_app.layout: one slot, the same replicas), and
        no stage runs a mix."""
        if self.current is None or any(sp.mix is not None for p in (plan, self.current) for sp in p.stages.values()):
            return None
        starting = starting_replicas(self.current, plan)
        if not starting:
            return None
        load = max(observed, min(plan.predicted_load_rps or observed, trend_rps(history, self.cold_start_s)), MIN_LOAD_RPS)
        # the starting replicas' cold starts take cores from the running ones (make demo: a grow
        # of resnet152 1 → 2 at 5 req/s took 12 s, and the running replica, served on paper at
        # 60 % of its profiled rate, shed 2 % of the run's requests meanwhile)
        supply = during_cold_start(supply, starting)
        if self.serves(self.current, load, profiles, supply, fill):
            return None  # the running plan copes until the new replicas answer
        bridge = self._solve(profiles, load, supply, fill, stage_replicas(self.current))
        if not is_feasible(bridge) or not diff_plans(self.current, bridge) or not self._in_place(bridge):
            return None  # (a new slot: replicas to start, no quicker than the change itself)
        return bridge

    def _in_place(self, plan: Plan) -> bool:
        """Whether the running replicas can switch to `plan` in place: every stage's variant keeps
        the running one's resource shape (serve_app.layout: one slot, the same replicas)."""
        return all(st.variant(self.current.stages[st.name].variant).resources
                   == st.variant(plan.stages[st.name].variant).resources for st in self.pipeline.stages)

    def _rent_before_grow(self, plan: Plan, bridge: Plan | None, load: float, profiles: Mapping,
                          supply: ClusterSupply | None, fill: float) -> tuple[Plan, list[str], bool]:
        """ipa-energy: `plan` (whose grow `bridge` would carry, :meth:`_bridge`), or, while a grow it
        makes would cost more accuracy in its bridge than the running replicas give up by serving
        the load without it, their own plan for the load;
        with what was held back, and whether a grow rented for goes ahead now (bought).

        A grow's bridge is paid at once: for the cold start, the running replicas serve the
        load on the cores the starting ones leave, with the variant they can (make demo:
        resnet101 × 1 → 2 at 10 req/s bridged with resnet18, 7.6 points below IPA's plan, for
        16 s and 109 requests, more than the run's whole budget). Not growing is paid as it
        goes: the running replicas switch in place to the plan the program makes with their
        counts fixed, less accurate than `plan` by a little every second (resnet50 × 1, 1.24
        points below resnet101 × 2). That is rent or buy, both priced against `plan` in
        accuracy × seconds (the load scales both, so it drops out): buying costs (accuracy of
        `plan` − the bridge's) × the cold start, renting (accuracy of `plan` − the replicas'
        own) × each second held. The loop rents while the rent paid since the grow was first
        wanted, with the coming interval's, stays within the price of buying, then buys: the
        ski-rental rule, which at a steady rate costs at most twice what the better choice in
        hindsight would have, and never pays for a grow whose load falls back meanwhile.
        A grow with no bridge (the running plan copes, or nothing can bridge it), or whose
        replicas' own plan is infeasible or needs a new slot, goes ahead, and the rent is
        cleared; so it is once a grow is applied (planner.loop)."""
        rent = self.rent
        rent.charge(self.clock())
        if self.policy != "ipa-energy" or self.current is None or not starting_replicas(self.current, plan):
            rent.clear()
            return plan, [], False
        if bridge is None:
            rent.clear()
            return plan, [], False
        own = self._solve(profiles, load, supply, fill, stage_replicas(self.current))
        if not is_feasible(own) or not self._in_place(own):
            rent.clear()
            return plan, [], False
        accuracy = self.pipeline.accuracy
        price = (accuracy(plan) - accuracy(bridge)) * self.cold_start_s
        rate = max(accuracy(plan) - accuracy(own), 0.0)
        if rent.paid + rate * self.interval_s > price:
            rent.rate = 0.0  # buy: the grow goes ahead, bridged; the rent is cleared once it is applied
            return plan, [], rent.paid > 0
        running, grown = stage_replicas(self.current), stage_replicas(plan)
        held = [f"{s}: grow to {plan.stages[s].variant} × {n} held (its bridge would give up {price:.3f} accuracy·s; "
                f"the running replicas' own plan {rate:.4f} a second, {rent.paid:.3f} paid so far)"
                for s, n in grown.items() if n > running.get(s, 0)]
        rent.rate = rate
        return own, held, False

    def _optional_switch(self, plan: Plan, load: float, profiles: Mapping, supply: ClusterSupply | None,
                         fill: float) -> tuple:
        """The variant changes of `plan` the running plan does not need, as (stage, routes) pairs:
        empty when nothing switches variant, or when the running plan no longer serves `load`
        within the SLA and the cluster (its own model) and the switch is forced."""
        if self.current is None:
            return ()
        moved = tuple((s, sp.routes()) for s, sp in plan.stages.items()
                      if s in self.current.stages and self.current.stages[s].routes() != sp.routes())
        if not moved or not self.serves(self.current, load, profiles, supply, fill):
            return ()
        return moved
