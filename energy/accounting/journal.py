"""A node's energy state, kept where the next energy actor of the node finds it.

An energy actor that dies is started again by the next caller (`energy.actor.node_actor`).
Without this journal the new one began from zero: totals since start fell back to 0, a window
reaching back before the restart lost everything before it, and the replicas it no longer knew
were charged nothing. After every sample the actor writes its checkpoint
(:meth:`energy.accounting.node.NodeEnergy.checkpoint`: totals, the consumers, the last meter
readings) and that tick, under `energy/<node>/`; ticks older than the history are removed. The
next actor reads them back and goes on (:class:`~energy.accounting.node.NodeEnergy` `saved=`):
its meters' counters continue from the last saved reading, so totals never go down and no
joule is counted twice. The energy of the seconds between the last checkpoint and the new
actor's first sample was not metered; the report says how many seconds that was.
"""

from __future__ import annotations

import logging
from collections import deque

from energy.accounting.node import NodeEnergy, Tick
from energy.meters.base import Sample
from ipa_energy.state import StateStore, load_json, save_json

__all__ = ["EnergyJournal", "tick_from_json", "tick_to_json"]

logger = logging.getLogger(__name__)


def tick_to_json(tick: Tick) -> dict:
    return {
        "time_s": tick.time_s,
        "samples": [{"time_s": s.time_s, "energy_j": s.energy_j, "method": s.method} for s in tick.samples],
        "node_cpu_s": tick.node_cpu_s,
        "cpu_s": tick.cpu_s,
        "gpu_busy_s": tick.gpu_busy_s,
        "gpu_util": tick.gpu_util,
    }


def tick_from_json(doc: dict) -> Tick:
    return Tick(
        time_s=float(doc["time_s"]),
        samples=tuple(Sample(float(s["time_s"]), {d: float(j) for d, j in s["energy_j"].items()}, s["method"])
                      for s in doc["samples"]),
        node_cpu_s=float(doc["node_cpu_s"]),
        cpu_s={n: float(v) for n, v in doc["cpu_s"].items()},
        gpu_busy_s=doc.get("gpu_busy_s", {}),
        gpu_util=doc.get("gpu_util", {}),
    )


class EnergyJournal:
    """One node's checkpoint and tick history in a :class:`~ipa_energy.state.StateStore`."""

    def __init__(self, store: StateStore, node_id: str, keep: int):
        self.store = store
        self.prefix = f"energy/{node_id}/"
        self.keep = max(2, keep)  # ticks kept: as many as the actor's history holds
        self._ticks: deque[str] = deque()

    def _tick_key(self, tick: Tick) -> str:
        return f"{self.prefix}tick/{int(round(tick.time_s * 1000)):015d}"

    def save(self, node: NodeEnergy) -> None:
        """Write `node`'s last tick, then its checkpoint (which goes on from that tick)."""
        tick, checkpoint = node.history[-1], node.checkpoint()  # the sampling thread is the one that ticks
        key = self._tick_key(tick)
        save_json(self.store, key, tick_to_json(tick))
        if not self._ticks or self._ticks[-1] != key:
            self._ticks.append(key)
        save_json(self.store, self.prefix + "checkpoint", checkpoint)
        while len(self._ticks) > self.keep:
            self.store.remove(self._ticks.popleft())

    def load(self) -> tuple[dict, list[Tick]] | None:
        """(checkpoint, ticks oldest first) a previous actor of this node left; None: none."""
        checkpoint = load_json(self.store, self.prefix + "checkpoint")
        if checkpoint is None:
            return None
        ticks = []
        for key in self.store.keys(self.prefix + "tick/"):
            doc = load_json(self.store, key)
            if doc is None:
                continue
            try:
                ticks.append(tick_from_json(doc))
                self._ticks.append(key)
            except (KeyError, TypeError, ValueError) as e:  # one bad tick must not stop metering
                logger.error("energy journal: %s unreadable (%s); left out", key, e)
        while len(self._ticks) > self.keep:
            self.store.remove(self._ticks.popleft())
            ticks.pop(0)
        return checkpoint, ticks

    def clear(self) -> int:
        self._ticks.clear()
        return self.store.delete(self.prefix)
