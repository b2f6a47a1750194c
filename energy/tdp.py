"""The ``tdp-estimate`` method: energy estimated from TDP and utilisation, where no counter exists.

Used only where no energy counter (NVML, RAPL, etrace2) can be read, and always labelled
``tdp-estimate`` (``Measurement.measured`` is False for it), never presented as a measurement.

Model, per device::

    power = idle + (TDP - idle) * utilisation        (W; utilisation in [0, 1])

integrated over time by :class:`TdpEstimateMeter`.

Where the numbers come from
---------------------------
* CPU TDP: ``energy/data/cpu_power.csv``, vendored unmodified from CodeCarbon 3.3.2 (MIT; see
  ``energy/data/README.md``), looked up by the ``model name`` in /proc/cpuinfo with
  :func:`cpu_tdp_w`; or given explicitly (``cpu_tdp_w=``).
* Unknown CPU: CodeCarbon's own fallback, ``DEFAULT_POWER_PER_CORE = 4`` W per logical CPU
  ("default W value per core for a CPU if no model is found in the ref csv",
  ``codecarbon/core/cpu.py``; ``TDP._main`` multiplies it by ``count_cpus()``, i.e.
  ``psutil.cpu_count()`` logical CPUs). CodeCarbon's other constant, ``POWER_CONSTANT = 85`` W
  (``codecarbon/external/hardware.py``), is only used there when the model cannot be detected at
  all or psutil is missing; we always have a CPU count, so we use the per-thread rule.
* Idle power: ``cpu_idle_fraction`` x TDP, default **0.3**. This is an assumption of this project,
  not a published figure. For comparison, CodeCarbon's ``cpu_load`` mode puts the floor at 10 % of
  TDP (``load_factor = 0.1 + 0.9 * load**3``, ``codecarbon/external/hardware.py``), so our idle
  estimate is deliberately higher and linear. Pass ``cpu_idle_w`` when a measured idle is known.
* GPU TDP: ``energy/data/gpu_tdp.csv`` (hand-made, one cited source per row), via
  :func:`gpu_tdp_w`.

Every parameter and where it came from is recorded in ``TdpEstimateMeter.assumptions`` so that a
report can print it next to the numbers.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from energy.base import Meter, MeterUnavailable, Sample

DATA_DIR = Path(__file__).with_name("data")
CPU_TABLE = DATA_DIR / "cpu_power.csv"
GPU_TABLE = DATA_DIR / "gpu_tdp.csv"

# CodeCarbon's fallback for a CPU model missing from cpu_power.csv: 4 W per logical CPU
# (DEFAULT_POWER_PER_CORE in codecarbon/core/cpu.py, v3.3.2; used by TDP._main as
# threads * DEFAULT_POWER_PER_CORE with threads = psutil.cpu_count()).
FALLBACK_W_PER_THREAD = 4.0
FALLBACK_SOURCE = (
    "CodeCarbon DEFAULT_POWER_PER_CORE = 4 W per logical CPU (codecarbon/core/cpu.py, v3.3.2), "
    "used when the CPU model is not in cpu_power.csv"
)
# Assumption of this project (not a published figure): idle power as a fraction of TDP.
DEFAULT_IDLE_FRACTION = 0.3

INTEGRATION = (
    "rectangle rule with the interval-mean utilisation: E += (idle + (TDP - idle) * u) * dt, "
    "u = mean utilisation since the previous sample (exact for this linear model)"
)


@dataclass(frozen=True)
class TdpMatch:
    """One table row that a model name resolved to."""

    name: str  # the row's name in the table
    tdp_w: float
    idle_w: float | None = None
    exact: bool = True  # False: found by the token fallback


# --------------------------------------------------------------------------------------------
# CPU table
# --------------------------------------------------------------------------------------------

_GEN_PREFIX = re.compile(r"\b\d+(?:st|nd|rd|th)\s+gen\b")  # "12th Gen Intel(R) Core(TM) ..."
_CORE_COUNT = re.compile(r"\b\d+-core\b")  # "AMD EPYC 9654 96-Core Processor"
_WITH_GRAPHICS = re.compile(r"\bwith\s+radeon\b.*$")  # "... with Radeon Graphics"
_NOISE_WORDS = re.compile(r"\b(?:cpu|processor)\b")
_NOT_TOKEN = re.compile(r"[^a-z0-9+\-]+")


def normalise_cpu_name(name: str) -> str:
    """Lower-case model name without (R)/(TM), "CPU @ x GHz", "Processor", core counts, spaces.

    Mirrors CodeCarbon's cleaning (``TDP._get_matching_cpu`` strips "(R)", " CPU @ ...",
    " CPU" and "@ x.xxGHz"; its scraper strips "(TM)", "Processor" and "with ... Graphics"),
    and applies the same to both the table and the query, so e.g.
    ``"Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"`` → ``"intel xeon platinum 8375c"``.
    """
    s = name.lower()
    for mark in ("(r)", "(tm)", "®", "™"):
        s = s.replace(mark, " ")
    s = s.split("@", 1)[0]  # clock speed suffix: "CPU @ 2.90GHz"
    s = _GEN_PREFIX.sub(" ", s)
    s = _CORE_COUNT.sub(" ", s)
    s = _WITH_GRAPHICS.sub(" ", s)
    s = _NOISE_WORDS.sub(" ", s)
    s = _NOT_TOKEN.sub(" ", s)
    return " ".join(s.split())


def _is_model_token(tok: str) -> bool:
    return any(c.isdigit() for c in tok)


@functools.lru_cache(maxsize=None)
def _cpu_table() -> dict[str, tuple[tuple[str, float], ...]]:
    """normalised name → the (name, TDP) rows with that normalised name."""
    table: dict[str, list[tuple[str, float]]] = {}
    with CPU_TABLE.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = (row.get("Name") or "").strip()
            try:
                tdp = float(row.get("TDP") or "")
            except ValueError:
                continue  # a few upstream rows are malformed (e.g. "27.29.5")
            if not name or not math.isfinite(tdp) or tdp <= 0:
                continue
            key = normalise_cpu_name(name)
            if key:
                table.setdefault(key, []).append((name, tdp))
    return {k: tuple(v) for k, v in table.items()}


def _unanimous(rows: Sequence[tuple[str, float]]) -> tuple[str, float] | None:
    """The row, if every row agrees on the TDP; None when they disagree."""
    tdps = {tdp for _, tdp in rows}
    return rows[0] if len(tdps) == 1 else None


def match_cpu(model_name: str) -> TdpMatch | None:
    """Resolve a /proc/cpuinfo ``model name`` to a row of cpu_power.csv, or None when unsure.

    1. Exact match after :func:`normalise_cpu_name` on both sides.
    2. Conservative token fallback: a row qualifies only if its *model tokens* (tokens with a
       digit: ``8375c``, ``e5-2686``, ``v4``, ``7r13``) are exactly the query's, and one side's
       remaining words are a subset of the other's (so extra words like "Genuine" or a missing
       vendor are tolerated, but "Xeon" never matches "Core", and ``7763`` never matches
       ``7763p``). It is used only if exactly one distinct model qualifies.

    A name without any model number ("AMD EPYC", "Intel Xeon Processor (Icelake)",
    "Common KVM processor"), or with nothing but one, returns None: there is no way to tell which part it is, and guessing
    another model's TDP would be worse than admitting we don't know.
    """
    query = normalise_cpu_name(model_name or "")
    if not query:
        return None
    table = _cpu_table()
    if query in table:
        hit = _unanimous(table[query])
        return TdpMatch(name=hit[0], tdp_w=hit[1], exact=True) if hit else None

    q_tokens = query.split()
    q_models = {t for t in q_tokens if _is_model_token(t)}
    if not q_models:
        return None
    q_words = {t for t in q_tokens if not _is_model_token(t)}
    if not q_words:
        return None  # a bare number ("7763") names no family: don't guess one
    candidates = []
    for key, rows in table.items():
        r_tokens = key.split()
        if {t for t in r_tokens if _is_model_token(t)} != q_models:
            continue
        r_words = {t for t in r_tokens if not _is_model_token(t)}
        if q_words <= r_words or r_words <= q_words:
            candidates.append(key)
    if len(candidates) != 1:
        return None
    hit = _unanimous(table[candidates[0]])
    return TdpMatch(name=hit[0], tdp_w=hit[1], exact=False) if hit else None


def cpu_tdp_w(model_name: str) -> float | None:
    """TDP (W, per package) of a CPU model from cpu_power.csv; None when not known for sure."""
    hit = match_cpu(model_name)
    return hit.tdp_w if hit else None


def host_cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """This host's CPU model: the first ``model name`` in /proc/cpuinfo, else platform.processor()."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or ""


