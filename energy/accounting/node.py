"""The per-node energy service: samples this node's meters and attributes energy to replicas.

`NodeEnergy` is plain Python (tested without Ray); :class:`energy.actor.NodeEnergyActor` runs
one per Ray node around it. Its answers are the models of :mod:`ipa_energy.energy`:
:class:`EnergyRates` (what replicas charge with), :class:`EnergyWindow` rows (attribution over a
window) and :class:`NodeEnergyReport` (totals since start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

from energy.accounting.attribution import Attribution, Usage, attribute, joules_per_cpu_second
from energy.config import EnergyConfig
from energy.meters.base import Measurement, Meter, Sample
from ipa_energy.energy import ESTIMATE, MEASURED, DeviceEnergy, EnergyRates, EnergyWindow, NodeEnergyReport

__all__ = ["RATES_SPAN_S", "Consumer", "NodeEnergy", "Tick", "node_busy_cpu_seconds"]

logger = logging.getLogger(__name__)

#: how far back NodeEnergy.rates() averages by default (s)
RATES_SPAN_S = 10.0


@dataclass
class Consumer:
    """A process whose energy we attribute (a Serve replica), with its labels."""

    pid: int
    labels: dict[str, str]
    gpu_ids: tuple[int, ...] = ()
    gpu_fraction: float = 0.0
    process: Any = None
    gpu_busy_s: float = 0.0  # cumulative busy seconds reported by the replica


@dataclass(frozen=True)
class Tick:
    """One CPU-interval snapshot: meters' samples plus cumulative CPU and GPU usage."""

    time_s: float
    samples: tuple[Sample, ...]
    node_cpu_s: float
    cpu_s: dict[str, float]
    gpu_busy_s: dict[str, dict[str, float]] = field(default_factory=dict)
    gpu_util: dict[str, dict[str, float]] = field(default_factory=dict)  # gpu:N → consumer → Σ util × s


