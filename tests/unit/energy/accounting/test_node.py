"""NodeEnergy: sampling history, attribution to processes, the sum rule, shared GPUs."""

import os
import subprocess
import sys
import time

import pynvml
import pytest

from energy.accounting.node import NodeEnergy
from energy.config import EnergyConfig
from energy.meters.base import Meter, Sample
from energy.meters.zeus import ZeusGpuMeter
from ipa_energy.energy import EnergyRates, EnergyWindow, NodeEnergyReport
from tests.unit.energy.fake_nvml import FakeNvml


class FakeCpuMeter(Meter):
    """Counts energy as a constant power (W) while time passes: enough to test attribution."""

    method = "rapl-sysfs"

    def __init__(self, power_w: float, clock):
        self.power_w, self.clock, self.t0 = power_w, clock, clock()

    def devices(self):
        return ["cpu:0"]

    def sample(self):
        return Sample(self.clock(), {"cpu:0": self.power_w * (self.clock() - self.t0)}, self.method)


def spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.fixture()
def workers():
    busy = spawn("import time\nend = time.time() + 30\nwhile time.time() < end: pass")
    idle = spawn("import time; time.sleep(30)")
    time.sleep(1.0)  # let both interpreters finish starting up: startup is CPU work too
    yield busy, idle
    busy.kill()
    idle.kill()


def test_busy_process_gets_energy_idle_one_does_not(workers):
    busy, idle = workers
    node = NodeEnergy([FakeCpuMeter(50.0, time.time)], EnergyConfig(idle_w={"cpu:0": 10.0}))
    node.register("busy", busy.pid, {"deployment": "d1"})
    node.register("sleeper", idle.pid, {"deployment": "d2"})
    node.tick()
    time.sleep(1.5)
    node.tick()
    assert node.totals["busy"] > 20.0  # most of the 40 W active over 1.5 s
    assert node.totals.get("sleeper", 0.0) < 0.5
    # the sum rule: attributed + other + idle = what the meter measured
    measured = node.history[-1].samples[0].energy_j["cpu:0"] - node.history[0].samples[0].energy_j["cpu:0"]
    assert sum(node.totals.values()) + node.other_j + node.idle_j == pytest.approx(measured, rel=1e-9)
    first, last = node.history[0].samples[0], node.history[-1].samples[0]
    assert node.idle_j == pytest.approx(10.0 * (last.time_s - first.time_s), rel=1e-9)


def ticked(node: NodeEnergy, seconds: float) -> NodeEnergy:
    """Two snapshots `seconds` apart."""
    node.tick()
    time.sleep(seconds)
    node.tick()
    return node


def test_relabel_keeps_the_consumers_energy_and_names_it_anew(workers):
    busy, _ = workers
    node = NodeEnergy([FakeCpuMeter(50.0, time.time)], EnergyConfig(idle_w={"cpu:0": 10.0}))
    node.register("busy", busy.pid, {"deployment": "a.s.0", "variant": "v1"})
    ticked(node, 0.5)
    before = node.totals["busy"]
    node.relabel("busy", {"deployment": "a.s.0", "variant": "v2"})  # a slot switched variant in place
    node.relabel("ghost", {"variant": "v3"})  # never registered: nothing to rename
    time.sleep(0.5)
    node.tick()
    assert node.totals["busy"] > before > 0  # the same counters carry on
    assert node.labels["busy"]["variant"] == "v2" and node.consumers["busy"].labels["variant"] == "v2"
    assert "ghost" not in node.labels


def test_cores_busy_outside_the_stage_replicas(workers):
    busy, idle = workers
    node = NodeEnergy([FakeCpuMeter(50.0, time.time)], EnergyConfig(idle_w={"cpu:0": 10.0}))
    node.register("sleeper", idle.pid, {"deployment": "a.s.0", "stage": "s"})
    outside = ticked(node, 1.0).outside_cores()
    assert 0.8 < outside < 2.5  # the unregistered busy loop (and this test) count; the idle stage replica does not
    node.register("busy", busy.pid, {"deployment": "a.s.1", "stage": "s"})
    assert ticked(node, 1.0).outside_cores(span_s=0.9) < outside - 0.5  # now a stage replica: its core is the plan's


def test_window_and_rates(workers):
    busy, _ = workers
    node = NodeEnergy([FakeCpuMeter(40.0, time.time)], EnergyConfig(idle_w={"cpu:0": 0.0}))
    node.register("busy", busy.pid, {})
    t0 = time.time()
    time.sleep(1.0)
    node.tick()
    (a,) = node.window(t0, time.time())
    assert a.window.method == "rapl-sysfs" and a.total_j == pytest.approx(a.window.total_j)
    rates = node.rates()
    assert isinstance(rates, EnergyRates)
    assert rates.j_per_cpu_s > 0 and rates.methods == {"cpu:0": "rapl-sysfs"}
    assert rates.power_w["cpu:0"] == pytest.approx(40.0, rel=0.05)
    assert rates.window_s > 0
    assert EnergyRates.model_validate(rates.model_dump()) == rates  # what crosses the actor boundary
    (row,) = node.energy_windows("node-1", t0, time.time())
    assert isinstance(row, EnergyWindow) and row.node_id == "node-1" and row.method == "rapl-sysfs"
    assert sum(row.energy_j.values()) == pytest.approx(sum(row.consumers_j.values()) + row.other_j + row.idle_j)
    assert EnergyWindow.model_validate(row.model_dump()) == row


