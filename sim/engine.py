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
from dataclasses import dataclass, field

import numpy as np

from ipa_energy.spec import PipelineSpec, Plan, Profile
from serve_app.layout import QUEUED_BATCHES_PER_REPLICA
from serve_app.shedding import LoadShedder
from serve_app.warm import WARM_IDLE_CORES, warm_order
from sim.cluster import NodeType, SimCluster, node_power

__all__ = ["Engine", "Finished", "cold_start_s", "profile_at", "replica_memory_mb", "slot_variants"]

P99_Z = 2.326
#: how long a shed request takes to be answered (ms): the 503 comes at once
SHED_MS = 2.0


def slot_variants(pipeline: PipelineSpec) -> dict[str, list[str]]:
    """variant → the variants its replicas may switch to in place (its stage's, of its shape: one
    slot, serve_app.layout), itself included, in catalog order."""
    return {v.name: [w.name for w in st.variants if w.resources == v.resources]
            for st in pipeline.stages for v in st.variants}


def profile_at(profiles: Mapping[tuple[str, int], Profile], sizes: list[int], variant: str,
               k: int) -> tuple[float, float, float, float]:
    """(p50 s, p99 s, J per request, CPU s per request) of `variant` at batch size `k`, from its
    profiled batch sizes `sizes` (sorted; between two of them: interpolated)."""
    lo = max((b for b in sizes if b <= k), default=sizes[0])
    hi = min((b for b in sizes if b >= k), default=sizes[-1])
    a, b = profiles[(variant, lo)], profiles[(variant, hi)]
    w = 0.0 if hi == lo else (k - lo) / (hi - lo)

    def mix(x, y):
        return x + w * (y - x)

    cpu_a = a.cpu_s_per_request if a.cpu_s_per_request is not None else a.latency_p50_ms / 1000 / lo
    cpu_b = b.cpu_s_per_request if b.cpu_s_per_request is not None else b.latency_p50_ms / 1000 / hi
    return (mix(a.latency_p50_ms, b.latency_p50_ms) / 1000, mix(a.latency_p99_ms, b.latency_p99_ms) / 1000,
            mix(a.energy_per_request_j, b.energy_per_request_j), mix(cpu_a, cpu_b))


def replica_memory_mb(profiles: Mapping[tuple[str, int], Profile], variant) -> float:
    """Memory one replica of `variant` (a VariantSpec) holds: profiled, else its reservation (MiB)."""
    p = next((p for (v, _), p in profiles.items() if v == variant.name and p.memory_mb_per_replica), None)
    return p.memory_mb_per_replica if p is not None else float(variant.resources.memory_mb or 0)


def cold_start_s(profiles: Mapping[tuple[str, int], Profile], variant: str) -> float:
    """The longest profiled cold start of `variant` (s; 0 when none is profiled)."""
    return max((p.cold_start_s or 0.0 for (v, _), p in profiles.items() if v == variant), default=0.0)


class _Req:
    __slots__ = ("id", "scheduled", "sent", "stage", "variants", "energy", "call_start", "version", "queued_at", "ahead")

    def __init__(self, rid: int, t: float, version: int):
        self.id, self.scheduled, self.sent, self.stage = rid, t, t, 0
        self.variants: dict[str, str] = {}
        self.energy, self.call_start, self.version, self.queued_at = 0.0, t, version, t
        self.ahead = 0  # calls in flight to its stage's slot when its call was sent (the shedder learns from it)


class _Job:
    __slots__ = ("kind", "replica", "reqs", "work", "demand", "started", "energy", "variant", "cancelled", "done_v")

    def __init__(self, kind, replica, work, demand, started, reqs=(), energy=0.0, variant=None):
        self.kind, self.replica, self.work, self.demand, self.started = kind, replica, work, demand, started
        self.reqs, self.energy, self.variant, self.cancelled, self.done_v = reqs, energy, variant, False, 0.0


class _Replica:
    __slots__ = ("id", "slot", "node", "variant", "batch", "wait_s", "state", "pending", "ongoing", "busy",
                 "created", "switch", "timer", "cpus", "memory_mb", "gpus", "warm", "warming")

    def __init__(self, rid, slot, node, variant, batch, wait_s, created):
        self.id, self.slot, self.node, self.variant, self.batch, self.wait_s = rid, slot, node, variant, batch, wait_s
        self.state = "starting"  # → ready → draining → gone
        self.pending: deque = deque()
        self.ongoing, self.busy, self.created = 0, False, created
        self.switch: _Job | None = None
        self.timer = 0  # the batch-wait timer that may start a batch (older ones are stale)
        self.cpus = self.memory_mb = self.gpus = 0.0
        self.warm: set[str] = set()  # variants built beside the one it serves (serve_app.warm)
        self.warming = 0.0  # core-seconds done on the next warm build


