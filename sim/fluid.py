"""Scale mode: the served app as per-second flows, for days of traffic on thousands of nodes.

:mod:`sim.engine` follows every request; at 1,000 nodes and weeks of the Twitter trace that is
10¹⁰ events. :class:`FluidEngine` follows each second's *counts* instead, with the same parts
and the same planner (docs/simulator.md, "Scale mode"):

* **Arrivals**: the trace's integer arrivals per second (loadgen.traces.counts, as Locust sends them).
* **Stages** in series, each member of a stage (a mix splits by its shares) a fluid queue:
  `served = min(backlog + inflow, μ)` with μ = ready replicas × batch / batch time, the batch
  time the profile's p50 at the batch size that forms (full when a backlog waits, else
  1 + λ·wait, or what piles up during a batch), × the node type's speed × contention.
* **Contention**: per node, processor sharing as in sim.engine, in expectation: a busy replica
  (d cores) among r − 1 others, each busy with the stage's utilisation u, and the node's cores
  busy outside the replicas, slows by E[max(1, (d + Σ others + outside) / cores)] (binomial
  over the others). Replicas are spread evenly over the nodes they fill.
* **Latency** of a second's requests: the backlog ahead of them (FIFO: backlog / μ), the batch
  fill and the service's p01 are deterministic; the rest of the service (log-normal from the
  profile's p50/p99) and the wait for a free replica (M/G/n: Sakasegawa's P(wait) and Allen–Cunneen's variability) are random, summed
  over stages by their moments and fitted by a log-normal (Fenton–Wilkinson).
* **Shedding**: the live shedder's rule (serve_app.shedding) on the flows — a request is refused
  when the backlog ahead of it through every stage takes longer than the SLA to drain — and
  Serve's bounded queue per member (QUEUED_BATCHES_PER_REPLICA × batch × replicas).
* **Changes** as serve_app.rollout: a grow cold-starts new replicas (a Ray worker start plus
  the profiled cold start, stretched by contention); a variant switch grows on the running
  variant first, then builds the new model in place (`switch_core_s`); routing flips when all is
  ready; a shrink drains at once. With warm variants (serve_app.warm) a member whose replicas
  have been ready long enough to build their slot's other variants (`switch_core_s` each)
  switches at once. A change whose replicas do not fit the cluster stays pending
  and rolls back at the apply timeout.
* **Nodes and power**: replicas fill node types in file order (CPU, memory and GPU reservations);
  a node draws idle power while it holds a replica, and is released `idle_timeout_s` after it
  emptied; dynamic energy is each request's profiled J at its batch size × speed, plus the busy
  cores outside the replicas at the profiles' active J per core-second.

Requests are aggregated: the requests sent in one `aggregate_s` bucket become a few
:class:`RequestRow` with a `count` — per latency band of the bucket's distribution (below the
median, to the p90, to the p99, above), split at the SLA into the part that met it and the part
that missed — plus one row of shed requests and one of requests unanswered at the end. SLO
attainment is exact to the rounding of counts; percentiles are those of the bands (a band's
latency is its middle quantile).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ipa_energy.records import RequestRow
from ipa_energy.spec import PipelineSpec, Plan, Profile
from planner.capacity import P99_Z
from serve_app.layout import QUEUED_BATCHES_PER_REPLICA
from sim.cluster import SimCluster, node_power
from sim.fluid_changes import Change, FluidChanges
from sim.fluid_nodes import NodeGroup, NodePlacement
from sim.fluid_rows import AggregatedRows
from sim.parts import cold_start_s, profile_at, replica_memory_mb, slot_variants

__all__ = ["FluidEngine"]

#: the highest utilisation the stochastic wait is taken at (above: the backlog holds the excess)
U_STATIONARY = 0.95


@dataclass
class _Member:
    """A stage deployment (pipeline.stage.i): its config, replicas and backlog."""

    name: str
    variant: str
    batch: int
    wait_s: float
    share: float
    ready: int
    backlog: float = 0.0
    starting: list = field(default_factory=list)  # [ready_at, replicas of the running variant]
    switch: tuple | None = None  # (ready_at, variant, batch, wait_s): an in-place switch under way
    # the last second's: utilisation, service rate, batch, batch seconds, p99 ms, requests served
    util: float = 0.0
    mu: float = 0.0
    k: float = 1.0
    batch_s: float = 0.0
    p99_ms: float = 0.0
    served: float = 0.0
    cores: float = 1.0  # cores a busy replica uses
    joules: float = 0.0
    scaling: tuple | None = None  # Serve autoscaling: (up, since)
    warm_at: float = 0.0  # when every replica has its slot's other variants built (serve_app.warm)

    def replicas(self) -> int:
        return self.ready + sum(n for _, n in self.starting)


class FluidEngine(FluidChanges, AggregatedRows, NodePlacement):
    def __init__(self, pipeline: PipelineSpec, profiles: Mapping[tuple[str, int], Profile], cluster: SimCluster,
                 plan: Plan, counts: np.ndarray, *, aggregate_s: int = 1, shed: bool = True):
        self.pipeline, self.profiles, self.cluster, self.host = pipeline, profiles, cluster, cluster.host
        self.counts = np.asarray(counts, dtype=np.int64)
        self.aggregate_s, self.shed = max(1, int(aggregate_s)), shed
        self.sla_s = pipeline.sla_ms / 1000
        self.now = 0.0
        self.groups = []
        for t in cluster.node_types:
            idle_w, active_j = node_power(t, profiles, pipeline)
            self.groups.append(NodeGroup(t.name, t.cores, t.memory_mb, t.gpus, t.count, t.min_workers, t.speed, idle_w,
                                         active_j, active=t.min_workers, started_ever=t.min_workers > 0))
        self._variants = {v.name: v for st in pipeline.stages for v in st.variants}
        self._slot_variants = slot_variants(pipeline)  # variant → what its replicas switch among in place
        self._sizes: dict[str, list[int]] = {}
        for (variant, b) in profiles:
            self._sizes.setdefault(variant, []).append(b)
        for sizes in self._sizes.values():
            sizes.sort()
        self._memo: dict[tuple, object] = {}
        self._need: list[int] | None = None
        self.routing = plan
        self._autoscaled = any(sp.autoscaling is not None for sp in plan.stages.values())
        self.version = 1
        self.history: list[int] = []
        self.change: Change | None = None
        self.cold_starts: dict[str, float] = {}
        self._starts = 0
        self.stages: dict[str, list[_Member]] = {}
        for st in pipeline.stages:
            self.stages[st.name] = [self._member(st.name, i, m, m.replicas) for i, m in enumerate(plan.stages[st.name].members())]
        if not self._fits(self._reserved()):
            raise ValueError("the opening plan does not fit the cluster")
        self._place()
        self.stretch = 1.0
        self.outside = 0.0  # cores busy outside the replicas, per active node
        self.calls: deque = deque()  # (second, stage, variant, served, s per request, batch, p99 ms)
        self._bucket: dict | None = None
        self.rows: list[RequestRow] = []
        self.base = 0.0
        self.method = None
        self.answered = self.sent = 0

    # -- profiles and resources ---------------------------------------------------------------

    def _member(self, stage: str, i: int, m, ready: int) -> _Member:
        return _Member(f"{self.pipeline.name}.{stage}.{i}", m.variant, m.batch_size, m.batch_wait_timeout_ms / 1000,
                       m.share, ready)

    def _profile(self, variant: str, k: float) -> tuple[float, float, float, float]:
        key = (variant, max(1, int(round(k))))
        if key not in self._memo:
            self._memo[key] = profile_at(self.profiles, self._sizes[variant], variant, key[1])
        return self._memo[key]

    def _memory(self, variant: str) -> float:
        if ("memory", variant) not in self._memo:
            self._memo[("memory", variant)] = replica_memory_mb(self.profiles, self._variants[variant])
        return self._memo[("memory", variant)]

    def _warm_s(self, variant: str) -> float:
        """Seconds a ready replica of `variant` takes to build its slot's other variants (serve_app.warm)."""
        if not self.host.warm_variants or self._variants[variant].resources.num_gpus:
            return math.inf if self.host.warm_variants else 0.0
        others = len(self._slot_variants[variant]) - 1
        return others * self.host.switch_core_s * max((g.speed for g in self.groups), default=1.0)

    def _cold_start(self, variant: str) -> float:
        return cold_start_s(self.profiles, variant)

    # -- the clock ------------------------------------------------------------------------------

    def complete_seconds(self) -> int:
        """Whole seconds of `history` complete now (the flows move in whole seconds of the trace)."""
        return int(self.now + 1e-9)

    def run_until(self, t_end: float, until=None) -> bool:
        """Whole seconds up to `t_end` (or until `until()` holds after one); whether `until` held."""
        while self.now + 1 <= t_end + 1e-9:
            self._second()
            if until is not None and until():
                return True
        return until() if until is not None else False

    def idle(self) -> bool:
        """Past the trace with nothing left in any queue."""
        return int(self.now) >= len(self.counts) and all(m.backlog < 0.5 for ms in self.stages.values() for m in ms)

    def _second(self) -> None:
        t = int(self.now)
        arrivals = int(self.counts[t]) if t < len(self.counts) else 0
        self.history.append(arrivals)
        self._place(self._ready(t) | self._autoscale())
        nodes = sum(g.active for g in self.groups)
        cores = sum(g.active * g.cores for g in self.groups) or 1.0
        speed = sum(g.active * g.speed for g in self.groups) / nodes if nodes else 1.0
        # the ingress: the shedder's rule on the backlog ahead (each stage's drain time)
        admitted, shed = float(arrivals), 0.0
        if self.shed and arrivals:
            drain = sum(max(m.backlog / m.mu for m in ms if m.mu > 0) if any(m.mu > 0 for m in ms) else 0.0
                        for ms in self.stages.values())
            first = [m for m in self.stages[self.pipeline.stages[0].name] if m.mu > 0]
            if first:  # admitted while the backlog ahead drains within the SLA
                room = max(0.0, (self.sla_s - drain) * sum(m.mu for m in first) + sum(m.mu for m in first))
                admitted = min(admitted, room)
                shed = arrivals - admitted
        inflow, deterministic, mean, var, dyn_j = admitted, self.host.overhead_ms / 1000, 0.0, 0.0, 0.0
        for st in self.pipeline.stages:
            out = 0.0
            for m in self.stages[st.name]:
                lam = inflow * m.share
                served, d, mu_s, var_s, stage_shed, j = self._flow(m, lam, speed)
                out += served
                shed += stage_shed
                deterministic += d * m.share
                mean += mu_s * m.share
                var += var_s * m.share
                dyn_j += j
                self.calls.append((t, st.name, m.variant, served, m.batch_s / max(1.0, m.k), m.k, m.p99_ms))
            inflow = out
        while self.calls and self.calls[0][0] < t - 120:
            self.calls.popleft()
        # contention for the next second, and the node energy of this one
        self.outside = self.host.background_cores + arrivals * self.host.serving_cpu_s / max(1, nodes)
        self.stretch = self._contention(nodes)
        for g in self.groups:
            if not g.active:
                continue
            w = g.active * g.cores / cores
            g.idle_j += g.active * g.idle_w
            g.other_j += (self.host.background_cores * g.active + arrivals * self.host.serving_cpu_s * w) * g.active_j
        if self.groups and self.groups[0].active:
            self.groups[0].loadgen_j += arrivals * self.host.loadgen_cpu_s * self.groups[0].active_j
        self._record(t, arrivals, admitted, shed, deterministic, mean, var, dyn_j, inflow)
        self.now = t + 1.0

    def _flow(self, m: _Member, lam: float, speed: float) -> tuple:
        """One second of a member: (served, deterministic s, random mean s, random variance s², shed, J)."""
        n = m.ready
        if n <= 0:
            m.backlog += lam
            m.mu = m.util = 0.0
            return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        p50 = self._profile(m.variant, 1)[0]
        k = m.batch if m.backlog >= m.batch * n else min(m.batch, max(1.0, 1 + lam * m.wait_s, lam * p50 / n))
        p50, p99, j_req, cpu_s = self._profile(m.variant, k)
        batch_s = p50 * speed * self.stretch
        m.cores = max(0.05, cpu_s * k / p50) if p50 > 0 else 1.0
        mu = n * k / batch_s
        ahead = m.backlog
        total = m.backlog + lam
        served = min(total, mu)
        m.backlog = total - served
        cap = QUEUED_BATCHES_PER_REPLICA * m.batch * n
        shed = max(0.0, m.backlog - cap)
        m.backlog -= shed
        # latency of this second's requests
        deterministic = (ahead + max(0.0, lam - mu) / 2) / mu
        if k > 1 and lam > 0:
            deterministic += min(m.wait_s, (k - 1) / lam) / 2
        sigma = math.log(max(p99, p50) / p50) / P99_Z if p50 > 0 else 0.0
        s_mean = batch_s * math.exp(sigma * sigma / 2)
        s_var = s_mean * s_mean * (math.exp(sigma * sigma) - 1)
        # the wait for a free replica at the stationary utilisation; past U_STATIONARY the excess
        # is the fluid backlog's (above), which M/G/n's 1/(1 − u) would count a second time
        u = min(lam / mu, U_STATIONARY) if mu > 0 else 0.0
        wait_mean = wait_var = 0.0
        if u > 0 and m.backlog <= 0 and ahead <= 0:  # with a backlog, its drain (above) is the wait
            c = u ** (math.sqrt(2 * (n + 1)) - 1)  # P(wait) (Sakasegawa)
            theta = batch_s / (n * (1 - u)) * (1 / max(k, 1.0) + s_var / (s_mean * s_mean)) / 2
            wait_mean, wait_var = c * theta, c * (2 - c) * theta * theta
        floor = batch_s * math.exp(-sigma * P99_Z)  # the service's p01: below it nothing varies
        deterministic += floor
        m.util, m.mu, m.k, m.batch_s, m.served, m.joules = u, mu, k, batch_s, served, served * j_req * speed
        m.p99_ms = 1000 * (deterministic - floor + batch_s * math.exp(sigma * P99_Z) + wait_mean + P99_Z * math.sqrt(wait_var))
        return served, deterministic, s_mean - floor + wait_mean, s_var + wait_var, shed, m.joules

    def _contention(self, nodes: int) -> float:
        """How much a busy replica's service stretches next second (processor sharing, in expectation)."""
        members = [m for ms in self.stages.values() for m in ms if m.ready]
        replicas = sum(m.ready for m in members)
        if not replicas or not nodes:
            return 1.0
        cores = sum(g.active * g.cores for g in self.groups) / nodes
        u = min(1.0, sum(m.util * m.ready for m in members) / replicas)
        d = min(cores, sum(m.cores * m.ready for m in members) / replicas)
        per_node = replicas / nodes
        key = ("stretch", round(u, 3), round(d, 2), round(per_node, 2), round(self.outside, 2), cores)
        if key not in self._memo:
            self._memo[key] = self._expected_stretch(u, d, per_node, cores)
        return self._memo[key]

    def _expected_stretch(self, u: float, d: float, per_node: float, cores: float) -> float:
        lo = max(0, int(math.floor(per_node)) - 1)
        frac = per_node - math.floor(per_node)
        out = 0.0
        for others, w in ((lo, 1 - frac), (lo + 1, frac)):
            if w <= 0:
                continue
            out += w * sum(math.comb(others, j) * u ** j * (1 - u) ** (others - j) *
                           max(1.0, (d * (1 + j) + self.outside) / cores) for j in range(others + 1))
        return max(1.0, out)

    # -- what the planner and the results read ---------------------------------------------------

    def observations(self, interval_s: float) -> list[tuple]:
        """(stage, variant, requests, s per request, mean batch, p99 ms) of the last interval."""
        since = self.now - interval_s
        groups: dict[tuple[str, str], list] = {}
        for t, stage, variant, served, s_req, k, p99 in self.calls:
            if t >= since and served > 0:
                groups.setdefault((stage, variant), []).append((served, s_req, k, p99))
        out = []
        for (stage, variant), rows in groups.items():
            n = sum(r[0] for r in rows)
            out.append((stage, variant, int(round(n)), sum(r[0] * r[1] for r in rows) / n,
                        sum(r[0] * r[2] for r in rows) / n, max(r[3] for r in rows)))
        return out

    def replica_counts(self) -> dict[str, int]:
        return {m.name: m.ready for ms in self.stages.values() for m in ms}

    def cost_units(self) -> float:
        out = 0.0
        for ms in self.stages.values():
            for m in ms:
                res = self._variants[m.variant].resources
                out += m.ready * (res.num_cpus + res.num_gpus)
        return out
