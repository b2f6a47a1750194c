"""Chameleon Cloud's ``etrace2`` report format: parse it, write it, and measure a command.

etrace2 (Kazutomo Yoshii, ANL; source: github.com/coolr-hpc/intercoolr, etrace2.c and
raplreader.c; documented at https://chameleoncloud.readthedocs.io/en/latest/technical/metrics.html)
runs a command, reads the RAPL powercap counters before and after it, and prints to stdout,
interleaved with the command's own output::

    # ETRACE2_VERSION=0.1
    ...command output...
    # ELAPSED=2.579472            <- seconds (printf "%lf")
    # ENERGY=365.788208           <- joules, "total"
    # ENERGY_SOCKET0=99.037841    <- joules, CPU package 0
    # ENERGY_DRAM0=78.577698      <- joules, its DRAM (only when a dram zone exists)
    # ENERGY_SOCKET1=109.230103
    # ENERGY_DRAM1=80.336548

With ``-i SEC`` it also prints ``# Time [S]   Power [W]   Energy [J]`` and one row per interval
(these rows carry no per-device split and are ignored here); with ``-i SEC -r`` it adds
``# START_TIME=<epoch s>``, which we use as the window start. Chameleon's documentation warns
that ENERGY is sometimes reported as (close to) zero while "the sum of ENERGY_SOCKET and
ENERGY_DRAM values should be accurate": the per-socket/DRAM values are therefore authoritative
and ENERGY is used only when there are none (device ``node``). ENERGY is never added to them.

We add one line of our own, ``# METHOD=<EnergyMethod>``, naming what produced the numbers, so
that a TDP estimate written in this format never comes back labelled as a measurement.
"""

from __future__ import annotations

import math
import re
import subprocess
import threading

from energy.meters.base import Measurement, Meter, Sample
from ipa_energy.energy import METHODS
from ipa_energy.errors import IpaEnergyError

__all__ = [
    "DEFAULT_INTERVAL_S", "ETRACE2_VERSION", "NEAR_ZERO_J", "Etrace2FormatError", "format_etrace2", "measure_command",
    "parse_etrace2",
]

ETRACE2_VERSION = "0.1"
NEAR_ZERO_J = 1e-9  # |ENERGY| below this is etrace2's "incorrectly ~0" total
DEFAULT_INTERVAL_S = 0.5  # measure_command's sampling period (s): well below any RAPL wrap period

_LINE = re.compile(r"^#\s*([A-Z][A-Z0-9_]*)\s*=\s*(\S*)\s*$")
_PART = re.compile(r"^ENERGY_(SOCKET|DRAM|GPU)(\d+)$")
_DEVICE = re.compile(r"^(cpu|dram|gpu):(\d+)$")
_KEYS = frozenset({"ELAPSED", "ENERGY", "START_TIME", "METHOD"})  # plus the _PART keys
_KIND_TO_KEY = {"cpu": "SOCKET", "dram": "DRAM", "gpu": "GPU"}  # GPU: our extension, not etrace2's
_KEY_TO_KIND = {v: k for k, v in _KIND_TO_KEY.items()}


class Etrace2FormatError(IpaEnergyError, ValueError):
    """Text that is not a complete etrace2 report (the message names what is wrong)."""


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise Etrace2FormatError(f"etrace2 line '# {key}={text}': not a number") from None
    if not math.isfinite(value) or value < 0:
        raise Etrace2FormatError(f"etrace2 line '# {key}={text}': must be a finite value >= 0")
    return value