class _Slot:
    """A stage deployment (serve_app.layout: pipeline.stage.<member>)."""

    __slots__ = ("name", "stage", "index", "replicas", "queue", "variant", "batch", "wait_s", "autoscaling", "scale_since")

    def __init__(self, name, stage, index):
        self.name, self.stage, self.index = name, stage, index
        self.replicas: list[_Replica] = []
        self.queue: deque = deque()  # requests waiting for a replica under max_ongoing_requests
        self.variant, self.batch, self.wait_s, self.autoscaling, self.scale_since = "", 1, 0.0, None, None

    def serving(self) -> list[_Replica]:
        return [r for r in self.replicas if r.state == "ready"]

    def max_queued(self) -> int:
        return QUEUED_BATCHES_PER_REPLICA * self.batch * max(1, len([r for r in self.replicas if r.state != "draining"]))


class _Node:
    __slots__ = ("id", "type", "cores", "speed", "memory_mb", "gpus", "idle_w", "active_j", "kept", "active",
                 "empty_since", "started_ever", "v", "t", "rate", "jobs", "demand", "background", "loadgen", "version",
                 "cpus_used", "memory_used", "gpus_used", "idle_j", "other_j", "loadgen_j", "consumers_j", "seq")

    def __init__(self, nid: str, ntype: NodeType, idle_w: float, active_j: float, kept: bool):
        self.id, self.type, self.cores, self.speed = nid, ntype, ntype.cores, ntype.speed
        self.memory_mb, self.gpus, self.idle_w, self.active_j, self.kept = ntype.memory_mb, ntype.gpus, idle_w, active_j, kept
        self.active, self.empty_since, self.started_ever = kept, 0.0, kept
        self.v = self.t = 0.0
        self.rate = 1.0
        self.jobs: list = []  # heap of (virtual finish, seq, job)
        self.demand = self.background = self.loadgen = 0.0  # cores: all outside the replicas, the load generator's
        self.version = self.seq = 0
        self.cpus_used = self.memory_used = self.gpus_used = 0.0
        self.idle_j = self.other_j = self.loadgen_j = 0.0
        self.consumers_j: Counter = Counter()


@dataclass
class Finished:
    """A request the engine answered (or shed): what RequestRow needs."""

    scheduled: float
    sent: float
    finished: float
    status: int
    shed: bool
    version: int
    variants: dict[str, str]
    energy_j: float | None
    error: str = ""


@dataclass
class _Change:
    plan: Plan
    started: float
    starting: list = field(default_factory=list)  # replicas being started
    switching: list = field(default_factory=list)  # replicas switching in place
    surplus: list = field(default_factory=list)  # replicas to drain once it converges
    grow_first: list = field(default_factory=list)  # (slot, member) that grow on their variant, then switch