# --------------------------------------------------------------------------------------------
# GPU table
# --------------------------------------------------------------------------------------------

_GPU_IGNORED = frozenset({"nvidia", "tesla"})


def _gpu_tokens(name: str) -> frozenset[str]:
    return frozenset(t for t in re.split(r"[^a-z0-9]+", name.lower()) if t and t not in _GPU_IGNORED)


@dataclass(frozen=True)
class _GpuRow:
    model: str
    tdp_w: float
    idle_w: float | None
    rules: tuple[tuple[frozenset[str], frozenset[str]], ...]  # (required, forbidden) per alternative

    def matches(self, tokens: frozenset[str]) -> bool:
        if tokens == _gpu_tokens(self.model):
            return True
        return any(req <= tokens and not (bad & tokens) for req, bad in self.rules)


@functools.lru_cache(maxsize=None)
def _gpu_table() -> tuple[_GpuRow, ...]:
    rows = []
    with GPU_TABLE.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rules = []
            for alt in (row.get("match") or "").split(";"):
                toks = alt.split()
                if toks:
                    rules.append((frozenset(t for t in toks if not t.startswith("!")),
                                  frozenset(t[1:] for t in toks if t.startswith("!"))))
            idle = (row.get("idle_w") or "").strip()
            rows.append(_GpuRow(model=row["model"].strip(), tdp_w=float(row["tdp_w"]),
                                idle_w=float(idle) if idle else None, rules=tuple(rules)))
    return tuple(rows)


