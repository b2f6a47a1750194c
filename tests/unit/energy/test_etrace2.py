"""etrace2 reports: parsing Chameleon's format, the ENERGY≈0 rule, round trips, measure_command."""

import sys
import time

import pytest

from energy.etrace2 import Etrace2FormatError, format_etrace2, measure_command, parse_etrace2
from energy.meters.base import Measurement, Meter, Sample

# The example in Chameleon's documentation (technical/metrics.rst, "Energy and Power Consumption
# Measurement with etrace2"): the command's own output is interleaved with etrace2's lines.
CHAMELEON_SAMPLE = """\
# ETRACE2_VERSION=0.1
Generating RSA private key, 4096 bit long modulus
.................++
e is 65537 (0x10001)
# ELAPSED=2.579472
# ENERGY=365.788208
# ENERGY_SOCKET0=99.037841
# ENERGY_DRAM0=78.577698
# ENERGY_SOCKET1=109.230103
# ENERGY_DRAM1=80.336548
"""


def test_parse_chameleon_sample():
    m = parse_etrace2(CHAMELEON_SAMPLE)
    assert m.method == "etrace2" and m.measured
    assert (m.start_s, m.end_s) == (0.0, pytest.approx(2.579472))
    assert m.energy_j == pytest.approx(
        {"cpu:0": 99.037841, "dram:0": 78.577698, "cpu:1": 109.230103, "dram:1": 80.336548}
    )
    # The parts are authoritative; ENERGY is not added on top of them.
    assert m.total_j == pytest.approx(99.037841 + 78.577698 + 109.230103 + 80.336548)


def test_energy_near_zero_uses_the_sum_of_parts():
    text = CHAMELEON_SAMPLE.replace("# ENERGY=365.788208", "# ENERGY=0.000000")
    m = parse_etrace2(text)
    assert m.total_j == pytest.approx(367.182190)
    assert "node" not in m.energy_j


def test_total_only_report_is_a_node_device():
    m = parse_etrace2("# ELAPSED=10.0\n# ENERGY=1234.5\n")
    assert m.energy_j == {"node": 1234.5}


def test_interval_mode_with_start_time():
    text = """\
# ETRACE2_VERSION=0.1
# START_TIME=1700000000.250000
# Time [S]   Power [W]   Energy [J]
0.500  120.000  60.000
1.000  118.000  59.000
# ELAPSED=1.200000
# ENERGY=0.000000
# ENERGY_SOCKET0=140.000000
"""
    m = parse_etrace2(text)
    assert m.start_s == pytest.approx(1700000000.25)
    assert m.duration_s == pytest.approx(1.2)
    assert m.energy_j == {"cpu:0": 140.0}


@pytest.mark.parametrize(
    "text, key",
    [
        ("", "ELAPSED"),
        ("hello\n# ENERGY=1.0\n# ENERGY_SOCKET0=1.0\n", "ELAPSED"),
        ("# ELAPSED=1.0\n", "ENERGY"),
        ("# ELAPSED=abc\n# ENERGY=1\n", "ELAPSED=abc"),
        ("# ELAPSED=1.0\n# ENERGY=0.0\n", "ENERGY reads ~0"),
        ("# ELAPSED=1.0\n# ENERGY=2\n# ENERGY_SOCKET0=-1\n", "ENERGY_SOCKET0"),
        ("# ELAPSED=1.0\n# ENERGY=2\n# ENERGY_SOCKET0=1\n# ENERGY_SOCKET0=1\n", "ENERGY_SOCKET0 appears twice"),
        ("# ELAPSED=1.0\n# ENERGY=2\n# METHOD=guesswork\n", "METHOD"),
    ],
)
def test_malformed_reports_name_the_key(text, key):
    with pytest.raises(Etrace2FormatError, match=key):
        parse_etrace2(text)
    assert issubclass(Etrace2FormatError, ValueError)


def test_round_trip_keeps_the_method():
    estimate = Measurement(start_s=0.0, end_s=12.5, energy_j={"cpu:0": 500.25, "dram:0": 40.0,
                                                              "cpu:1": 480.0, "gpu:0": 1500.0},
                           method="tdp-estimate")
    text = format_etrace2(estimate)
    assert "# METHOD=tdp-estimate" in text
    assert text.index("ENERGY_SOCKET0") < text.index("ENERGY_DRAM0") < text.index("ENERGY_SOCKET1")
    back = parse_etrace2(text)
    assert back == estimate
    assert not back.measured  # an estimate never comes back as a measurement


def test_round_trip_with_wall_clock_window():
    m = Measurement(start_s=1700000000.5, end_s=1700000003.75, energy_j={"node": 42.0}, method="rapl-sysfs")
    back = parse_etrace2(format_etrace2(m))
    assert back.method == "rapl-sysfs"
    assert back.energy_j == {"node": 42.0}
    assert (back.start_s, back.end_s) == (pytest.approx(m.start_s), pytest.approx(m.end_s))


def test_format_rejects_what_it_cannot_write():
    with pytest.raises(ValueError):
        format_etrace2(Measurement(0, 1, {"node": 1.0, "cpu:0": 1.0}))
    with pytest.raises(ValueError):
        format_etrace2(Measurement(0, 1, {"fan:0": 1.0}))
    with pytest.raises(ValueError):
        format_etrace2(Measurement(0, 1, {}))


class ClockMeter(Meter):
    """A fake 50 W CPU: its counter grows with wall-clock time."""

    method = "rapl-sysfs"

    def __init__(self):
        self.t0 = time.time()
        self.samples = 0

    def devices(self):
        return ["cpu:0"]

    def sample(self):
        self.samples += 1
        now = time.time()
        return Sample(time_s=now, energy_j={"cpu:0": 50.0 * (now - self.t0)}, method=self.method)


def test_measure_command():
    meter = ClockMeter()
    rc, m = measure_command([sys.executable, "-c", "import time; time.sleep(0.3)"], meter, interval_s=0.05)
    assert rc == 0
    assert m.duration_s >= 0.3
    assert m.total_j > 0
    assert m.total_j == pytest.approx(50.0 * m.duration_s)
    assert m.method == "rapl-sysfs"
    assert meter.samples >= 4  # first, some from the poller, final


def test_measure_command_returns_the_exit_code_as_is():
    rc, m = measure_command([sys.executable, "-c", "import sys; sys.exit(3)"], ClockMeter())
    assert rc == 3
    assert m.energy_j["cpu:0"] >= 0


def test_measure_command_rejects_a_bad_interval():
    with pytest.raises(ValueError):
        measure_command([sys.executable, "-c", "pass"], ClockMeter(), interval_s=0)


class FailingMeter(ClockMeter):
    """Fails on its third read (inside the poller): the failure surfaces after the command ends."""

    def sample(self):
        if self.samples >= 2:
            raise RuntimeError("counter went away")
        return super().sample()


def test_measure_command_reports_a_sampling_failure_after_the_command():
    with pytest.raises(RuntimeError, match="counter went away"):
        measure_command([sys.executable, "-c", "import time; time.sleep(0.2)"], FailingMeter(), interval_s=0.02)
