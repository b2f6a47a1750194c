"""CPU package and DRAM energy from the Linux powercap sysfs tree (Intel RAPL, also AMD).

Reads ``<root>/intel-rapl:N/energy_uj`` (µJ) for every CPU package zone and its ``dram``
subzone, and turns the wrapping hardware counters into the cumulative, never-decreasing joules
that :class:`~energy.meters.base.Meter` promises.

Wraparound. The counters are 32-bit hardware registers scaled to µJ, so they wrap, and a wrap
can only be seen if the counter is read at least once per wrap period: a reading below the
previous one means exactly one wrap happened in between; two wraps between reads look like one
and that energy is lost for good. :meth:`RaplSysfsMeter.wrap_period_s` says how long one wrap
takes at a given power (the range is 2^32 energy units, ~65.5 kJ at 15.3 µJ/unit or ~262 kJ at
61 µJ/unit, i.e. minutes at a few hundred watts); sample at least twice per wrap period. This is
etrace2's caveat on Chameleon: "Monitoring periods larger than 10-15 minutes may be inaccurate
due to RAPL registers overflowing if they're not read regularly" (see energy/etrace2.py).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from energy.meters.base import Meter, MeterUnavailable, Sample

__all__ = ["DEFAULT_ROOT", "PERMISSION_HINT", "RaplSysfsMeter", "rapl_available"]

DEFAULT_ROOT = "/sys/class/powercap"

# Zone directories: intel-rapl:N (top level: a package, or psys) and intel-rapl:N:M (its
# subzones: core, uncore, dram). /sys/class/powercap lists every zone flat (symlinks), while
# /sys/devices/virtual/powercap/intel-rapl nests subzones inside their parent; both work.
# intel-rapl-mmio:N zones are deliberately not matched: on Intel client CPUs they expose the
# *same* package domain a second time through MMIO, and reading both would double count.
_TOP = re.compile(r"^intel-rapl:(\d+)$")
_SUB = re.compile(r"^intel-rapl:(\d+):(\d+)$")
# Package zone names: "package-N", or "package-N-die-D" on multi-die packages (the dies of one
# package are summed into cpu:N, their dram subzones into dram:N).
_PACKAGE_NAME = re.compile(r"^package-(\d+)(?:-die-(\d+))?$")

PERMISSION_HINT = (
    "since Linux 5.10 (commit 949dd0104c49, CVE-2020-8694 'PLATYPUS'; also backported to "
    "stable kernels such as 5.4.77) energy_uj is readable by root only on most distributions: "
    "run as root, or grant read access (e.g. a udev rule that chgrp/chmods "
    "/sys/class/powercap/intel-rapl:*/energy_uj)"
)


@dataclass
class _Domain:
    """One RAPL zone and its unwrapping state (all counters in µJ)."""

    device: str  # cpu:N or dram:N
    path: Path  # the zone directory
    range_uj: int  # max_energy_range_uj
    last_uj: int  # last raw energy_uj reading
    total_uj: int = 0  # energy since the meter started, unwrapped

    @property
    def modulus_uj(self) -> int:
        # The kernel's max_energy_range_uj is the largest value the counter reaches
        # (intel_rapl get_max_energy_counter(): ENERGY_STATUS_MASK, 0xffffffff, converted to
        # µJ), so it wraps from ~range back to 0 and one full turn is range + one energy unit
        # (15.3-61 µJ, not exposed in sysfs). We add range + 1 µJ: at most one unit (< 0.1 mJ)
        # low per wrap. (etrace2's raplreader adds range without the + 1.)
        return self.range_uj + 1

    def advance(self, raw_uj: int) -> None:
        """Account a new raw reading: a lower value than the previous one is one wrap."""
        if raw_uj >= self.last_uj:
            self.total_uj += raw_uj - self.last_uj
        else:
            self.total_uj += raw_uj + self.modulus_uj - self.last_uj
        self.last_uj = raw_uj


def _read_text(path: Path) -> str:
    """A sysfs attribute as text; any failure becomes MeterUnavailable with the reason."""
    try:
        with open(path) as f:
            return f.read().strip()
    except PermissionError as e:
        raise MeterUnavailable(f"cannot read {path}: permission denied; {PERMISSION_HINT}") from e
    except FileNotFoundError as e:
        raise MeterUnavailable(f"cannot read {path}: no such file (zone without an energy counter?)") from e
    except OSError as e:  # sysfs answers EIO/ENODATA when the driver cannot read the MSR
        raise MeterUnavailable(f"cannot read {path}: {e}") from e


def _read_uj(path: Path) -> int:
    text = _read_text(path)
    try:
        value = int(text)
    except ValueError as e:
        raise MeterUnavailable(f"{path} does not hold an integer (read {text!r})") from e
    if value < 0:
        raise MeterUnavailable(f"{path} holds a negative value {value}")
    return value


def _zone_dirs(root: Path) -> dict[str, Path]:
    """Every intel-rapl:N and intel-rapl:N:M directory under root (flat or nested layout)."""
    zones: dict[str, Path] = {}
    parents = [root, root / "intel-rapl"]
    for parent in parents:
        if not parent.is_dir():
            continue
        for entry in sorted(parent.iterdir()):
            if _TOP.match(entry.name) and entry.is_dir():
                zones.setdefault(entry.name, entry)
                parents.append(entry)  # nested layout: subzones live inside their parent
            elif _SUB.match(entry.name) and entry.is_dir():
                zones.setdefault(entry.name, entry)
    return zones


def _zone_name(path: Path) -> str:
    try:
        return (path / "name").read_text().strip()
    except OSError:
        return ""  # a zone without a readable name is not one we can place: skipped


class RaplSysfsMeter(Meter):
    """Cumulative CPU package (``cpu:N``) and DRAM (``dram:N``) energy in J from powercap sysfs.

    The counters are read once on construction: :meth:`sample` returns J since then. Call
    :meth:`sample` at least twice per :meth:`wrap_period_s` (at the highest power the node may
    draw) or wraps are missed; the node actor and :func:`energy.etrace2.measure_command` do.

    Which zones count: top-level zones named ``package-N`` (the whole CPU package, cores and
    uncore included) and their subzones named ``dram``. Skipped: ``core`` and ``uncore``
    subzones (already inside their package) and the top-level ``psys`` zone (the whole SoC/
    platform on client CPUs: it overlaps the packages and DRAM, so adding it double counts).
    """

    method = "rapl-sysfs"

    def __init__(self, root: str | Path = DEFAULT_ROOT):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MeterUnavailable(
                f"{self.root} does not exist: no powercap sysfs on this host (not Linux, a VM "
                "without RAPL, or the intel_rapl_msr / rapl driver is not loaded)"
            )
        self._lock = threading.Lock()
        self._domains: list[_Domain] = []
        zones = _zone_dirs(self.root)
        package_of_zone: dict[str, int] = {}  # "0" (the N of intel-rapl:N) → package number
        for zone, path in zones.items():
            m = _TOP.match(zone)
            if m is None:
                continue
            name = _zone_name(path)
            pkg = _PACKAGE_NAME.match(name)
            if pkg is None:
                continue  # psys, or an unknown top-level zone: see the class docstring
            package_of_zone[m.group(1)] = int(pkg.group(1))
            self._domains.append(self._open(f"cpu:{pkg.group(1)}", path))
        if not self._domains:
            raise MeterUnavailable(
                f"no RAPL package zone under {self.root} (expected intel-rapl:N/name = package-N; "
                f"found {sorted(zones) or 'no intel-rapl zones'})"
            )
        for zone, path in zones.items():
            m = _SUB.match(zone)
            if m is None or m.group(1) not in package_of_zone:
                continue
            if _zone_name(path) == "dram":
                self._domains.append(self._open(f"dram:{package_of_zone[m.group(1)]}", path))

    @staticmethod
    def _open(device: str, path: Path) -> _Domain:
        range_uj = _read_uj(path / "max_energy_range_uj")
        if range_uj <= 0:
            raise MeterUnavailable(f"{path / 'max_energy_range_uj'} is {range_uj}: cannot unwrap its counter")
        return _Domain(device=device, path=path, range_uj=range_uj, last_uj=_read_uj(path / "energy_uj"))

    def devices(self) -> list[str]:
        def key(d: str) -> tuple[str, int]:
            kind, _, n = d.partition(":")
            return kind, int(n)

        return sorted({d.device for d in self._domains}, key=key)

    def sample(self) -> Sample:
        """Read every counter now; J per device since construction, never decreasing."""
        with self._lock:  # one reader at a time: unwrapping needs readings in order
            readings = [_read_uj(d.path / "energy_uj") for d in self._domains]
            now = time.time()
            # Advance only once every read succeeded, so a failed sample leaves the state intact.
            energy_j: dict[str, float] = {d: 0.0 for d in self.devices()}
            for domain, raw in zip(self._domains, readings):
                domain.advance(raw)
                energy_j[domain.device] += domain.total_uj / 1e6
        return Sample(time_s=now, energy_j=energy_j, method=self.method)

    def wrap_period_s(self, power_w: float) -> float:
        """Shortest time (s) any counter takes to wrap once at a steady ``power_w`` (W).

        Sample at least twice per this period at the node's highest power (e.g. the package
        TDP plus turbo headroom) or a wrap goes unseen and its energy is lost.
        """
        if power_w <= 0:
            raise ValueError(f"power_w must be positive, got {power_w}")
        return min(d.modulus_uj for d in self._domains) / 1e6 / power_w


def rapl_available(root: str | Path = DEFAULT_ROOT) -> bool:
    """True when a :class:`RaplSysfsMeter` can be built and read on this host."""
    try:
        meter = RaplSysfsMeter(root)
    except MeterUnavailable:
        return False
    meter.close()
    return True