def match_gpu(name: str) -> TdpMatch | None:
    """Resolve an NVML / nvidia-smi GPU name to a row of gpu_tdp.csv, or None when unsure.

    E.g. "NVIDIA H100 80GB HBM3" → "NVIDIA H100 SXM", "Tesla T4" → "NVIDIA T4". Returns None
    unless exactly one row matches, and for parts not in the table (e.g. "NVIDIA A10G").
    """
    tokens = _gpu_tokens(name or "")
    if not tokens:
        return None
    hits = [r for r in _gpu_table() if r.matches(tokens)]
    if len(hits) != 1:
        return None
    r = hits[0]
    return TdpMatch(name=r.model, tdp_w=r.tdp_w, idle_w=r.idle_w, exact=tokens == _gpu_tokens(r.model))


def gpu_tdp_w(name: str) -> float | None:
    """Board power / TDP (W) of a GPU from gpu_tdp.csv; None when not known for sure."""
    hit = match_gpu(name)
    return hit.tdp_w if hit else None


# --------------------------------------------------------------------------------------------
# Utilisation and the meter
# --------------------------------------------------------------------------------------------


class CpuTimesUtilisation:
    """System-wide CPU utilisation in [0, 1] since the previous call, from psutil.cpu_times().

    The same arithmetic as ``psutil.cpu_percent(interval=None)`` (busy = total - idle - iowait;
    on Linux guest/guest_nice are already inside user/nice and are not counted twice), but with
    its own baseline, so other callers of cpu_percent in the process (Ray, libraries) cannot
    shift the interval. The baseline is taken at construction.
    """

    def __init__(self, cpu_times: Callable[[], object] | None = None):
        if cpu_times is None:
            try:
                import psutil
            except ImportError as e:  # pragma: no cover - psutil ships with ray
                raise MeterUnavailable(f"psutil is needed for CPU utilisation: {e}") from e
            cpu_times = psutil.cpu_times
        self._cpu_times = cpu_times
        self._last = self._read()

    def _read(self) -> tuple[float, float]:
        t = self._cpu_times()
        fields = t._asdict() if hasattr(t, "_asdict") else dict(vars(t))
        total = sum(float(v) for v in fields.values())
        total -= float(fields.get("guest", 0.0)) + float(fields.get("guest_nice", 0.0))
        idle = float(fields.get("idle", 0.0)) + float(fields.get("iowait", 0.0))
        return total, idle

    def __call__(self) -> float:
        total, idle = self._read()
        last_total, last_idle = self._last
        self._last = (total, idle)
        d_total = total - last_total
        if d_total <= 0:
            return 0.0
        return _clamp01((d_total - (idle - last_idle)) / d_total)