def test_rates_before_a_span_are_zero_with_the_methods():
    clock = [0.0]
    node = NodeEnergy([FakeCpuMeter(10.0, lambda: clock[0])], EnergyConfig(), clock=lambda: clock[0],
                      busy_cpu_s=lambda: 0.0)
    rates = node.rates()
    assert rates == EnergyRates(time_s=0.0, j_per_cpu_s=0.0, methods={"cpu:0": "rapl-sysfs"})
    assert rates.window_s == 0.0 and rates.power_w == {} and rates.gpu_j_per_busy_s == {}


def test_summary_is_a_node_report_whose_parts_add_up():
    clock, busy = [0.0], [0.0]
    node = NodeEnergy([FakeCpuMeter(30.0, lambda: clock[0])], EnergyConfig(idle_w={"cpu:0": 10.0}),
                      clock=lambda: clock[0], busy_cpu_s=lambda: busy[0])
    node.register("me", os.getpid(), {"deployment": "d1"})
    for _ in range(3):
        clock[0] += 1.0
        busy[0] += 1.0
        node.tick()
    report = node.summary("node-1")
    assert isinstance(report, NodeEnergyReport)
    assert (report.node_id, report.start_s, report.end_s) == ("node-1", 0.0, 3.0)
    cpu = report.devices["cpu:0"]
    assert cpu.energy_j == pytest.approx(90.0) and cpu.mean_power_w == pytest.approx(30.0)
    assert cpu.method == "rapl-sysfs" and cpu.measured
    assert report.idle_w == {"cpu:0": 10.0} and report.idle_source == {"cpu:0": "config"}
    assert report.idle_j == pytest.approx(30.0)
    assert sum(report.attributed_j.values()) + report.other_j + report.idle_j == pytest.approx(90.0)
    assert report.consumers == {"me": {"deployment": "d1", "running": True}}
    assert report.assumptions == {"FakeCpuMeter": {}}
    assert report.actor_cpu_s == 0.0  # the actor's own cost: filled in by the actor
    assert NodeEnergyReport.model_validate(report.model_dump()) == report


def test_gpu_shared_by_two_replicas_split_by_process_utilisation(monkeypatch):
    nvml = FakeNvml([{"name": "NVIDIA A10G", "arch": pynvml.NVML_DEVICE_ARCH_AMPERE, "energy_mj": 0, "power_mw": 0,
                      "processes": {}}]).install(monkeypatch)
    clock = [100.0]
    gpu = ZeusGpuMeter(clock=lambda: clock[0])
    node = NodeEnergy([gpu], EnergyConfig(idle_w={"gpu:0": 50.0}), clock=lambda: clock[0], busy_cpu_s=lambda: 0.0)
    me, parent = os.getpid(), os.getppid()
    node.register("r1", me, {"deployment": "a"}, gpu_ids=(0,), gpu_fraction=0.5)
    node.register("r2", parent, {"deployment": "b"}, gpu_ids=(0,), gpu_fraction=0.5)
    nvml.gpus[0]["processes"] = {me: 60, parent: 20}
    for _ in range(10):  # 10 × 0.1 s of GPU sampling at 300 W
        clock[0] += 0.1
        nvml.gpus[0]["energy_mj"] += 30_000
        node.sample_gpu_processes()
    node.tick()
    active = 300.0 - 50.0 * 1.0
    assert node.totals["r1"] == pytest.approx(active * 0.75)
    assert node.totals["r2"] == pytest.approx(active * 0.25)
    assert sum(node.totals.values()) + node.other_j + node.idle_j == pytest.approx(300.0)


def test_gpu_without_process_utilisation_falls_back_to_fraction_times_busy(monkeypatch):
    nvml = FakeNvml([{"name": "NVIDIA L4", "arch": pynvml.NVML_DEVICE_ARCH_ADA, "energy_mj": 0, "power_mw": 0}]).install(monkeypatch)

    def unsupported(handle, ts):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetProcessUtilization", unsupported)
    clock = [0.0]
    node = NodeEnergy([ZeusGpuMeter(clock=lambda: clock[0])], EnergyConfig(idle_w={"gpu:0": 0.0}),
                      clock=lambda: clock[0], busy_cpu_s=lambda: 0.0)
    node.register("big", os.getpid(), {}, gpu_ids=(0,), gpu_fraction=0.5)
    node.register("small", os.getppid(), {}, gpu_ids=(0,), gpu_fraction=0.25)
    node.report_busy("big", 2.0)
    node.report_busy("small", 2.0)
    clock[0] += 1.0
    nvml.gpus[0]["energy_mj"] += 90_000
    node.sample_gpu_processes()
    node.tick()
    assert node.totals["big"] == pytest.approx(60.0) and node.totals["small"] == pytest.approx(30.0)


def test_history_is_bounded():
    clock = [0.0]
    node = NodeEnergy([FakeCpuMeter(1.0, lambda: clock[0])], EnergyConfig(history_s=5, cpu_interval_s=1.0),
                      clock=lambda: clock[0], busy_cpu_s=lambda: 0.0)
    for _ in range(20):
        clock[0] += 1
        node.tick()
    assert len(node.history) == 5
