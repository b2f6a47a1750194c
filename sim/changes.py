"""The simulated app's replicas and plan changes: placement, cold starts, in-place switches,
make-before-break changes and Serve's autoscaler (mixed into :class:`sim.engine.Engine`, whose
event loop, routing and processor sharing they use)."""

from __future__ import annotations

import math

from ipa_energy.spec import Plan
from sim.parts import Change, Job, Node, Replica, Slot, cold_start_s, replica_memory_mb

__all__ = ["Replicas"]


class Replicas:
    """Engine's replicas: where they start, how they switch, how a plan change takes the app over."""

    # -- replicas: placement, cold starts, switches --------------------------------------------

    def _place(self, variant: str) -> Node | None:
        """The fullest active node the replica fits on (packing leaves nodes to release), else a released one."""
        res = self._variants[variant].resources
        memory = self._memory(variant)

        def fits(n: Node) -> bool:
            return (n.cpus_used + res.num_cpus <= n.cores + 1e-9 and n.memory_used + memory <= n.memory_mb
                    and n.gpus_used + res.num_gpus <= n.gpus + 1e-9)

        active = [n for n in self.nodes if n.active and fits(n)]
        if active:
            return max(active, key=lambda n: n.cpus_used)
        return next((n for n in self.nodes if not n.active and fits(n)), None)

    def _memory(self, variant: str) -> float:
        return replica_memory_mb(self.profiles, self._variants[variant])

    def _new_replica(self, slot: Slot, variant: str, batch: int, wait_s: float, *, ready: bool) -> Replica | None:
        node = self._place(variant)
        if node is None:
            return None  # no node has room: the replica stays pending (as Ray's would), the change does not converge
        self._rid += 1
        r = Replica(f"{slot.name}#{self._rid}", slot, node, variant, batch, wait_s, self.now)
        res = self._variants[variant].resources
        r.cpus, r.memory_mb, r.gpus = res.num_cpus, self._memory(variant), res.num_gpus
        node.cpus_used += r.cpus
        node.memory_used += r.memory_mb
        node.gpus_used += r.gpus
        node.active = node.started_ever = True
        slot.replicas.append(r)
        work = self.host.worker_start_core_s + self._cold_start(variant)
        if ready:  # the opening deployment: started before the load, on an idle node (its warm builds too)
            r.state = "ready"
            if self.host.warm_variants and not r.gpus:
                r.warm = set(self._slot_variants[variant]) - {variant}
            self.cold_starts[r.id] = work * node.speed
        else:
            self._add_job(node, Job("start", r, work * node.speed, 1.0, self.now))
        return r

    def _cold_start(self, variant: str) -> float:
        return cold_start_s(self.profiles, variant)

    def _done_start(self, job: Job) -> None:
        r = job.replica
        r.node.consumers_j[r.id] += job.work * job.demand * r.node.active_j
        if r.state == "starting":
            r.state = "ready"
            self.cold_starts[r.id] = self.now - r.created
            self._pull(r.slot)

    def _done_switch(self, job: Job) -> None:
        r = job.replica
        r.node.consumers_j[r.id] += job.work * job.demand * r.node.active_j
        r.switch = None
        self._swap(r, job.variant)

    def _swap(self, r: Replica, variant: str) -> None:
        """`r` serves `variant` from now on; the one it served stays warm (serve_app.warm)."""
        if self.host.warm_variants and not r.gpus:
            r.warm.add(r.variant)
        r.warm.discard(variant)
        r.variant, r.batch, r.wait_s = variant, r.slot.batch, r.slot.wait_s
        self._try_batch(r)

    def _deploy_opening(self, plan: Plan) -> None:
        for st in self.pipeline.stages:
            for i, m in enumerate(plan.stages[st.name].members()):
                slot = self.slots.setdefault((st.name, i), Slot(f"{self.pipeline.name}.{st.name}.{i}", st.name, i))
                slot.variant, slot.batch, slot.wait_s = m.variant, m.batch_size, m.batch_wait_timeout_ms / 1000
                slot.autoscaling = plan.stages[st.name].autoscaling if i == 0 else None
                for _ in range(m.replicas):
                    if self._new_replica(slot, m.variant, m.batch_size, slot.wait_s, ready=True) is None:
                        raise ValueError(f"the opening plan does not fit the cluster: no node has room for "
                                         f"another {m.variant} replica of {slot.name}")

    # -- plan changes (make before break) -----------------------------------------------------

    def begin(self, plan: Plan) -> Change:
        """Start taking the app to `plan`; :meth:`converged` says when routing may flip."""
        change = Change(plan, self.now)
        for st in self.pipeline.stages:
            sp = plan.stages[st.name]
            for i, m in enumerate(sp.members()):
                slot = self.slots.setdefault((st.name, i), Slot(f"{self.pipeline.name}.{st.name}.{i}", st.name, i))
                wait_s = m.batch_wait_timeout_ms / 1000
                slot.autoscaling = sp.autoscaling if i == 0 else None
                live = [r for r in slot.replicas if r.state in ("starting", "ready")]
                same_shape = (not slot.variant or
                              self._variants[slot.variant].resources == self._variants[m.variant].resources)
                keep = live if same_shape else []
                switches = [r for r in keep[: m.replicas]
                            if r.variant != m.variant or (r.switch is not None and r.switch.variant != m.variant)]
                if switches and m.replicas > len(keep):
                    # serve_app.rollout's grow step: the slot first grows on the variant it runs (the running
                    # replicas keep serving at full speed while the new ones cold-start), then all switch
                    for _ in range(m.replicas - len(keep)):
                        change.starting.append(self._new_replica(slot, slot.variant, slot.batch, slot.wait_s, ready=False))
                    change.grow_first.append((slot, m))
                    continue
                slot.variant, slot.batch, slot.wait_s = m.variant, m.batch_size, wait_s
                for r in keep[: m.replicas]:
                    if r in switches:
                        self._switch(r, m.variant)
                        change.switching.append(r)
                    else:
                        r.batch, r.wait_s = m.batch_size, wait_s
                change.surplus += keep[m.replicas:] + [r for r in live if r not in keep]
                for _ in range(m.replicas - len(keep)):
                    r = self._new_replica(slot, m.variant, m.batch_size, wait_s, ready=False)
                    change.starting.append(r)
            for (stage, i), slot in self.slots.items():
                if stage == st.name and i >= len(sp.members()):
                    change.surplus += [r for r in slot.replicas if r.state in ("starting", "ready")]
        return change

    def _switch(self, r: Replica, variant: str) -> None:
        """Build `variant` in `r` in the background (CPU work on its node); it swaps when done."""
        if r.switch is not None:
            self._cancel(r.switch)
            r.switch = None
        if variant == r.variant:  # a switch away was wanted no more: it serves what it has
            return
        if variant in r.warm:
            self._swap(r, variant)
            return
        r.switch = Job("switch", r, self.host.switch_core_s * r.node.speed, 1.0, self.now, variant=variant)
        self._add_job(r.node, r.switch)

    def converged(self, change: Change) -> bool:
        started = all(r is not None and r.state == "ready" for r in change.starting)
        if started and change.grow_first:  # the grow step is done: the slots switch in place now
            for slot, m in change.grow_first:
                slot.variant, slot.batch, slot.wait_s = m.variant, m.batch_size, m.batch_wait_timeout_ms / 1000
                for r in slot.replicas:
                    if r.state in ("starting", "ready") and r.variant != m.variant:
                        self._switch(r, m.variant)
                        change.switching.append(r)
            change.grow_first = []
            return False
        return started and all(r.switch is None or r.state == "gone" for r in change.switching)

    def finish(self, change: Change) -> None:
        """Routing flips to the new plan; what it no longer needs drains."""
        self.routing = change.plan
        self.version += 1
        for r in change.surplus:
            if r.state == "starting":
                self._remove_starting(r)
            elif r.state == "ready":
                r.state = "draining"
                self._requeue(r)
                self._maybe_gone(r)
        for (stage, i), slot in self.slots.items():
            if i >= len(self.routing.stages[stage].members()):  # a member dropped: what waits for it goes elsewhere
                while slot.queue:
                    req = slot.queue.popleft()
                    self.in_flight[slot.name] -= 1
                    self._dispatch(req)
            self._pull(slot)

    def abandon(self, change: Change) -> None:
        """Roll a change back that did not converge: starts and switches still under way stop."""
        for r in change.starting:  # the old config comes back: replicas it added go (those that serve, drained)
            if r is not None and r.state == "starting":
                self._remove_starting(r)
            elif r is not None and r.state == "ready":
                r.state = "draining"
                self._requeue(r)
                self._maybe_gone(r)
        for r in change.switching:
            if r.switch is not None:
                self._cancel(r.switch)
                r.switch = None
        for st in self.pipeline.stages:  # slots serve the running plan's settings again
            for i, m in enumerate(self.routing.stages[st.name].members()):
                slot = self.slots[(st.name, i)]
                slot.variant, slot.batch, slot.wait_s = m.variant, m.batch_size, m.batch_wait_timeout_ms / 1000

    def _remove_starting(self, r: Replica) -> None:
        for _, _, job in r.node.jobs:
            if job.replica is r and job.kind == "start":
                self._cancel(job)
        self._remove(r)

    def _requeue(self, r: Replica) -> None:
        """A draining replica's requests not yet in a batch go back in front of its slot."""
        while r.pending:
            req = r.pending.pop()
            r.ongoing -= 1
            r.slot.queue.appendleft(req)

    # -- Serve autoscaling --------------------------------------------------------------------

    def _autoscale(self) -> None:
        """Serve's autoscaler, simplified: replicas = ⌈in flight / target⌉ once that has held for
        the upscale (downscale) delay (Serve's defaults: 30 s, 600 s)."""
        for slot in self.slots.values():
            a = slot.autoscaling
            if a is None or self.change is not None:
                continue
            live = [r for r in slot.replicas if r.state in ("starting", "ready")]
            ongoing = sum(r.ongoing for r in live) + len(slot.queue)
            want = min(a.max_replicas, max(a.min_replicas, math.ceil(ongoing / a.target_ongoing_requests)))
            if want == len(live):
                slot.scale_since = None
                continue
            up = want > len(live)
            if slot.scale_since is None or slot.scale_since[0] != up:
                slot.scale_since = (up, self.now)
                continue
            delay = (a.upscale_delay_s if a.upscale_delay_s is not None else 30.0) if up else \
                (a.downscale_delay_s if a.downscale_delay_s is not None else 600.0)
            if self.now - slot.scale_since[1] < delay:
                continue
            slot.scale_since = None
            if up:
                for _ in range(want - len(live)):
                    self._new_replica(slot, slot.variant, slot.batch, slot.wait_s, ready=False)
            else:
                for r in sorted(live, key=lambda r: r.ongoing)[: len(live) - want]:
                    r.state = "draining"
                    self._requeue(r)
                    self._maybe_gone(r)
                self._pull(slot)