def _clamp01(u: float) -> float:
    u = float(u)
    if math.isnan(u):
        return 0.0
    return min(1.0, max(0.0, u))


class GpuEstimate(NamedTuple):
    """One GPU for the estimate: TDP (W), idle (W; None → gpu_idle_fraction x TDP), utilisation."""

    tdp_w: float
    idle_w: float | None
    utilisation: Callable[[], float]


class TdpEstimateMeter(Meter):
    """Estimated cumulative energy from TDP x utilisation (method ``tdp-estimate``).

    Devices: ``cpu:0`` … ``cpu:{num_sockets-1}`` (each package at the per-package TDP, all driven
    by the same system-wide utilisation, which cannot be split by package here), then ``gpu:N``
    for each GPU in ``gpus``.

    Args:
        cpu_tdp_w: TDP of one CPU package (W). None: look the host CPU up in cpu_power.csv, else
            the CodeCarbon fallback of 4 W per logical CPU (split evenly over the sockets).
        cpu_idle_fraction: idle power as a fraction of TDP when ``cpu_idle_w`` is not given
            (default 0.3: an assumption, see the module docstring).
        cpu_idle_w: idle power of one package (W), overriding the fraction.
        utilisation: callable returning the CPU utilisation in [0, 1] averaged over the interval
            since its previous call. Default: :class:`CpuTimesUtilisation` (psutil.cpu_times
            deltas, system-wide), primed at construction.
        num_sockets: CPU packages (default 1).
        gpus: ``(tdp_w, idle_w, utilisation)`` per GPU, same conventions as the CPU.
        gpu_idle_fraction: idle fraction for GPUs given with ``idle_w=None`` (assumption).
        clock: wall clock (s), ``time.time`` by default; injectable for tests.
        cpu_model: model name to look up instead of this host's /proc/cpuinfo one.
        logical_cpus: logical CPU count for the fallback (default ``os.cpu_count()``).

    ``sample()`` integrates power over the time since the previous sample (rectangle rule with the
    interval-mean utilisation: exact for this linear model), under a lock; the result never
    decreases, also when the clock steps back (that interval counts as zero).
    """

    method = "tdp-estimate"

    def __init__(
        self,
        cpu_tdp_w: float | None = None,
        cpu_idle_fraction: float = DEFAULT_IDLE_FRACTION,
        cpu_idle_w: float | None = None,
        utilisation: Callable[[], float] | None = None,
        num_sockets: int = 1,
        gpus: Sequence[GpuEstimate | tuple[float, float | None, Callable[[], float]]] = (),
        gpu_idle_fraction: float = DEFAULT_IDLE_FRACTION,
        clock: Callable[[], float] = time.time,
        cpu_model: str | None = None,
        logical_cpus: int | None = None,
    ):
        if int(num_sockets) != num_sockets or num_sockets < 1:
            raise ValueError(f"num_sockets must be a positive integer, got {num_sockets!r}")
        num_sockets = int(num_sockets)
        _check_fraction("cpu_idle_fraction", cpu_idle_fraction)
        _check_fraction("gpu_idle_fraction", gpu_idle_fraction)
        model = cpu_model if cpu_model is not None else host_cpu_model()

        assumptions: dict = {
            "method": self.method,
            "formula": "power = idle + (TDP - idle) * utilisation",
            "integration": INTEGRATION,
            "cpu_model": model,
            "num_sockets": num_sockets,
        }
        if cpu_tdp_w is not None:
            tdp, source = float(cpu_tdp_w), "config"
        else:
            hit = match_cpu(model)
            if hit is not None:
                tdp, source = hit.tdp_w, f"table:{hit.name}"
                assumptions["cpu_table"] = "energy/data/cpu_power.csv (CodeCarbon 3.3.2, MIT)"
                assumptions["cpu_table_match"] = "exact" if hit.exact else "token"
            else:
                threads = int(logical_cpus or os.cpu_count() or 1)
                tdp, source = FALLBACK_W_PER_THREAD * threads / num_sockets, "fallback"
                assumptions["fallback"] = FALLBACK_SOURCE
                assumptions["fallback_w_per_thread"] = FALLBACK_W_PER_THREAD
                assumptions["logical_cpus"] = threads
        if not (math.isfinite(tdp) and tdp > 0):
            raise ValueError(f"CPU TDP must be a positive number of watts, got {tdp!r}")
        if cpu_idle_w is not None:
            idle, idle_source = float(cpu_idle_w), "config"
        else:
            idle, idle_source = cpu_idle_fraction * tdp, f"assumption: {cpu_idle_fraction} x TDP"
        _check_idle("cpu_idle_w", idle, tdp)

        self.tdp_source = source
        self.cpu_tdp_w = tdp  # per package
        self.cpu_idle_w = idle  # per package
        self.num_sockets = num_sockets
        assumptions.update(
            tdp_source=source,
            cpu_tdp_w=tdp,
            cpu_idle_w=idle,
            cpu_idle_source=idle_source,
            cpu_idle_fraction=None if cpu_idle_w is not None else cpu_idle_fraction,
            utilisation=("injected" if utilisation is not None
                         else "psutil.cpu_times() deltas, system-wide, since the previous sample"),
        )

        self._gpus: list[GpuEstimate] = []
        gpu_notes = []
        for i, g in enumerate(gpus):
            g_tdp, g_idle, g_util = g
            g_tdp = float(g_tdp)
            if not (math.isfinite(g_tdp) and g_tdp > 0):
                raise ValueError(f"gpu:{i} TDP must be a positive number of watts, got {g_tdp!r}")
            if g_idle is None:
                g_idle, g_src = gpu_idle_fraction * g_tdp, f"assumption: {gpu_idle_fraction} x TDP"
            else:
                g_idle, g_src = float(g_idle), "config"
            _check_idle(f"gpu:{i} idle_w", g_idle, g_tdp)
            self._gpus.append(GpuEstimate(g_tdp, g_idle, g_util))
            gpu_notes.append({"device": f"gpu:{i}", "tdp_w": g_tdp, "idle_w": g_idle, "idle_source": g_src})
        if gpu_notes:
            assumptions["gpus"] = gpu_notes
        self.assumptions = assumptions

        self._utilisation = utilisation if utilisation is not None else CpuTimesUtilisation()
        self._clock = clock
        self._devices = [f"cpu:{i}" for i in range(num_sockets)] + [f"gpu:{i}" for i in range(len(self._gpus))]
        self._energy = {d: 0.0 for d in self._devices}
        self._lock = threading.Lock()
        self._last_t = float(clock())

    def devices(self) -> list[str]:
        return list(self._devices)

    def idle_power_w(self) -> dict[str, float]:
        """The idle power this estimate assumes, per device (W): never attributed to a replica."""
        return {**{f"cpu:{i}": self.cpu_idle_w for i in range(self.num_sockets)},
                **{f"gpu:{i}": g.idle_w for i, g in enumerate(self._gpus)}}

    def cpu_power_w(self, utilisation: float) -> float:
        """Estimated power of one CPU package (W) at a utilisation in [0, 1]."""
        return self.cpu_idle_w + (self.cpu_tdp_w - self.cpu_idle_w) * _clamp01(utilisation)

    def sample(self) -> Sample:
        with self._lock:
            now = float(self._clock())
            dt = max(0.0, now - self._last_t)
            p_cpu = self.cpu_power_w(self._utilisation())
            for i in range(self.num_sockets):
                self._energy[f"cpu:{i}"] += p_cpu * dt
            for i, g in enumerate(self._gpus):
                p_gpu = g.idle_w + (g.tdp_w - g.idle_w) * _clamp01(g.utilisation())
                self._energy[f"gpu:{i}"] += p_gpu * dt
            self._last_t = max(self._last_t, now)
            return Sample(time_s=now, energy_j=dict(self._energy), method=self.method)


def _check_fraction(name: str, value: float) -> None:
    if not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_idle(name: str, idle: float, tdp: float) -> None:
    if not (math.isfinite(idle) and 0.0 <= idle <= tdp):
        raise ValueError(f"{name} must be between 0 and the TDP ({tdp} W), got {idle!r}")
