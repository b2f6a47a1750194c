"""A node's energy service started again goes on from its journal: continuous, nothing twice."""

import json
import os
import subprocess
import sys

import pytest

from energy.accounting.journal import EnergyJournal, tick_from_json, tick_to_json
from energy.accounting.node import NodeEnergy
from energy.config import EnergyConfig
from ipa_energy.state import MemoryStore
from tests.unit.energy.accounting.test_node import FakeCpuMeter

CONFIG = EnergyConfig(idle_w={"cpu:0": 10.0})


class _Host:
    """A fake clock and a node that is one core busy all the time."""

    def __init__(self):
        self.t = 0.0

    def clock(self) -> float:
        return self.t

    def busy(self) -> float:
        return self.t


def _service(host: _Host, journal: EnergyJournal, watts: float = 30.0) -> NodeEnergy:
    """A service as the actor starts one: a new meter (its counter from 0), and what the journal holds."""
    return NodeEnergy([FakeCpuMeter(watts, host.clock)], CONFIG, clock=host.clock, busy_cpu_s=host.busy,
                      saved=journal.load())


def _run(host: _Host, node: NodeEnergy, journal: EnergyJournal, seconds: int) -> None:
    for _ in range(seconds):
        host.t += 1.0
        node.tick()
        journal.save(node)


def test_totals_and_windows_go_on_across_a_restart():
    host, store = _Host(), MemoryStore()
    first = _service(host, EnergyJournal(store, "n1", keep=100))
    first.register("me", os.getpid(), {"deployment": "a.s.0"})
    journal = EnergyJournal(store, "n1", keep=100)
    _run(host, first, journal, 5)
    before = first.summary("n1")
    assert before.devices["cpu:0"].energy_j == pytest.approx(150.0)

    host.t += 3.0  # the actor is dead for 3 s, then the next one starts
    journal = EnergyJournal(store, "n1", keep=100)
    second = _service(host, journal)
    assert "me" in second.consumers  # the replica is still metered before it registers again
    _run(host, second, journal, 4)
    after = second.summary("n1")

    assert (after.restarts, after.unmetered_s) == (1, pytest.approx(3.0))
    assert after.start_s == before.start_s == 0.0  # totals since the first service started
    # the 3 s gap was not metered; everything else counted once: 5 s + 4 s at 30 W
    assert after.devices["cpu:0"].energy_j == pytest.approx(30.0 * 9)
    assert all(after.attributed_j[n] >= j for n, j in before.attributed_j.items())
    assert after.idle_j >= before.idle_j and after.other_j >= before.other_j
    assert sum(after.attributed_j.values()) + after.other_j + after.idle_j == pytest.approx(30.0 * 9)
    # a window across the restart holds both sides, and no negative energy
    (across,) = second.energy_windows("n1", 2.0, host.t)
    assert across.energy_j["cpu:0"] == pytest.approx(30.0 * 3 + 30.0 * 4)
    assert min(across.consumers_j.values(), default=0.0) >= 0 and across.other_j >= 0 and across.idle_j >= 0
    (later,) = second.energy_windows("n1", 9.0, host.t)
    assert later.energy_j["cpu:0"] == pytest.approx(30.0 * 3)


def test_a_service_without_a_journal_starts_from_zero():
    host = _Host()
    node = _service(host, EnergyJournal(MemoryStore(), "n1", keep=10))
    _run(host, node, EnergyJournal(MemoryStore(), "n1", keep=10), 2)
    report = node.summary("n1")
    assert (report.restarts, report.unmetered_s) == (0, 0.0)
    assert report.devices["cpu:0"].energy_j == pytest.approx(60.0)


def test_a_consumer_that_stopped_or_whose_pid_was_reused_is_not_taken_back():
    host, store = _Host(), MemoryStore()
    journal = EnergyJournal(store, "n1", keep=10)
    node = _service(host, journal)
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    node.register("gone", gone.pid, {"deployment": "a.s.1"})
    node.register("me", os.getpid(), {"deployment": "a.s.0"})
    _run(host, node, journal, 2)
    gone.kill()
    gone.wait()
    checkpoint, ticks = journal.load()
    checkpoint["consumers"]["me"]["created"] -= 60  # as if another process had had this pid
    store.put("energy/n1/checkpoint", json.dumps(checkpoint).encode())
    second = _service(host, EnergyJournal(store, "n1", keep=10))
    assert not second.consumers
    assert {"me", "gone"} <= set(second.summary("n1").consumers)  # still listed, with their energy so far


def test_the_journal_keeps_only_the_history_and_ticks_round_trip():
    host, store = _Host(), MemoryStore()
    journal = EnergyJournal(store, "n1", keep=3)
    node = _service(host, journal)
    _run(host, node, journal, 6)
    assert len(store.keys("energy/n1/tick/")) == 3
    tick = node.history[-1]
    assert tick_from_json(tick_to_json(tick)) == tick
    checkpoint, ticks = EnergyJournal(store, "n1", keep=2).load()  # a shorter history: the oldest go
    assert [t.time_s for t in ticks] == [5.0, 6.0] and len(store.keys("energy/n1/tick/")) == 2
    assert checkpoint["time_s"] == 6.0
    assert EnergyJournal(store, "n2", keep=3).load() is None
    assert EnergyJournal(store, "n1", keep=3).clear() == 3 and not store.keys("energy/")


def test_a_restart_neither_teaches_idle_power_nor_counts_a_tick_saved_without_its_checkpoint():
    host, store = _Host(), MemoryStore()
    config = EnergyConfig()  # no idle power given: a measured meter learns it (the lowest power seen)
    journal = EnergyJournal(store, "n1", keep=100)
    first = NodeEnergy([FakeCpuMeter(30.0, host.clock)], config, clock=host.clock, busy_cpu_s=host.busy,
                       saved=journal.load())
    _run(host, first, journal, 3)
    host.t += 1.0
    first.tick()  # a tick saved, and the actor dies before the checkpoint that goes with it
    journal.store.put(journal._tick_key(first.history[-1]),
                      json.dumps(tick_to_json(first.history[-1])).encode())
    host.t += 3.0
    second = NodeEnergy([FakeCpuMeter(30.0, host.clock)], config, clock=host.clock, busy_cpu_s=host.busy,
                        saved=EnergyJournal(store, "n1", keep=100).load())
    _run(host, second, EnergyJournal(store, "n1", keep=100), 2)
    report = second.summary("n1")
    assert report.idle_w["cpu:0"] == pytest.approx(30.0)  # not the ~0 W of the unmetered gap
    assert report.devices["cpu:0"].energy_j == pytest.approx(30.0 * 5)  # 3 s before, 2 s after; nothing negative
    assert report.idle_j >= 0 and all(j >= 0 for j in report.attributed_j.values())
