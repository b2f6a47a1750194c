"""The tdp-estimate method: the estimating meter and its default utilisation."""

import threading
from collections import namedtuple

import pytest

from energy.meters.base import Measurement
from energy.meters.tdp import CpuTimesUtilisation, TdpEstimateMeter
from energy.meters.tdp_tables import FALLBACK_W_PER_THREAD


# ---- the meter ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def meter(util, clock, **kw):
    kw.setdefault("cpu_tdp_w", 200.0)
    return TdpEstimateMeter(utilisation=lambda: util[0], clock=clock, cpu_model="test", **kw)


@pytest.mark.parametrize("u, watts", [(0.0, 60.0), (1.0, 200.0), (0.5, 130.0)])
def test_meter_power_follows_utilisation(u, watts):
    clock, util = FakeClock(), [u]
    m = meter(util, clock)  # idle = 0.3 * 200 = 60 W
    clock.t += 10.0
    s = m.sample()
    assert s.energy_j == {"cpu:0": pytest.approx(watts * 10.0)}
    assert s.time_s == 1010.0 and s.method == "tdp-estimate"


def test_meter_cumulative_monotonic_and_windows():
    clock, util = FakeClock(), [0.0]
    m = meter(util, clock, cpu_idle_w=50.0)
    first = m.sample()  # no time elapsed
    assert first.energy_j["cpu:0"] == 0.0
    samples = [first]
    for u in (0.0, 1.0, 0.5, 0.25):
        util[0] = u
        clock.t += 2.0
        samples.append(m.sample())
    energies = [s.energy_j["cpu:0"] for s in samples]
    assert energies == sorted(energies)
    # 50*2 + 200*2 + 125*2 + 87.5*2
    assert energies[-1] == pytest.approx(925.0)
    window = Measurement.between(samples[2], samples[3])
    assert window.mean_power_w == pytest.approx(125.0)
    assert not window.measured and window.method == "tdp-estimate"

    clock.t -= 100.0  # wall clock stepped back: counts as zero, never negative
    util[0] = 1.0
    assert m.sample().energy_j["cpu:0"] == pytest.approx(925.0)
    clock.t += 101.0  # only the 1 s past the previous high-water mark counts
    assert m.sample().energy_j["cpu:0"] == pytest.approx(1125.0)


def test_meter_clamps_utilisation():
    clock, util = FakeClock(), [1.7]
    m = meter(util, clock)
    clock.t += 1.0
    assert m.sample().energy_j["cpu:0"] == pytest.approx(200.0)
    util[0] = float("nan")
    clock.t += 1.0
    assert m.sample().energy_j["cpu:0"] == pytest.approx(260.0)  # NaN counted as idle


def test_meter_labels_config_tdp_and_assumptions():
    m = meter([0.0], FakeClock(), cpu_idle_fraction=0.25)
    assert m.method == "tdp-estimate"
    assert m.devices() == ["cpu:0"]
    a = m.assumptions
    assert a["method"] == "tdp-estimate" and a["tdp_source"] == "config" == m.tdp_source
    assert a["cpu_tdp_w"] == 200.0 and a["cpu_idle_w"] == 50.0 and a["cpu_idle_fraction"] == 0.25
    assert "0.25" in a["cpu_idle_source"] and a["utilisation"] == "injected"
    assert "rectangle" in a["integration"]


def test_meter_looks_up_the_table():
    m = TdpEstimateMeter(utilisation=lambda: 0.0, clock=FakeClock(),
                         cpu_model="Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz")
    assert m.tdp_source == "table:Intel Xeon Platinum 8375C"
    assert m.assumptions["cpu_tdp_w"] == 300.0 and m.assumptions["cpu_idle_w"] == pytest.approx(90.0)


def test_meter_falls_back_for_unknown_cpu():
    m = TdpEstimateMeter(utilisation=lambda: 0.0, clock=FakeClock(), cpu_model="AMD EPYC",
                         logical_cpus=16, num_sockets=2)
    assert m.tdp_source == "fallback"
    assert m.devices() == ["cpu:0", "cpu:1"]
    assert m.assumptions["cpu_tdp_w"] == FALLBACK_W_PER_THREAD * 16 / 2 == 32.0
    assert m.assumptions["logical_cpus"] == 16 and "CodeCarbon" in m.assumptions["fallback"]


def test_meter_gpus_and_explicit_idle():
    clock, cpu_u, gpu_u = FakeClock(), [0.0], [0.5]
    m = TdpEstimateMeter(cpu_tdp_w=100.0, cpu_idle_w=10.0, utilisation=lambda: cpu_u[0],
                         gpus=[(700.0, 100.0, lambda: gpu_u[0]), (70.0, None, lambda: 1.0)],
                         clock=clock, cpu_model="test")
    assert m.devices() == ["cpu:0", "gpu:0", "gpu:1"]
    assert m.assumptions["cpu_idle_source"] == "config" and m.assumptions["cpu_idle_fraction"] is None
    clock.t += 4.0
    e = m.sample().energy_j
    assert e["cpu:0"] == pytest.approx(40.0)
    assert e["gpu:0"] == pytest.approx(400.0 * 4)
    assert e["gpu:1"] == pytest.approx(70.0 * 4)
    assert m.assumptions["gpus"][1]["idle_w"] == pytest.approx(21.0)


@pytest.mark.parametrize("kw", [
    {"cpu_tdp_w": 0.0}, {"cpu_tdp_w": -5.0}, {"cpu_idle_fraction": 1.5},
    {"cpu_idle_w": 500.0}, {"num_sockets": 0}, {"gpus": [(0.0, None, lambda: 0.0)]},
])
def test_meter_rejects_bad_parameters(kw):
    kw.setdefault("cpu_tdp_w", 200.0)
    with pytest.raises(ValueError):
        TdpEstimateMeter(utilisation=lambda: 0.0, clock=FakeClock(), cpu_model="test", **kw)


def test_meter_sample_is_thread_safe():
    clock, util = FakeClock(), [1.0]
    m = meter(util, clock)
    lock = threading.Lock()

    def worker():
        for _ in range(200):
            with lock:  # advance the fake clock by exactly 1 s per sample, from any thread
                clock.t += 1.0
            m.sample()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # every second is counted exactly once, whichever thread's sample covered it
    assert m.sample().energy_j["cpu:0"] == pytest.approx(200.0 * 800)


# ---- default utilisation from psutil.cpu_times deltas ------------------------------------

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def test_cpu_times_utilisation_deltas():
    seq = iter([
        Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0),  # baseline at construction
        Times(150, 0, 75, 850, 50, 0, 0, 0, 0, 0),  # +75 busy, +50 idle → 0.6
        Times(150, 0, 75, 950, 50, 0, 0, 0, 0, 0),  # only idle → 0.0
        Times(250, 0, 75, 950, 50, 0, 0, 0, 40, 0),  # busy, guest inside user not recounted → 1.0
        Times(250, 0, 75, 950, 50, 0, 0, 0, 40, 0),  # no time passed → 0.0
    ])
    u = CpuTimesUtilisation(cpu_times=lambda: next(seq))
    assert u() == pytest.approx(0.6)
    assert u() == 0.0
    assert u() == pytest.approx(1.0)
    assert u() == 0.0


def test_default_utilisation_uses_psutil():
    m = TdpEstimateMeter(cpu_tdp_w=100.0, cpu_model="test")
    assert m.assumptions["utilisation"].startswith("psutil.cpu_times()")
    e1 = m.sample().energy_j["cpu:0"]
    e2 = m.sample().energy_j["cpu:0"]
    assert 0.0 <= e1 <= e2
