"""TDP tables for the ``tdp-estimate`` method: a CPU or GPU model name → its TDP (W), or None.

Used only by :class:`energy.meters.tdp.TdpEstimateMeter`, i.e. where no energy counter exists.

* CPU TDP: ``energy/data/cpu_power.csv``, vendored unmodified from CodeCarbon 3.3.2 (MIT; see
  ``energy/data/README.md``), looked up by the ``model name`` in /proc/cpuinfo with
  :func:`cpu_tdp_w` (:func:`match_cpu` says which row, and whether exactly).
* Unknown CPU: CodeCarbon's own fallback, ``DEFAULT_POWER_PER_CORE = 4`` W per logical CPU
  ("default W value per core for a CPU if no model is found in the ref csv",
  ``codecarbon/core/cpu.py``; ``TDP._main`` multiplies it by ``count_cpus()``, i.e.
  ``psutil.cpu_count()`` logical CPUs). CodeCarbon's other constant, ``POWER_CONSTANT = 85`` W
  (``codecarbon/external/hardware.py``), is only used there when the model cannot be detected at
  all or psutil is missing; we always have a CPU count, so we use the per-thread rule
  (:data:`FALLBACK_W_PER_THREAD`).
* GPU TDP: ``energy/data/gpu_tdp.csv`` (hand-made, one cited source per row), via
  :func:`gpu_tdp_w` (:func:`match_gpu` says which row).
"""

from __future__ import annotations

import csv
import functools
import math
import os
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CPU_TABLE", "CPU_TABLE_SOURCE", "DATA_DIR", "FALLBACK_SOURCE", "FALLBACK_W_PER_THREAD", "GPU_TABLE",
    "TdpMatch", "cpu_tdp_w", "gpu_tdp_w", "host_cpu_model", "match_cpu", "match_gpu", "normalise_cpu_name",
]

DATA_DIR = Path(__file__).parent.parent / "data"  # energy/data
CPU_TABLE = DATA_DIR / "cpu_power.csv"
GPU_TABLE = DATA_DIR / "gpu_tdp.csv"
CPU_TABLE_SOURCE = "energy/data/cpu_power.csv (CodeCarbon 3.3.2, MIT)"

# CodeCarbon's fallback for a CPU model missing from cpu_power.csv: 4 W per logical CPU
# (DEFAULT_POWER_PER_CORE in codecarbon/core/cpu.py, v3.3.2; used by TDP._main as
# threads * DEFAULT_POWER_PER_CORE with threads = psutil.cpu_count()).
FALLBACK_W_PER_THREAD = 4.0
FALLBACK_SOURCE = (
    "CodeCarbon DEFAULT_POWER_PER_CORE = 4 W per logical CPU (codecarbon/core/cpu.py, v3.3.2), "
    "used when the CPU model is not in cpu_power.csv"
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
