"""The fluid model's plan changes, make before break, and Serve's autoscaler (mixed into
:class:`sim.fluid.FluidEngine`, whose members, placement and clock they use)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from ipa_energy.spec import Plan

__all__ = ["Change", "FluidChanges"]


@dataclass
class Change:
    plan: Plan
    started: float
    fits: bool
    ready_at: float
    starting: int = 0  # replicas it starts (0: it switches or shrinks only)


class FluidChanges:
    """FluidEngine's changes: a plan is begun, converges when its replicas are ready, and finishes
    or is abandoned; Serve's autoscaler resizes the members that have one."""

    # -- changes (make before break) -----------------------------------------------------------

    def _ready(self, t: int) -> bool:
        """Replicas whose start ended by second `t` serve; whether any did."""
        changed = False
        for members in self.stages.values():
            for m in members:
                if m.starting and any(at <= t for at, _ in m.starting):
                    m.ready += sum(n for at, n in m.starting if at <= t)
                    m.warm_at = max(m.warm_at, t + self._warm_s(m.variant))
                    m.starting = [(at, n) for at, n in m.starting if at > t]
                    changed = True
                if m.switch is not None and m.switch[0] <= t and not m.starting:
                    _, m.variant, m.batch, m.wait_s = m.switch
                    m.switch = None
                    changed = True
        return changed

    def begin(self, plan: Plan) -> Change:
        """Start taking the app to `plan`; :meth:`converged` says when routing may flip."""
        add = Counter()
        for st in self.pipeline.stages:
            members = self.stages[st.name]
            for i, pm in enumerate(plan.stages[st.name].members()):
                if i < len(members):
                    grow = pm.replicas - members[i].replicas()
                    if grow > 0:
                        add[members[i].variant] += grow
                else:
                    add[pm.variant] += pm.replicas
        fits = self._fits(self._reserved(add))
        speed = max((g.speed for g in self.groups), default=1.0)
        start_s = (self.host.worker_start_core_s * speed) * self.stretch
        change = Change(plan, self.now, fits, self.now)
        if not fits:
            return change  # the replicas stay pending (as Ray's would); the change does not converge
        ready_at = self.now
        for st in self.pipeline.stages:
            members = self.stages[st.name]
            for i, pm in enumerate(plan.stages[st.name].members()):
                if i >= len(members):
                    members.append(self._member(st.name, i, pm, 0))
                    members[i].share = 0.0  # routed once the change flips
                m = members[i]
                grow = pm.replicas - m.replicas()
                at = self.now
                if grow > 0:
                    at = math.ceil(self.now + start_s + self._cold_start(m.variant) * speed * self.stretch)
                    m.starting.append((at, grow))
                    change.starting += grow
                    self._starts += 1
                    self.cold_starts[f"{m.name}#{self._starts}"] = at - self.now
                if (m.variant, m.batch) != (pm.variant, pm.batch_size):
                    if m.variant != pm.variant and (grow > 0 or not self.host.warm_variants or self.now < m.warm_at):
                        at = math.ceil(at + self.host.switch_core_s * speed * self.stretch)
                        m.warm_at = max(m.warm_at, at + self._warm_s(pm.variant))
                    m.switch = (at, pm.variant, pm.batch_size, pm.batch_wait_timeout_ms / 1000)
                m.wait_s = pm.batch_wait_timeout_ms / 1000 if m.switch is None else m.wait_s
                ready_at = max(ready_at, at)
        change.ready_at = ready_at
        self._place()
        return change

    def converged(self, change: Change) -> bool:
        return change.fits and self.now >= change.ready_at

    def finish(self, change: Change) -> None:
        """Routing flips to the new plan; what it no longer needs drains (at once: fluid)."""
        self.routing = change.plan
        self._autoscaled = any(sp.autoscaling is not None for sp in change.plan.stages.values())
        self.version += 1
        for st in self.pipeline.stages:
            members = self.stages[st.name]
            planned = change.plan.stages[st.name].members()
            for i, m in enumerate(members):
                if i < len(planned):
                    pm = planned[i]
                    m.switch = None  # the plan's settings below are the switch's
                    m.variant, m.batch, m.wait_s, m.share = pm.variant, pm.batch_size, pm.batch_wait_timeout_ms / 1000, pm.share
                    m.ready = min(m.ready + sum(n for _, n in m.starting), pm.replicas)
                    m.starting = []
                else:  # a member dropped: its backlog goes to the first
                    members[0].backlog += m.backlog
            del members[len(planned):]
        self._place()

    def abandon(self, change: Change) -> None:
        """Roll back: starts and switches under way stop; the running plan's settings stay."""
        for st in self.pipeline.stages:
            members = self.stages[st.name]
            for m in members:
                m.starting, m.switch = [], None
            running = len(self.routing.stages[st.name].members())
            for m in members[running:]:
                members[0].backlog += m.backlog
            del members[running:]
        self._place()

    # -- Serve autoscaling ---------------------------------------------------------------------

    @staticmethod
    def _ongoing(m) -> float:
        """Requests in flight at a member, as Serve's autoscaler counts them (per request, not
        per batch: its target is ``target × batch size`` requests): those queued, and those in
        service, served × batch time (Little's law)."""
        return m.backlog + m.served * m.batch_s

    def _autoscale(self) -> bool:
        """Serve's autoscaler, simplified as sim.engine's: ⌈in flight / target⌉ after the delay;
        whether it changed the replicas."""
        changed = False
        if self.change is not None or not self._autoscaled:
            return changed
        for st in self.pipeline.stages:
            a = self.routing.stages[st.name].autoscaling
            if a is None:
                continue
            m = self.stages[st.name][0]
            want = min(a.max_replicas, max(a.min_replicas, math.ceil(self._ongoing(m) / a.target_ongoing_requests)))
            have = m.replicas()
            state = m.scaling
            if want == have:
                m.scaling = None
                continue
            up = want > have
            if state is None or state[0] != up:
                m.scaling = (up, self.now)
                continue
            delay = (a.upscale_delay_s if a.upscale_delay_s is not None else 30.0) if up else \
                (a.downscale_delay_s if a.downscale_delay_s is not None else 600.0)
            if self.now - state[1] < delay:
                continue
            m.scaling = None
            grow = self._room(m.variant, want - have) if up else 0
            if grow > 0:  # as many as the cluster places (Ray leaves the rest pending)
                speed = max((g.speed for g in self.groups), default=1.0)
                at = math.ceil(self.now + (self.host.worker_start_core_s + self._cold_start(m.variant)) * speed * self.stretch)
                m.starting.append((at, grow))
                changed = True
            elif not up:
                m.ready = max(1, m.ready - (have - want))
                changed = True
        return changed
