"""Attribution: idle never goes to a consumer, and the parts add up to the node total."""

import math

import pytest

from energy.accounting.attribution import Usage, attribute, joules_per_cpu_second
from energy.meters.base import Measurement


def window(**energy):
    return Measurement(start_s=100.0, end_s=110.0, energy_j=energy, method="rapl-sysfs")


def test_cpu_energy_split_by_cpu_time_and_idle_kept_apart():
    w = window(**{"cpu:0": 500.0, "dram:0": 100.0})
    a = attribute(w, {"cpu:0": 20.0, "dram:0": 5.0}, Usage(cpu_s={"busy": 6.0, "idle-replica": 0.0}, node_cpu_s=8.0))
    assert a.idle_j == pytest.approx(250.0)  # 20 W × 10 s + 5 W × 10 s
    active = 600.0 - 250.0
    assert a.consumers_j["busy"] == pytest.approx(active * 6 / 8)
    assert a.consumers_j.get("idle-replica", 0.0) == 0.0
    assert a.other_j == pytest.approx(active * 2 / 8)
    assert a.total_j == pytest.approx(w.total_j)


def test_idle_larger_than_measured_is_capped():
    a = attribute(window(**{"cpu:0": 50.0}), {"cpu:0": 20.0}, Usage(cpu_s={"r": 1.0}, node_cpu_s=1.0))
    assert a.idle_j == 50.0 and a.consumers_j == {} and a.other_j == 0.0


def test_shared_gpu_split_by_nvml_process_utilisation():
    w = window(**{"gpu:0": 1000.0})
    usage = Usage(gpu_util={"gpu:0": {"r1": 60.0, "r2": 20.0}}, gpu_busy={"gpu:0": {"r1": 1.0, "r2": 9.0}})
    a = attribute(w, {"gpu:0": 40.0}, usage)
    active = 1000.0 - 400.0
    assert a.consumers_j == pytest.approx({"r1": active * 0.75, "r2": active * 0.25})
    assert a.total_j == pytest.approx(1000.0)


def test_shared_gpu_without_process_utilisation_uses_fraction_times_busy_time():
    usage = Usage(gpu_util={"gpu:0": {}}, gpu_busy={"gpu:0": {"r1": 0.5 * 4.0, "r2": 0.25 * 4.0}})
    a = attribute(window(**{"gpu:0": 300.0}), {"gpu:0": 0.0}, usage)
    assert a.consumers_j["r1"] == pytest.approx(200.0) and a.consumers_j["r2"] == pytest.approx(100.0)


def test_nothing_tracked_everything_active_is_other():
    a = attribute(window(**{"cpu:0": 100.0, "gpu:0": 50.0}), {}, Usage(node_cpu_s=3.0))
    assert a.consumers_j == {} and a.other_j == pytest.approx(150.0)


def test_joules_per_cpu_second_excludes_idle_and_gpus():
    w = window(**{"cpu:0": 300.0, "dram:0": 50.0, "gpu:0": 999.0})
    rate = joules_per_cpu_second(w, {"cpu:0": 10.0, "dram:0": 0.0}, node_cpu_s=5.0)
    assert math.isclose(rate, (300 - 100 + 50) / 5)
    assert joules_per_cpu_second(w, {}, 0.0) == 0.0
