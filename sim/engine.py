"""A request-level discrete-event model of the served app (docs/simulator.md).

What it models, each as the live app does it:

* **Arrivals** at the trace's send times (loadgen.traces.schedule, the Locust replay's).
* **The ingress**: per-second arrival counts (the planner's history), load shedding with the
  live app's own :class:`serve_app.shedding.LoadShedder`, one call per stage in sequence.
* **Routing**: Serve's power-of-two-choices on in-flight requests, `max_ongoing_requests`
  per replica (serve_app.builder), and a bounded queue in front of each stage slot
  (`max_queued_requests`; a full queue sheds, as BackPressureError does live).
* **Dynamic batching**: a free replica runs what waits, up to its batch size, once the batch
  is full or its oldest request has waited the batch wait (Serve's `@serve.batch`).
* **Service times** drawn from the profile of the batch size that ran: log-normal with the
  profile's p50 and p99 (a partial batch: interpolated between measured sizes).
* **Contention**: the replicas of a node share its cores (processor sharing). A batch needs
  `cpu_s_per_request × size / p50` cores; when the node's jobs need more cores than it has
  (less the serving path's and the load generator's share), every job slows by the same factor.
  Cold starts and in-place switches are jobs on the same cores, so a change is slow on a busy node.
* **Changes**, make-before-break: new replicas cold-start (a Ray worker start plus the
  profiled cold start, as CPU work on their node), variants switch in place while the old
  model serves; routing flips when all is ready; replicas no longer needed drain. A change
  that has not converged by the apply timeout rolls back.
* **Warm variants** (serve_app.warm): a ready replica builds its slot's other variants, nearest
  first, `switch_core_s` each, in seconds its node has a core idle (one core per build); a
  switch to a warm variant swaps at once.
* **Nodes and power**: a node draws its idle power while it holds a replica (or is kept),
  plus each batch's dynamic energy from the profile, scaled by its drawn service time, plus
  the serving path's CPU; a node empty for the idle timeout is released and draws nothing.

Time is seconds from second 0 of the trace; :mod:`sim.run` maps it to Unix time.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Mapping

import numpy as np

from ipa_energy.spec import PipelineSpec, Plan, Profile
from planner.capacity import P99_Z
from serve_app.shedding import LoadShedder
from serve_app.warm import WARM_IDLE_CORES, warm_order
from sim.changes import Replicas
from sim.cluster import SimCluster, node_power
from sim.parts import (Change, Finished, Job, Node, Replica, Request, Slot, cold_start_s, profile_at,
                       replica_memory_mb, slot_variants)

__all__ = ["Engine", "Finished", "cold_start_s", "profile_at", "replica_memory_mb", "slot_variants"]

#: how long a shed request takes to be answered (ms): the 503 comes at once
SHED_MS = 2.0


class Engine(Replicas):
    def __init__(self, pipeline: PipelineSpec, profiles: Mapping[tuple[str, int], Profile], cluster: SimCluster,
                 plan: Plan, *, seed: int = 0, shed: bool = True):
        self.pipeline, self.profiles, self.cluster, self.host = pipeline, profiles, cluster, cluster.host
        self.rng = np.random.default_rng(seed)
        self.now = 0.0
        self._events: list = []
        self._seq = 0
        self.nodes: list[Node] = []
        for t in cluster.node_types:
            idle_w, active_j = node_power(t, profiles, pipeline)
            self.nodes += [Node(f"{t.name}-{i}", t, idle_w, active_j, kept=i < t.min_workers) for i in range(t.count)]
        self._variants = {v.name: v for st in pipeline.stages for v in st.variants}
        self._slot_variants = slot_variants(pipeline)
        self._sizes: dict[str, list[int]] = {}
        for (variant, b), p in profiles.items():
            self._sizes.setdefault(variant, []).append(b)
        for sizes in self._sizes.values():
            sizes.sort()
        self.slots: dict[tuple[str, int], Slot] = {}
        self.routing = plan
        self.version = 1
        self.shedder = LoadShedder(1) if shed else None
        self.in_flight: Counter = Counter()
        self.history: list[int] = []  # arrivals per whole second of the clock (see `phase`)
        #: the clock's whole seconds fall `phase` s before each whole second of the trace (the
        #: fraction of the run's Unix start): the ingress counts arrivals per Unix second, so
        #: its per-second peaks mix two seconds of the trace unless the phase is 0
        self.phase = 0.0
        self.finished: list[Finished] = []
        self.calls: deque = deque()  # (time, stage, variant, call ms, wall s per request, batch size)
        self.cold_starts: dict[str, float] = {}  # replica → seconds from its start to ready
        self._rid = 0
        self.change: Change | None = None
        self._deploy_opening(plan)

    # -- events ------------------------------------------------------------------------------

    def _at(self, t: float, kind: str, a=None, b=None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, a, b))

    def run_until(self, t_end: float, until=None) -> bool:
        """Process events up to `t_end` (or until `until()` holds after an event); returns
        whether `until` held. The clock ends at `t_end` unless `until` stopped it earlier."""
        while self._events and self._events[0][0] <= t_end:
            t, _, kind, a, b = heapq.heappop(self._events)
            self._advance(t)
            getattr(self, "_on_" + kind)(a, b)
            if until is not None and until():
                return True
        self._advance(t_end)
        return until() if until is not None else False

    def _advance(self, t: float) -> None:
        if t > self.now:
            dt = t - self.now
            for n in self.nodes:
                if n.active:
                    n.idle_j += n.idle_w * dt
                    n.other_j += (n.background - n.loadgen) * n.active_j * dt
                    n.loadgen_j += n.loadgen * n.active_j * dt
            self.now = t

    # -- arrivals and the ingress ------------------------------------------------------------

    def schedule(self, times: np.ndarray, until_s: float) -> None:
        """Send times (s) of the trace, each a request; a tick every second up to `until_s`."""
        for t in times:
            self._at(float(t), "arrival")
        for s in range(int(math.ceil(until_s)) + 1):
            self._at(float(s), "tick", s)

    def _on_tick(self, second, _b) -> None:
        """Every second: the serving path's CPU on the nodes, released nodes, autoscaling."""
        while len(self.history) < second:
            self.history.append(0)
        last = self.history[second - 1] if second > 0 else 0
        active = [n for n in self.nodes if n.active]
        serving = self.host.background_cores + last * self.host.serving_cpu_s / max(1, len(active))
        for n in active:
            loadgen = last * self.host.loadgen_cpu_s if n is self.nodes[0] else 0.0
            if (serving + loadgen, loadgen) != (n.background, n.loadgen):
                self._settle(n)
                n.background, n.loadgen = serving + loadgen, loadgen
                self._reschedule(n)
        for n in self.nodes:
            if n.active and not n.kept and n.cpus_used == 0 and self.now - n.empty_since >= self.cluster.idle_timeout_s:
                n.active = False
        if self.host.warm_variants:
            self._warm_builds()
        self._autoscale()

    def _to_warm(self, r: Replica) -> list[str]:
        return [v for v in warm_order(self._slot_variants[r.variant], r.variant) if v not in r.warm]

    def _warm_builds(self) -> None:
        """A second of warm builds: where a node has a core idle, its replicas still building share
        the idle cores (a core each at most: one build thread)."""
        work = self.host.switch_core_s
        for n in self.nodes:
            if not n.active:
                continue
            building = [r for s in self.slots.values() for r in s.replicas
                        if r.node is n and r.state == "ready" and r.switch is None and r.gpus == 0 and self._to_warm(r)]
            idle = n.cores - n.demand - n.background
            if not building or idle < WARM_IDLE_CORES:
                continue
            for r in building:
                done = min(1.0, idle / len(building))  # one build thread per replica
                r.warming += done
                n.consumers_j[r.id] += done * n.active_j
                if r.warming >= work * n.speed:
                    r.warm.add(self._to_warm(r)[0])
                    r.warming = 0.0

    def complete_seconds(self) -> int:
        """Whole seconds of `history` complete now."""
        return int(self.now + self.phase + 1e-9)

    def _on_arrival(self, _a, _b) -> None:
        second = int(self.now + self.phase)
        while len(self.history) <= second:
            self.history.append(0)
        self.history[second] += 1
        self._rid += 1
        req = Request(self._rid, self.now, self.version)
        if self.shedder is not None:
            route = [(st.name, f"{s.name}/{s.variant}", self.in_flight[s.name], max(1, len(s.serving())))
                     for st in self.pipeline.stages for s in [self._slot_for(st.name, 0.5)]]
            if self.shedder.judge(route, self.pipeline.sla_ms / 1000).shed:
                self._shed(req)
                return
        self._dispatch(req)

    def _shed(self, req: Request) -> None:
        self.finished.append(Finished(req.scheduled, req.sent, self.now + SHED_MS / 1000, 503, True, req.version, {}, None,
                                      "shed: the plan cannot serve the load within the SLA"))

    def _slot_for(self, stage: str, u: float) -> Slot:
        sp = self.routing.stages[stage]
        variant = sp.route(u)
        index = next(i for i, m in enumerate(sp.members()) if m.variant == variant)
        return self.slots[(stage, index)]

    def _dispatch(self, req: Request) -> None:
        stage = self.pipeline.stages[req.stage].name
        slot = self._slot_for(stage, float(self.rng.random()))
        req.ahead = self.in_flight[slot.name]
        self.in_flight[slot.name] += 1
        req.call_start = req.queued_at = self.now
        if not self._to_replica(slot, req):
            if len(slot.queue) >= slot.max_queued():
                self.in_flight[slot.name] -= 1
                self._shed(req)
                return
            slot.queue.append(req)

    def _to_replica(self, slot: Slot, req: Request) -> bool:
        """Power of two choices among the slot's serving replicas under max_ongoing_requests."""
        ready = slot.serving()
        if not ready:
            return False
        if len(ready) > 2:
            i, j = self.rng.choice(len(ready), 2, replace=False)
            ready = [ready[i], ready[j]]
        r = min(ready, key=lambda r: r.ongoing)
        if r.ongoing >= max(8, 2 * r.batch):
            others = [x for x in slot.serving() if x.ongoing < max(8, 2 * x.batch)]
            if not others:
                return False
            r = min(others, key=lambda r: r.ongoing)
        r.ongoing += 1
        r.pending.append(req)
        req.queued_at = self.now
        self._try_batch(r)
        return True

    # -- batching and service ----------------------------------------------------------------

    def _try_batch(self, r: Replica) -> None:
        if r.busy or not r.pending or r.state not in ("ready", "draining"):
            return
        oldest = r.pending[0].queued_at
        if len(r.pending) >= r.batch or self.now >= oldest + r.wait_s - 1e-12:
            reqs = [r.pending.popleft() for _ in range(min(r.batch, len(r.pending)))]
            self._start_batch(r, reqs)
        else:
            r.timer += 1
            self._at(oldest + r.wait_s, "batch_wait", r, r.timer)

    def _on_batch_wait(self, r: Replica, timer: int) -> None:
        if timer == r.timer:
            self._try_batch(r)

    def _profile(self, variant: str, k: int) -> tuple[float, float, float, float]:
        return profile_at(self.profiles, self._sizes[variant], variant, k)

    def _start_batch(self, r: Replica, reqs: list) -> None:
        k = len(reqs)
        p50, p99, j_per_req, cpu_s = self._profile(r.variant, k)
        sigma = math.log(max(p99, p50) / p50) / P99_Z if p50 > 0 else 0.0
        solo = p50 * math.exp(sigma * float(self.rng.standard_normal())) if p50 > 0 else 0.0
        node = r.node
        demand = min(node.cores, max(0.05, cpu_s * k / p50)) if p50 > 0 else 1.0
        if self._variants[r.variant].resources.num_gpus > 0:
            demand = min(demand, 1.0)  # the GPU does the work; one host thread feeds it
        work = solo * node.speed  # seconds on an idle node of this type
        energy = j_per_req * k * (work / p50 if p50 > 0 else 1.0)  # the profile's, per CPU second the batch takes
        r.busy = True
        self._add_job(node, Job("batch", r, work, demand, self.now, reqs, energy, r.variant))

    # -- processor sharing on a node ----------------------------------------------------------

    def _settle(self, n: Node) -> None:
        n.v += n.rate * (self.now - n.t)
        n.t = self.now

    def _reschedule(self, n: Node) -> None:
        avail = max(0.05 * n.cores, n.cores - n.background)
        n.rate = min(1.0, avail / n.demand) if n.demand > 0 else 1.0
        n.version += 1
        while n.jobs and n.jobs[0][2].cancelled:
            heapq.heappop(n.jobs)
        if n.jobs:
            self._at(self.now + max(0.0, n.jobs[0][0] - n.v) / n.rate, "node", n, n.version)

    def _add_job(self, n: Node, job: Job) -> None:
        self._settle(n)
        n.seq += 1
        heapq.heappush(n.jobs, (n.v + job.work, n.seq, job))
        n.demand += job.demand
        self._reschedule(n)

    def _cancel(self, job: Job) -> None:
        if not job.cancelled:
            n = job.replica.node
            self._settle(n)
            job.cancelled = True
            n.demand = max(0.0, n.demand - job.demand)
            self._reschedule(n)

    def _on_node(self, n: Node, version: int) -> None:
        if version != n.version:
            return
        self._settle(n)
        done = []
        while n.jobs and (n.jobs[0][2].cancelled or n.jobs[0][0] <= n.v + 1e-9):
            _, _, job = heapq.heappop(n.jobs)
            if not job.cancelled:
                n.demand = max(0.0, n.demand - job.demand)
                done.append(job)
        self._reschedule(n)
        for job in done:
            getattr(self, "_done_" + job.kind)(job)

    def _done_batch(self, job: Job) -> None:
        r, k = job.replica, len(job.reqs)
        wall = self.now - job.started
        r.busy = False
        r.ongoing -= k
        stage = r.slot.stage
        r.node.consumers_j[r.id] += job.energy
        timed = f"{r.slot.name}/{job.variant}"
        for req in job.reqs:
            self.in_flight[r.slot.name] -= 1
            if self.shedder is not None:  # as the ingress: what the call took, before this batch's timing
                self.shedder.observe_call(timed, req.ahead, max(1, len(r.slot.serving())), k, self.now - req.call_start)
            self.calls.append((self.now, stage, job.variant, (self.now - req.call_start) * 1000, wall / k, k))
            req.variants[stage] = job.variant
            req.energy += job.energy / k
            req.stage += 1
        if self.shedder is not None:
            self.shedder.observe(timed, wall * 1000, k)
        for req in job.reqs:
            if req.stage < len(self.pipeline.stages):
                self._dispatch(req)
            else:
                self.finished.append(Finished(req.scheduled, req.sent, self.now + self.host.overhead_ms / 1000, 200,
                                              False, req.version, dict(req.variants), req.energy))
        self._pull(r.slot)
        self._try_batch(r)
        self._maybe_gone(r)

    def _pull(self, slot: Slot) -> None:
        """Requests waiting in front of a slot go to replicas that have room."""
        while slot.queue:
            req = slot.queue[0]
            if not self._to_replica(slot, req):
                return
            slot.queue.popleft()

    def _maybe_gone(self, r: Replica) -> None:
        if r.state == "draining" and r.ongoing == 0 and not r.busy:
            self._remove(r)

    def _remove(self, r: Replica) -> None:
        r.state = "gone"
        if r.switch is not None:
            self._cancel(r.switch)
        if r in r.slot.replicas:
            r.slot.replicas.remove(r)
        n = r.node
        n.cpus_used = max(0.0, n.cpus_used - r.cpus)
        n.memory_used = max(0.0, n.memory_used - r.memory_mb)
        n.gpus_used = max(0.0, n.gpus_used - r.gpus)
        if n.cpus_used <= 1e-9 and n.gpus_used <= 1e-9:
            n.empty_since = self.now

    # -- what the planner and the results read --------------------------------------------------

    def replica_counts(self) -> dict[str, int]:
        counts: Counter = Counter()
        for slot in self.slots.values():
            counts[slot.name] += sum(1 for r in slot.replicas if r.state in ("ready", "draining"))
        return dict(counts)

    def cost_units(self) -> float:
        return sum(r.cpus + r.gpus for s in self.slots.values() for r in s.replicas if r.state in ("ready", "draining"))

    def outside_cores(self) -> dict[str, float]:
        """node → cores busy outside the stage replicas (the serving path, the load generator) as the
        node's energy actor reads them (less the background it counts as the replicas' own)."""
        return {n.id: max(0.0, n.background - self.host.hidden_cores) for n in self.nodes if n.active}

    def energy_since(self, n: Node) -> tuple[float, float, float, dict[str, float]]:
        """(idle J, other J, load generator J, replica → J) accrued on `n`, reset to zero."""
        out = (n.idle_j, n.other_j, n.loadgen_j, dict(n.consumers_j))
        n.idle_j = n.other_j = n.loadgen_j = 0.0
        n.consumers_j = Counter()
        return out
