"""One detached energy actor per Ray node, and how replicas find the one on their node.

Each actor is pinned to its node (NodeAffinitySchedulingStrategy) and named after it
(:func:`actor_name`, in :data:`ipa_energy.RAY_NAMESPACE`), so replicas register with, and read
rates from, the actor of their own node. Its answers are dumped :mod:`ipa_energy.energy` models:
``rates()`` an :class:`EnergyRates`, ``window()`` :class:`EnergyWindow` rows, ``summary()`` a
:class:`NodeEnergyReport`; validate them on receipt (``Model.model_validate``).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import psutil
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from energy.accounting.journal import EnergyJournal
from energy.accounting.node import NodeEnergy
from energy.config import EnergyConfig
from energy.meters.select import select_meters
from energy.supply import host_supply
from ipa_energy import RAY_NAMESPACE
from ipa_energy.energy import join_methods
from ipa_energy.state import RayStore

__all__ = ["MAX_CONCURRENCY", "NodeEnergyActor", "actor_name", "ensure_node_actors", "node_actor"]

logger = logging.getLogger(__name__)

#: concurrent calls an actor serves (replicas' rates and registrations, the ingress's summaries)
MAX_CONCURRENCY = 16


def actor_name(node_id: str) -> str:
    """The name of the energy actor of `node_id` (in :data:`ipa_energy.RAY_NAMESPACE`)."""
    return f"energy-node-{node_id}"


@ray.remote(num_cpus=0, max_concurrency=MAX_CONCURRENCY)
class NodeEnergyActor:
    """Samples this node's meters on its own threads; answers rates, windows and summaries."""

    def __init__(self, config: dict):
        from ray.util import metrics

        self.config = EnergyConfig.model_validate(config)
        self.node_id = ray.get_runtime_context().get_node_id()
        # a previous actor of this node (killed, or its process lost) left its state: go on from it
        self.journal = EnergyJournal(RayStore(), self.node_id, keep=int(self.config.history_s / self.config.cpu_interval_s))
        try:
            saved = self.journal.load()
        except Exception:
            logger.exception("energy journal not read; starting from zero")
            saved = None
        self.state = NodeEnergy(select_meters(self.config), self.config, saved=saved)
        # the totals the previous actor exported as metrics: this one's counters count what follows
        cp = saved[0] if saved else {}
        self._exported = {**cp.get("totals", {}), "(other processes)": cp.get("other_j", 0.0), "(idle)": cp.get("idle_j", 0.0)}
        self.gpu_meters = [m for m in self.state.meters if m.method == "zeus-nvml"]
        self._process = psutil.Process(os.getpid())
        self._started = (time.time(), self._cpu_s())
        self._power = metrics.Gauge("ipa_energy_node_power_watts", "Node power by device (W)", tag_keys=("device", "method"))
        self._energy = metrics.Counter("ipa_energy_node_energy_joules", "Node energy by device (J)", tag_keys=("device", "method"))
        self._attributed = metrics.Counter(
            "ipa_energy_attributed_joules", "Energy attributed to deployments, other processes and idle (J)",
            tag_keys=("deployment", "variant", "method"),
        )
        self._stop = threading.Event()
        threading.Thread(target=self._cpu_loop, daemon=True, name="energy-cpu").start()
        if self.gpu_meters:
            threading.Thread(target=self._gpu_loop, daemon=True, name="energy-gpu").start()
        logger.info("energy actor on %s: meters %s", self.node_id, [m.method for m in self.state.meters])

    def _cpu_s(self) -> float:
        t = self._process.cpu_times()
        return t.user + t.system

    def _cpu_loop(self) -> None:
        previous_totals = self._exported
        while not self._stop.wait(self.config.cpu_interval_s):
            try:
                before = self.state.history[-1]
                tick = self.state.tick()
                self._export(before, tick, previous_totals)
                self.journal.save(self.state)
            except Exception:  # a meter hiccup must not end sampling
                logger.exception("energy sampling failed")

    def _gpu_loop(self) -> None:
        # GPUs without an energy counter are integrated from power: sample them often.
        while not self._stop.wait(self.config.gpu_interval_s):
            try:
                for m in self.gpu_meters:
                    if m.needs_polling:
                        m.sample()
                self.state.sample_gpu_processes()
            except Exception:
                logger.exception("GPU sampling failed")

    def _export(self, before, tick, previous_totals: dict[str, float]) -> None:
        dt = tick.time_s - before.time_s
        for sa, sb in zip(before.samples, tick.samples):
            for device, j in sb.energy_j.items():
                delta = max(j - sa.energy_j.get(device, 0.0), 0.0)
                tags = {"device": device, "method": sb.method}
                if delta > 0:
                    self._energy.inc(delta, tags=tags)
                if dt > 0:
                    self._power.set(delta / dt, tags=tags)
        method = join_methods(m.method for m in self.state.meters)
        totals = {**self.state.totals, "(other processes)": self.state.other_j, "(idle)": self.state.idle_j}
        for name, total in totals.items():
            delta = total - previous_totals.get(name, 0.0)
            if delta > 0:
                labels = self.state.labels.get(name, {})
                # a stage slot switches variant in place: the variant it runs now (none for the rest)
                self._attributed.inc(delta, tags={"deployment": labels.get("deployment", name),
                                                  "variant": labels.get("variant", ""), "method": method})
        previous_totals.clear()
        previous_totals.update(totals)

    # -- API ----------------------------------------------------------------------------

    def register(self, consumer: str, pid: int, labels: dict, gpu_ids: list[int], gpu_fraction: float) -> None:
        self.state.register(consumer, pid, labels, gpu_ids, gpu_fraction)

    def relabel(self, consumer: str, labels: dict) -> None:
        self.state.relabel(consumer, labels)

    def report_busy(self, consumer: str, seconds: float) -> None:
        self.state.report_busy(consumer, seconds)

    def rates(self) -> dict:
        """A dumped :class:`~ipa_energy.energy.EnergyRates`."""
        return self.state.rates().model_dump()

    def window(self, t0: float, t1: float) -> list[dict]:
        """Dumped :class:`~ipa_energy.energy.EnergyWindow` rows of this node, one per meter."""
        return [w.model_dump() for w in self.state.energy_windows(self.node_id, t0, t1)]

    def supply(self) -> dict:
        """A dumped :class:`~ipa_energy.cluster.NodeSupply` of this node (the planner's capacity)."""
        return {**host_supply(self.node_id), "outside_cores": round(self.state.outside_cores(), 4)}

    def summary(self) -> dict:
        """A dumped :class:`~ipa_energy.energy.NodeEnergyReport`, with this actor's own CPU cost."""
        wall0, cpu0 = self._started
        cpu_s = self._cpu_s()
        overhead = (cpu_s - cpu0) / max(time.time() - wall0, 1e-9) * 100
        report = self.state.summary(self.node_id).model_copy(update={
            "actor_cpu_s": cpu_s,
            "overhead_cpu_percent_of_one_core": overhead,
            "overhead_cpu_percent_of_node": overhead / (psutil.cpu_count() or 1),
        })
        return report.model_dump()


def node_actor(node_id: str | None = None, config: EnergyConfig | None = None):
    """The energy actor of `node_id` (default: this node), started if it is not running."""
    node_id = node_id or ray.get_runtime_context().get_node_id()
    return NodeEnergyActor.options(
        name=actor_name(node_id),
        namespace=RAY_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote((config or EnergyConfig()).model_dump())


def ensure_node_actors(config: EnergyConfig | None = None) -> dict[str, object]:
    """An energy actor on every alive node (call again to cover nodes that joined since)."""
    return {n["NodeID"]: node_actor(n["NodeID"], config) for n in ray.nodes() if n.get("Alive")}