class Engine:
    def __init__(self, pipeline: PipelineSpec, profiles: Mapping[tuple[str, int], Profile], cluster: SimCluster,
                 plan: Plan, *, seed: int = 0, shed: bool = True):
        self.pipeline, self.profiles, self.cluster, self.host = pipeline, profiles, cluster, cluster.host
        self.rng = np.random.default_rng(seed)
        self.now = 0.0
        self._events: list = []
        self._seq = 0
        self.nodes: list[_Node] = []
        for t in cluster.node_types:
            idle_w, active_j = node_power(t, profiles, pipeline)
            self.nodes += [_Node(f"{t.name}-{i}", t, idle_w, active_j, kept=i < t.min_workers) for i in range(t.count)]
        self._variants = {v.name: v for st in pipeline.stages for v in st.variants}
        self._slot_variants = slot_variants(pipeline)
        self._sizes: dict[str, list[int]] = {}
        for (variant, b), p in profiles.items():
            self._sizes.setdefault(variant, []).append(b)
        for sizes in self._sizes.values():
            sizes.sort()
        self.slots: dict[tuple[str, int], _Slot] = {}
        self.routing = plan
        self.version = 1
        self.shedder = LoadShedder(1) if shed else None
        self.in_flight: Counter = Counter()
        self.history: list[int] = []
        self.finished: list[Finished] = []
        self.calls: deque = deque()  # (time, stage, variant, call ms, wall s per request, batch size)
        self.cold_starts: dict[str, float] = {}  # replica → seconds from its start to ready
        self._rid = 0
        self.change: _Change | None = None
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

    def _to_warm(self, r: _Replica) -> list[str]:
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

    def _on_arrival(self, _a, _b) -> None:
        second = int(self.now)
        while len(self.history) <= second:
            self.history.append(0)
        self.history[second] += 1
        self._rid += 1
        req = _Req(self._rid, self.now, self.version)
        if self.shedder is not None:
            route = [(st.name, f"{s.name}/{s.variant}", self.in_flight[s.name], max(1, len(s.serving())))
                     for st in self.pipeline.stages for s in [self._slot_for(st.name, 0.5)]]
            if self.shedder.judge(route, self.pipeline.sla_ms / 1000).shed:
                self._shed(req)
                return
        self._dispatch(req)

    def _shed(self, req: _Req) -> None:
        self.finished.append(Finished(req.scheduled, req.sent, self.now + SHED_MS / 1000, 503, True, req.version, {}, None,
                                      "shed: the plan cannot serve the load within the SLA"))

    def _slot_for(self, stage: str, u: float) -> _Slot:
        sp = self.routing.stages[stage]
        variant = sp.route(u)
        index = next(i for i, m in enumerate(sp.members()) if m.variant == variant)
        return self.slots[(stage, index)]

    def _dispatch(self, req: _Req) -> None:
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

    def _to_replica(self, slot: _Slot, req: _Req) -> bool:
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

    def _try_batch(self, r: _Replica) -> None:
        if r.busy or not r.pending or r.state not in ("ready", "draining"):
            return
        oldest = r.pending[0].queued_at
        if len(r.pending) >= r.batch or self.now >= oldest + r.wait_s - 1e-12:
            reqs = [r.pending.popleft() for _ in range(min(r.batch, len(r.pending)))]
            self._start_batch(r, reqs)
        else:
            r.timer += 1
            self._at(oldest + r.wait_s, "batch_wait", r, r.timer)

    def _on_batch_wait(self, r: _Replica, timer: int) -> None:
        if timer == r.timer:
            self._try_batch(r)

    def _profile(self, variant: str, k: int) -> tuple[float, float, float, float]:
        return profile_at(self.profiles, self._sizes[variant], variant, k)

    def _start_batch(self, r: _Replica, reqs: list) -> None:
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
        self._add_job(node, _Job("batch", r, work, demand, self.now, reqs, energy, r.variant))

    # -- processor sharing on a node ----------------------------------------------------------

    def _settle(self, n: _Node) -> None:
        n.v += n.rate * (self.now - n.t)
        n.t = self.now

    def _reschedule(self, n: _Node) -> None:
        avail = max(0.05 * n.cores, n.cores - n.background)
        n.rate = min(1.0, avail / n.demand) if n.demand > 0 else 1.0
        n.version += 1
        while n.jobs and n.jobs[0][2].cancelled:
            heapq.heappop(n.jobs)
        if n.jobs:
            self._at(self.now + max(0.0, n.jobs[0][0] - n.v) / n.rate, "node", n, n.version)

    def _add_job(self, n: _Node, job: _Job) -> None:
        self._settle(n)
        n.seq += 1
        heapq.heappush(n.jobs, (n.v + job.work, n.seq, job))
        n.demand += job.demand
        self._reschedule(n)

    def _cancel(self, job: _Job) -> None:
        if not job.cancelled:
            n = job.replica.node
            self._settle(n)
            job.cancelled = True
            n.demand = max(0.0, n.demand - job.demand)
            self._reschedule(n)

    def _on_node(self, n: _Node, version: int) -> None:
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

    def _done_batch(self, job: _Job) -> None:
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

    def _pull(self, slot: _Slot) -> None:
        """Requests waiting in front of a slot go to replicas that have room."""
        while slot.queue:
            req = slot.queue[0]
            if not self._to_replica(slot, req):
                return
            slot.queue.popleft()

    def _maybe_gone(self, r: _Replica) -> None:
        if r.state == "draining" and r.ongoing == 0 and not r.busy:
            self._remove(r)

    def _remove(self, r: _Replica) -> None:
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

    # -- replicas: placement, cold starts, switches --------------------------------------------

    def _place(self, variant: str) -> _Node | None:
        """The fullest active node the replica fits on (packing leaves nodes to release), else a released one."""
        res = self._variants[variant].resources
        memory = self._memory(variant)

        def fits(n: _Node) -> bool:
            return (n.cpus_used + res.num_cpus <= n.cores + 1e-9 and n.memory_used + memory <= n.memory_mb
                    and n.gpus_used + res.num_gpus <= n.gpus + 1e-9)

        active = [n for n in self.nodes if n.active and fits(n)]
        if active:
            return max(active, key=lambda n: n.cpus_used)
        return next((n for n in self.nodes if not n.active and fits(n)), None)

    def _memory(self, variant: str) -> float:
        return replica_memory_mb(self.profiles, self._variants[variant])

    def _new_replica(self, slot: _Slot, variant: str, batch: int, wait_s: float, *, ready: bool) -> _Replica | None:
        node = self._place(variant)
        if node is None:
            return None  # no node has room: the replica stays pending (as Ray's would), the change does not converge
        self._rid += 1
        r = _Replica(f"{slot.name}#{self._rid}", slot, node, variant, batch, wait_s, self.now)
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
            self._add_job(node, _Job("start", r, work * node.speed, 1.0, self.now))
        return r

    def _cold_start(self, variant: str) -> float:
        return cold_start_s(self.profiles, variant)

    def _done_start(self, job: _Job) -> None:
        r = job.replica
        r.node.consumers_j[r.id] += job.work * job.demand * r.node.active_j
        if r.state == "starting":
            r.state = "ready"
            self.cold_starts[r.id] = self.now - r.created
            self._pull(r.slot)

    def _done_switch(self, job: _Job) -> None:
        r = job.replica
        r.node.consumers_j[r.id] += job.work * job.demand * r.node.active_j
        r.switch = None
        self._swap(r, job.variant)

    def _swap(self, r: _Replica, variant: str) -> None:
        """`r` serves `variant` from now on; the one it served stays warm (serve_app.warm)."""
        if self.host.warm_variants and not r.gpus:
            r.warm.add(r.variant)
        r.warm.discard(variant)
        r.variant, r.batch, r.wait_s = variant, r.slot.batch, r.slot.wait_s
        self._try_batch(r)

    def _deploy_opening(self, plan: Plan) -> None:
        for st in self.pipeline.stages:
            for i, m in enumerate(plan.stages[st.name].members()):
                slot = self.slots.setdefault((st.name, i), _Slot(f"{self.pipeline.name}.{st.name}.{i}", st.name, i))
                slot.variant, slot.batch, slot.wait_s = m.variant, m.batch_size, m.batch_wait_timeout_ms / 1000
                slot.autoscaling = plan.stages[st.name].autoscaling if i == 0 else None
                for _ in range(m.replicas):
                    if self._new_replica(slot, m.variant, m.batch_size, slot.wait_s, ready=True) is None:
                        raise ValueError(f"the opening plan does not fit the cluster: no node has room for "
                                         f"another {m.variant} replica of {slot.name}")

    # -- plan changes (make before break) -----------------------------------------------------

    def begin(self, plan: Plan) -> _Change:
        """Start taking the app to `plan`; :meth:`converged` says when routing may flip."""
        change = _Change(plan, self.now)
        for st in self.pipeline.stages:
            sp = plan.stages[st.name]
            for i, m in enumerate(sp.members()):
                slot = self.slots.setdefault((st.name, i), _Slot(f"{self.pipeline.name}.{st.name}.{i}", st.name, i))
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

    def _switch(self, r: _Replica, variant: str) -> None:
        """Build `variant` in `r` in the background (CPU work on its node); it swaps when done."""
        if r.switch is not None:
            self._cancel(r.switch)
            r.switch = None
        if variant == r.variant:  # a switch away was wanted no more: it serves what it has
            return
        if variant in r.warm:
            self._swap(r, variant)
            return
        r.switch = _Job("switch", r, self.host.switch_core_s * r.node.speed, 1.0, self.now, variant=variant)
        self._add_job(r.node, r.switch)

    def converged(self, change: _Change) -> bool:
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

    def finish(self, change: _Change) -> None:
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

    def abandon(self, change: _Change) -> None:
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

    def _remove_starting(self, r: _Replica) -> None:
        for _, _, job in r.node.jobs:
            if job.replica is r and job.kind == "start":
                self._cancel(job)
        self._remove(r)

    def _requeue(self, r: _Replica) -> None:
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

    def energy_since(self, n: _Node) -> tuple[float, float, float, dict[str, float]]:
        """(idle J, other J, load generator J, replica → J) accrued on `n`, reset to zero."""
        out = (n.idle_j, n.other_j, n.loadgen_j, dict(n.consumers_j))
        n.idle_j = n.other_j = n.loadgen_j = 0.0
        n.consumers_j = Counter()
        return out