def node_busy_cpu_seconds() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class NodeEnergy:
    """Samples meters, keeps a bounded history, answers windows, accumulates attribution."""

    def __init__(self, meters: list[Meter], config: EnergyConfig, clock: Callable[[], float] = time.time,
                 busy_cpu_s: Callable[[], float] = node_busy_cpu_seconds,
                 saved: tuple[dict, list[Tick]] | None = None):
        """`saved`: (checkpoint, ticks) a previous service of this node left (energy.accounting.journal):
        totals, consumers and history go on from them, and the meters' counters from their last reading."""
        self.meters = meters
        self.config = config
        self.clock = clock
        self.busy_cpu_s = busy_cpu_s
        self.consumers: dict[str, Consumer] = {}
        self.labels: dict[str, dict[str, str]] = {}  # every consumer ever seen, so totals stay labelled
        self.history: deque[Tick] = deque(maxlen=max(2, int(config.history_s / config.cpu_interval_s)))
        self.totals: dict[str, float] = {}  # consumer → J attributed since start
        self.other_j = 0.0  # active energy of processes we do not track (J)
        self.idle_j = 0.0  # idle energy, never attributed (J)
        self.device_j: dict[str, float] = {}  # J per device since start: same span as the three above
        self.started_s: float | None = None
        self.device_methods = {d: m.method for m in meters for d in m.devices()}
        self._idle_w = dict(config.idle_w)
        self.idle_source = {d: "config" for d in config.idle_w}
        for m in meters:  # estimates know their idle power; measured idle is learned below
            for d, w in getattr(m, "idle_power_w", lambda: {})().items():
                if d not in config.idle_w:
                    self._idle_w[d] = w
                    self.idle_source[d] = "assumed by the estimate"
        self._learned_idle: dict[str, float] = {}
        self._gpu_util: dict[str, dict[str, float]] = {}
        self._gpu_util_seen: dict[str, tuple[int, float]] = {}  # gpu → (NVML timestamp, wall time)
        self._lock = threading.Lock()
        self._offset_j: dict[str, float] = {}  # device → J its counter had reached under a previous service
        self._baseline: Tick | None = None  # a previous service's last tick, until this one's first
        self.unmetered_s = 0.0  # seconds between a previous service's last checkpoint and this one's start
        self.restarts = 0
        if saved is not None:
            self._restore(*saved)
        self.tick()

    # -- continuity across a restart (energy.accounting.journal) ------------------------

    def checkpoint(self) -> dict:
        """What a later service of this node needs to go on from the last tick (JSON)."""
        with self._lock:
            last = self.history[-1]
            consumers = {}
            for name, c in self.consumers.items():
                try:
                    created = c.process.create_time()
                except (psutil.Error, AttributeError):
                    continue
                consumers[name] = {"pid": c.pid, "labels": c.labels, "gpu_ids": list(c.gpu_ids),
                                   "gpu_fraction": c.gpu_fraction, "gpu_busy_s": c.gpu_busy_s, "created": created}
            return {
                "time_s": last.time_s, "started_s": self.started_s, "totals": dict(self.totals),
                "other_j": self.other_j, "idle_j": self.idle_j, "device_j": dict(self.device_j),
                "labels": {n: dict(lb) for n, lb in self.labels.items()},
                "meter_j": {d: j for sample in last.samples for d, j in sample.energy_j.items()},
                "learned_idle": dict(self._learned_idle),
                "learned_idle_source": {d: self.idle_source[d] for d in self._learned_idle if d in self.idle_source},
                "gpu_util": {g: dict(per) for g, per in self._gpu_util.items()},
                "consumers": consumers, "unmetered_s": self.unmetered_s, "restarts": self.restarts,
            }

    def _restore(self, checkpoint: dict, ticks: list[Tick]) -> None:
        cp = checkpoint
        self.started_s = cp.get("started_s")
        self.totals = {n: float(j) for n, j in cp.get("totals", {}).items()}
        self.other_j, self.idle_j = float(cp.get("other_j", 0.0)), float(cp.get("idle_j", 0.0))
        self.device_j = {d: float(j) for d, j in cp.get("device_j", {}).items()}
        self.labels = {n: dict(lb) for n, lb in cp.get("labels", {}).items()}
        self._offset_j = {d: float(j) for d, j in cp.get("meter_j", {}).items() if d in self.device_methods}
        self._learned_idle = {d: float(w) for d, w in cp.get("learned_idle", {}).items() if d not in self._idle_w}
        self.idle_source.update({d: src for d, src in cp.get("learned_idle_source", {}).items() if d in self._learned_idle})
        self._gpu_util = {g: dict(per) for g, per in cp.get("gpu_util", {}).items()}
        for name, c in cp.get("consumers", {}).items():
            try:
                process = psutil.Process(c["pid"])
                if abs(process.create_time() - c["created"]) > 1.0:
                    continue  # the pid was reused: not the replica that registered
            except psutil.Error:
                continue  # it stopped meanwhile: its energy so far stays in totals
            self.consumers[name] = Consumer(c["pid"], dict(c["labels"]), tuple(c["gpu_ids"]), c["gpu_fraction"],
                                            process, float(c.get("gpu_busy_s", 0.0)))
        now = self.clock()
        # ticks up to the checkpoint's only: a tick saved by an actor that died before its
        # checkpoint is not what the counters continue from
        self.history.extend(t for t in ticks if now - self.config.history_s <= t.time_s <= float(cp["time_s"]))
        self._baseline = self.history[-1] if self.history else None
        self.unmetered_s = float(cp.get("unmetered_s", 0.0)) + max(0.0, now - float(cp["time_s"]))
        self.restarts = int(cp.get("restarts", 0)) + 1
        logger.warning("energy service resumed from its checkpoint of %.1f s ago (restart %d): totals, %d consumers "
                       "and %d ticks kept", now - float(cp["time_s"]), self.restarts, len(self.consumers), len(self.history))

    def _continued(self, sample: Sample) -> Sample:
        """`sample` with each counter continued from where the previous service left it: this
        service's first sample reads what the previous one's last did (the gap between them was
        not metered: `unmetered_s`), so a window across the restart counts nothing twice."""
        if self._baseline is not None:
            for d, j in sample.energy_j.items():
                if d in self._offset_j:
                    self._offset_j[d] -= j
        if not self._offset_j:
            return sample
        return Sample(sample.time_s, {d: j + self._offset_j.get(d, 0.0) for d, j in sample.energy_j.items()},
                      sample.method)

    # -- consumers ------------------------------------------------------------------

    def register(self, consumer: str, pid: int, labels: dict[str, str], gpu_ids=(), gpu_fraction: float = 0.0) -> None:
        with self._lock:
            try:
                process = psutil.Process(pid)
                process.cpu_times()
            except psutil.Error:
                logger.warning("consumer %s: pid %d not found on this node", consumer, pid)
                return
            known = self.consumers.get(consumer)
            busy = known.gpu_busy_s if known is not None and known.pid == pid else 0.0  # registered again
            self.consumers[consumer] = Consumer(pid, labels, tuple(gpu_ids), gpu_fraction, process, busy)
            self.labels[consumer] = dict(labels)

    def relabel(self, consumer: str, labels: dict[str, str]) -> None:
        """Attribute `consumer`'s energy under `labels` from the next window on (its counters stay)."""
        with self._lock:
            if consumer in self.consumers:
                self.consumers[consumer].labels = dict(labels)
                self.labels[consumer] = dict(labels)

    def outside_cores(self, span_s: float = RATES_SPAN_S) -> float:
        """Cores busy outside the stage replicas (consumers labelled with a stage) over the last
        `span_s`: the serving path, Ray's daemons, a load generator on this node, the OS."""
        with self._lock:
            if len(self.history) < 2:
                return 0.0
            last = self.history[-1]
            first = next((t for t in self.history if t.time_s >= last.time_s - span_s), self.history[0])
            dt = last.time_s - first.time_s
            if dt <= 0:
                return 0.0
            stages = {n for n, labels in self.labels.items() if labels.get("stage")}
            staged = sum(last.cpu_s[n] - first.cpu_s.get(n, 0.0) for n in last.cpu_s if n in stages)
            return max(0.0, (last.node_cpu_s - first.node_cpu_s - staged) / dt)

    def report_busy(self, consumer: str, seconds: float) -> None:
        with self._lock:
            c = self.consumers.get(consumer)
            if c is not None:
                c.gpu_busy_s += seconds

    # -- sampling -------------------------------------------------------------------

    def sample_gpu_processes(self) -> None:
        """Accumulate NVML per-process SM utilisation × time for registered consumers.

        Drivers that do not report it (or vGPUs) raise NOT_SUPPORTED: attribution then
        falls back to GPU fraction × busy time.
        """
        import pynvml

        with self._lock:
            self._sample_gpu_processes(pynvml)

    def _sample_gpu_processes(self, pynvml) -> None:
        by_pid = {c.pid: n for n, c in self.consumers.items()}
        now = self.clock()
        for meter in self.meters:
            if meter.method != "zeus-nvml":
                continue
            for index in meter.indices:
                device = f"gpu:{index}"
                last_ts, last_t = self._gpu_util_seen.get(device, (0, now))
                try:
                    samples = pynvml.nvmlDeviceGetProcessUtilization(meter.handle(index), last_ts)
                except pynvml.NVMLError:
                    continue
                acc = self._gpu_util.setdefault(device, {})
                for s in samples:
                    if s.pid in by_pid:
                        acc[by_pid[s.pid]] = acc.get(by_pid[s.pid], 0.0) + s.smUtil * (now - last_t)
                self._gpu_util_seen[device] = (max([last_ts, *(s.timeStamp for s in samples)]), now)

    def _cpu_seconds(self) -> dict[str, float]:
        out = {}
        for name, c in list(self.consumers.items()):
            try:
                t = c.process.cpu_times()
                out[name] = t.user + t.system + getattr(t, "children_user", 0) + getattr(t, "children_system", 0)
            except psutil.Error:  # the replica stopped: its energy so far stays in totals
                self.consumers.pop(name, None)
        return out

    def tick(self) -> Tick:
        """Take one snapshot and attribute the interval since the previous one."""
        with self._lock:
            samples = tuple(self._continued(m.sample()) for m in self.meters)
            busy = {
                f"gpu:{g}": {n: c.gpu_busy_s * c.gpu_fraction for n, c in self.consumers.items() if g in c.gpu_ids}
                for g in {g for c in self.consumers.values() for g in c.gpu_ids}
            }
            util = {g: dict(per) for g, per in self._gpu_util.items()}
            tick = Tick(self.clock(), samples, self.busy_cpu_s(), self._cpu_seconds(), busy, util)
            previous = self.history[-1] if self.history else None
            self.history.append(tick)
            resumed, self._baseline = self._baseline is not None, None
            if resumed:  # the first tick after a restart: a baseline, nothing metered since the last
                return tick
            if previous is None:
                self.started_s = tick.time_s if self.started_s is None else self.started_s
                return tick
            for a in self._attribute(previous, tick):
                for name, j in a.consumers_j.items():
                    self.totals[name] = self.totals.get(name, 0.0) + j
                for d, j in a.window.energy_j.items():
                    self.device_j[d] = self.device_j.get(d, 0.0) + j
                self.other_j += a.other_j
                self.idle_j += a.idle_j
                self._learn_idle(a.window)
        return tick

    def _learn_idle(self, window: Measurement) -> None:
        """Measured devices without a configured idle power: the lowest power seen so far."""
        if window.duration_s <= 0 or window.method == ESTIMATE:
            return
        for d, j in window.energy_j.items():
            if d not in self._idle_w:
                self._learned_idle[d] = min(self._learned_idle.get(d, float("inf")), j / window.duration_s)
                self.idle_source[d] = "learned: lowest power seen since start"

    def idle_w(self) -> dict[str, float]:
        return {**self._learned_idle, **self._idle_w}

    def _attribute(self, a: Tick, b: Tick) -> list[Attribution]:
        usage = Usage(
            cpu_s={n: b.cpu_s[n] - a.cpu_s.get(n, b.cpu_s[n]) for n in b.cpu_s},
            node_cpu_s=b.node_cpu_s - a.node_cpu_s,
            gpu_busy={g: {n: s - a.gpu_busy_s.get(g, {}).get(n, 0.0) for n, s in per.items()} for g, per in b.gpu_busy_s.items()},
            gpu_util={g: {n: u - a.gpu_util.get(g, {}).get(n, 0.0) for n, u in per.items()} for g, per in b.gpu_util.items()},
        )
        idle = self.idle_w()
        return [attribute(Measurement.between(sa, sb), idle, usage) for sa, sb in zip(a.samples, b.samples)]

    # -- queries --------------------------------------------------------------------

    def _bracket(self, t0: float, t1: float) -> tuple[Tick, Tick]:
        ticks = list(self.history)
        first = max((t for t in ticks if t.time_s <= t0), key=lambda t: t.time_s, default=ticks[0])
        last = min((t for t in ticks if t.time_s >= t1), key=lambda t: t.time_s, default=ticks[-1])
        return first, last

    def window(self, t0: float, t1: float) -> list[Attribution]:
        """Attribution over [t0, t1], widened to the nearest snapshots (one per meter)."""
        with self._lock:
            first, last = self._bracket(t0, t1)
        return self._attribute(first, last)

    def energy_windows(self, node_id: str, t0: float, t1: float) -> list[EnergyWindow]:
        """:meth:`window` as rows of this node (`node_id`), one per meter."""
        return [
            EnergyWindow(node_id=node_id, start_s=a.window.start_s, end_s=a.window.end_s, method=a.window.method,
                         energy_j=a.window.energy_j, consumers_j=a.consumers_j, other_j=a.other_j, idle_j=a.idle_j)
            for a in self.window(t0, t1)
        ]

    def rates(self, span_s: float = RATES_SPAN_S) -> EnergyRates:
        """Recent node power and the energy cost of a busy CPU second (J/s), per method."""
        with self._lock:
            now = self.history[-1].time_s
            first, last = self._bracket(now - span_s, now)
        if first is last:
            return EnergyRates(time_s=now, j_per_cpu_s=0.0, methods=dict(self.device_methods))
        windows = [Measurement.between(sa, sb) for sa, sb in zip(first.samples, last.samples)]
        idle = self.idle_w()
        cpu_windows = [w for w in windows if any(not d.startswith("gpu:") for d in w.energy_j)]
        duration = last.time_s - first.time_s
        gpu_j_per_busy_s = {}
        for w in windows:
            for d, j in w.energy_j.items():
                if d.startswith("gpu:"):
                    active = max(j - idle.get(d, 0.0) * w.duration_s, 0.0)
                    # fraction-weighted busy seconds of the replicas on this GPU in the window
                    busy = sum(s - first.gpu_busy_s.get(d, {}).get(n, 0.0) for n, s in last.gpu_busy_s.get(d, {}).items())
                    gpu_j_per_busy_s[d] = active / busy if busy > 0 else active / max(w.duration_s, 1e-9)
        return EnergyRates(
            time_s=last.time_s,
            j_per_cpu_s=sum(joules_per_cpu_second(w, idle, last.node_cpu_s - first.node_cpu_s) for w in cpu_windows),
            gpu_j_per_busy_s=gpu_j_per_busy_s,
            power_w={d: j / duration for w in windows for d, j in w.energy_j.items()},
            methods=dict(self.device_methods),
            window_s=duration,
        )

    def summary(self, node_id: str) -> NodeEnergyReport:
        """Totals since this node's energy service started: devices = attributed + other + idle.

        The actor-only fields (its own CPU cost) are left at 0 for the actor to fill in.
        """
        with self._lock:
            start, end = self.started_s, self.history[-1].time_s
            duration = end - start if start is not None else 0.0
            return NodeEnergyReport(
                node_id=node_id,
                start_s=start,
                end_s=end,
                devices={
                    d: DeviceEnergy(energy_j=j, method=self.device_methods[d],
                                    mean_power_w=j / duration if duration else 0.0,
                                    measured=self.device_methods[d] in MEASURED)
                    for d, j in self.device_j.items()
                },
                idle_w=self.idle_w(),
                idle_source=dict(self.idle_source),
                attributed_j=dict(self.totals),
                other_j=self.other_j,
                idle_j=self.idle_j,
                consumers={n: {**labels, "running": n in self.consumers} for n, labels in self.labels.items()},
                assumptions={type(m).__name__: getattr(m, "assumptions", {}) for m in self.meters},
                unmetered_s=self.unmetered_s,
                restarts=self.restarts,
            )