def parse_etrace2(text: str) -> Measurement:
    """One etrace2 report → a Measurement (J per device over [start_s, end_s], s).

    Devices: ``cpu:N`` from ENERGY_SOCKETn, ``dram:N`` from ENERGY_DRAMn; ``node`` from ENERGY
    only when there are no per-device values. The window is [0, ELAPSED] unless a START_TIME
    line gives its wall-clock start. Lines other than ``# KEY=VALUE`` (the command's output,
    the interval rows) are ignored. Raises :class:`Etrace2FormatError` naming the missing or
    bad key.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m is None:
            continue
        key, value = m.groups()
        if key not in _KEYS and _PART.match(key) is None:
            continue  # ETRACE2_VERSION, or a '# X=y' line printed by the command itself
        if key in values:
            raise Etrace2FormatError(f"etrace2 key {key} appears twice: more than one report in this text?")
        values[key] = value

    if "ELAPSED" not in values:
        raise Etrace2FormatError("not an etrace2 report: no '# ELAPSED=' line (seconds)")
    elapsed_s = _number("ELAPSED", values["ELAPSED"])

    energy_j: dict[str, float] = {}
    for key, value in values.items():
        part = _PART.match(key)
        if part is not None:
            energy_j[f"{_KEY_TO_KIND[part.group(1)]}:{int(part.group(2))}"] = _number(key, value)
    if not energy_j:
        # Only a total: use it, unless it is etrace2's bogus ~0 with nothing to sum instead.
        if "ENERGY" not in values:
            raise Etrace2FormatError("etrace2 report has no '# ENERGY=' line and no ENERGY_SOCKETn/ENERGY_DRAMn")
        total = _number("ENERGY", values["ENERGY"])
        if abs(total) < NEAR_ZERO_J:
            raise Etrace2FormatError(
                "etrace2 ENERGY reads ~0 (a known etrace2 fault) and there are no "
                "ENERGY_SOCKETn/ENERGY_DRAMn values to sum instead"
            )
        energy_j["node"] = total
    elif "ENERGY" in values:
        _number("ENERGY", values["ENERGY"])  # still checked for form; the parts are authoritative

    method: str = "etrace2"
    if "METHOD" in values:
        method = values["METHOD"]
        if method not in METHODS:
            known = list(METHODS)
            raise Etrace2FormatError(f"etrace2 METHOD={method!r} is not one of {known}")

    start_s = _number("START_TIME", values["START_TIME"]) if "START_TIME" in values else 0.0
    return Measurement(
        start_s=start_s, end_s=start_s + elapsed_s, energy_j=energy_j, method=method  # type: ignore[arg-type]
    )


def format_etrace2(m: Measurement) -> str:
    """A Measurement → etrace2 report text (J, s) plus a ``# METHOD=`` line; parse_etrace2 reads it back.

    Floats are written in Python's shortest round-tripping form rather than etrace2's 6 decimals,
    so the round trip is exact. START_TIME is written when the window does not start at 0.
    """
    if not m.energy_j:
        raise ValueError("nothing to write: the measurement has no devices")
    if "node" in m.energy_j and len(m.energy_j) > 1:
        raise ValueError("a 'node' total cannot be written next to per-device values (ENERGY is ignored then)")
    parts: list[tuple[int, int, str, float]] = []  # (index, kind order, key, J)
    for device, joules in m.energy_j.items():
        if device == "node":
            continue
        d = _DEVICE.match(device)
        if d is None:
            raise ValueError(f"device {device!r} has no etrace2 key (cpu:N, dram:N, gpu:N or node)")
        kind, n = d.group(1), int(d.group(2))
        parts.append((n, list(_KIND_TO_KEY).index(kind), f"ENERGY_{_KIND_TO_KEY[kind]}{n}", joules))

    lines = [f"# ETRACE2_VERSION={ETRACE2_VERSION}", f"# METHOD={m.method}"]
    if m.start_s != 0:
        lines.append(f"# START_TIME={float(m.start_s)!r}")
    lines.append(f"# ELAPSED={float(m.duration_s)!r}")
    lines.append(f"# ENERGY={float(m.total_j)!r}")
    # etrace2's order: SOCKET0, DRAM0, SOCKET1, DRAM1, ...
    lines += [f"# {key}={float(joules)!r}" for _, _, key, joules in sorted(parts)]
    return "\n".join(lines) + "\n"


def measure_command(argv: list[str], meter: Meter, interval_s: float = DEFAULT_INTERVAL_S) -> tuple[int, Measurement]:
    """Run ``argv`` and measure the energy ``meter`` sees meanwhile (J per device, window in s).

    Like etrace2 in spawn mode: one sample before the command starts, one every ``interval_s``
    in a background thread while it runs (so counter wraps are caught: keep interval_s well
    below the meter's wrap period), and a final one after it exits, so the last window is never
    lost. The command inherits stdin/stdout/stderr. Returns (its exit code, unchanged, and the
    Measurement from the first to the final sample). A sampling failure is raised once the
    command has exited.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    first = meter.sample()
    stop = threading.Event()
    errors: list[BaseException] = []

    def poll() -> None:
        while not stop.wait(interval_s):
            try:
                meter.sample()  # the value is not needed: reading keeps the meter's unwrapping current
            except BaseException as e:  # noqa: BLE001 — reported to the caller below
                errors.append(e)
                return

    proc = subprocess.Popen(argv)
    poller = threading.Thread(target=poll, name="etrace2-poll", daemon=True)
    poller.start()
    try:
        returncode = proc.wait()
    finally:
        stop.set()
        poller.join()
        if proc.poll() is None:  # interrupted while waiting: do not leave the command running
            proc.kill()
            proc.wait()
    if errors:
        raise errors[0]
    last: Sample = meter.sample()  # after the poller stopped: this is the last sample
    return returncode, Measurement.between(first, last)
