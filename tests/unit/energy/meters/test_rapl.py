"""RaplSysfsMeter on a fake powercap tree: zone discovery, J since start, wraparound, errors."""

import builtins
import os

import pytest

from energy.meters.base import MeterUnavailable
from energy.meters.rapl import RaplSysfsMeter, rapl_available

RANGE_UJ = 262143328850  # a real package max_energy_range_uj (2^32 units of 61 µJ)
DRAM_RANGE_UJ = 65712999613


def zone(root, name, kind, energy_uj, range_uj=RANGE_UJ):
    d = root / name
    d.mkdir()
    (d / "name").write_text(kind + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return d


def set_uj(root, name, energy_uj):
    (root / name / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def tree(tmp_path):
    """/sys/class/powercap as the kernel lists it: every zone flat at the top level."""
    (tmp_path / "intel-rapl").mkdir()  # the control type directory, not a zone
    zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    zone(tmp_path, "intel-rapl:0:0", "core", 500_000)  # inside package-0: ignored
    zone(tmp_path, "intel-rapl:0:1", "dram", 2_000_000, DRAM_RANGE_UJ)
    zone(tmp_path, "intel-rapl:1", "package-1", 3_000_000)
    zone(tmp_path, "intel-rapl:2", "psys", 9_000_000)  # overlaps the packages: ignored
    return tmp_path


def test_devices_are_packages_and_dram_only(tree):
    assert RaplSysfsMeter(tree).devices() == ["cpu:0", "cpu:1", "dram:0"]


def test_nested_layout_is_found_too(tmp_path):
    top = tmp_path / "intel-rapl"
    top.mkdir()
    pkg = zone(top, "intel-rapl:0", "package-0", 10)
    zone(pkg, "intel-rapl:0:0", "dram", 20)
    assert RaplSysfsMeter(tmp_path).devices() == ["cpu:0", "dram:0"]


def test_cumulative_joules_since_construction(tree):
    meter = RaplSysfsMeter(tree)
    first = meter.sample()
    assert first.energy_j == {"cpu:0": 0.0, "cpu:1": 0.0, "dram:0": 0.0}
    assert first.method == "rapl-sysfs"
    set_uj(tree, "intel-rapl:0", 1_000_000 + 5_500_000)  # +5.5 J
    set_uj(tree, "intel-rapl:0:1", 2_000_000 + 250_000)  # +0.25 J
    set_uj(tree, "intel-rapl:2", 99_000_000)  # psys moves: must not show up anywhere
    set_uj(tree, "intel-rapl:0:0", 99_000_000)  # core moves: already inside cpu:0
    second = meter.sample()
    assert second.energy_j == pytest.approx({"cpu:0": 5.5, "cpu:1": 0.0, "dram:0": 0.25})
    assert second.time_s >= first.time_s
    set_uj(tree, "intel-rapl:1", 3_000_000 + 1_000_000)
    assert meter.sample().energy_j == pytest.approx({"cpu:0": 5.5, "cpu:1": 1.0, "dram:0": 0.25})


def test_wraparound_adds_the_range(tree):
    meter = RaplSysfsMeter(tree)
    set_uj(tree, "intel-rapl:0", RANGE_UJ - 1_000_000)
    before = meter.sample().energy_j["cpu:0"]
    assert before == pytest.approx((RANGE_UJ - 2_000_000) / 1e6)
    set_uj(tree, "intel-rapl:0", 4_000_000)  # went down: wrapped once
    after = meter.sample().energy_j["cpu:0"]
    # from RANGE-1e6 up to RANGE, +1 µJ back to 0, then up to 4e6
    assert after - before == pytest.approx((1_000_000 + 1 + 4_000_000) / 1e6)


def test_two_wraps_across_samples_stay_monotonic(tree):
    meter = RaplSysfsMeter(tree)
    readings = [RANGE_UJ - 10, 5, RANGE_UJ // 2, RANGE_UJ - 3, 7, 7]
    totals = []
    for uj in readings:
        set_uj(tree, "intel-rapl:0", uj)
        totals.append(meter.sample().energy_j["cpu:0"])
    assert totals == sorted(totals)  # never decreasing
    # From 1e6 µJ to 7 µJ with two wraps of RANGE + 1 µJ each in between.
    assert totals[-1] == pytest.approx((2 * (RANGE_UJ + 1) + 7 - 1_000_000) / 1e6)
    assert totals[1] - totals[0] == pytest.approx(16 / 1e6, abs=1e-9)  # R-10 → 5 across one wrap


def test_wrap_period(tree):
    meter = RaplSysfsMeter(tree)
    # The DRAM counter has the smaller range: it sets the pace.
    assert meter.wrap_period_s(100.0) == pytest.approx((DRAM_RANGE_UJ + 1) / 1e6 / 100.0)
    with pytest.raises(ValueError):
        meter.wrap_period_s(0)


def test_absent_root_is_unavailable(tmp_path):
    with pytest.raises(MeterUnavailable, match="does not exist"):
        RaplSysfsMeter(tmp_path / "nope")
    assert rapl_available(tmp_path / "nope") is False


def test_no_package_zone_is_unavailable(tmp_path):
    zone(tmp_path, "intel-rapl:0", "psys", 1)
    with pytest.raises(MeterUnavailable, match="no RAPL package zone"):
        RaplSysfsMeter(tmp_path)
    assert rapl_available(tmp_path) is False


def test_zone_without_energy_uj_is_unavailable(tree):
    os.remove(tree / "intel-rapl:1" / "energy_uj")
    with pytest.raises(MeterUnavailable, match="energy_uj"):
        RaplSysfsMeter(tree)


def deny_energy_uj(monkeypatch):
    """Tests run as root, so chmod 000 would not stop them: make open() refuse instead."""
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if str(file).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


def test_root_only_energy_uj_is_unavailable_with_a_hint(tree, monkeypatch):
    deny_energy_uj(monkeypatch)
    with pytest.raises(MeterUnavailable, match=r"permission denied.*Linux 5\.10"):
        RaplSysfsMeter(tree)
    assert rapl_available(tree) is False


def test_losing_permission_later_raises_on_sample(tree, monkeypatch):
    meter = RaplSysfsMeter(tree)
    deny_energy_uj(monkeypatch)
    with pytest.raises(MeterUnavailable, match="permission denied"):
        meter.sample()


def test_available(tree):
    assert rapl_available(tree) is True
