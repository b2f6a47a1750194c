"""Profiles at rest: hardware ids, the JSON store, IPA's latency fit, the table.

Latency model (fitted profiles)
-------------------------------
IPA interpolates the latency of unmeasured batch sizes with a quadratic in batch size,
``l(b) = a·b² + c·b + d``: ``Model.regression_model`` in IPA's ``optimizer/models.py``
(github.com/reconfigurable-ml-pipeline/ipa, commit 597dc47) fits
``PolynomialFeatures(degree=2)`` + ``LinearRegression`` to the measured (batch, latency)
pairs, replaces any negative prediction by a linear fit's, and derives throughput as
``batch / latency``. :func:`fit_latency` / :func:`predict_profile` do the same with
``numpy.polyfit``. :func:`predict_profile` returns ``(profile, fitted)``; a fitted profile has
``fitted=True`` and copies ``window_s``, ``measured_at``, ``idle_power_w`` and
``energy_method`` from the nearest *measured* batch size. :data:`FITTED_NOTE` says so in words
for reports.

Storage
-------
:class:`ProfileStore` keeps one JSON file per hardware id, ``<root>/<hardware>.json``::

    {"hardware": "cpu-amd-epyc-2c", "schema_version": 2, "profiles": [<Profile JSON>, ...]}

written whole or not at all (:func:`ipa_energy.files.write_json`), so a reader never sees half
a file.

Schema versions: 2 adds what a request and a replica consume (``cpu_s_per_request``,
``gpu_busy_s_per_request``, ``gpu_memory_mb``, ``memory_mb_per_replica``, ``cold_start_s``; ``demand``
says whether they were measured). A file of schema 1 is read through :func:`migrate_v1`:
its CPU demand is derived from its throughput (one busy torch thread per replica thread
for the whole batch time: threads / throughput), labelled ``demand="derived"``, and a
warning says how to re-measure; a store writes schema 2 only. Any other version is an error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np

from ipa_energy.files import write_json
from ipa_energy.spec import Profile, VariantSpec

__all__ = [
    "FITTED_NOTE", "PROFILES_DIR", "SCHEMA_VERSION", "ProfileStore", "fit_latency", "format_table", "hardware_id",
    "migrate_v1", "parse_device", "planning_hardware", "predict_profile",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
# Shipped profiles, one JSON file per hardware id (installed with the package).
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
FITTED_NOTE = (
    "fitted: latency from a least-squares quadratic in batch size (as IPA), energy, CPU and GPU "
    "time per request interpolated linearly between measured batch sizes and clamped at the ends; "
    "window_s, measured_at, idle_power_w, energy_method, memory and cold start are those of the "
    "nearest measured batch size"
)


# --------------------------------------------------------------------------------------------
# Hardware id
# --------------------------------------------------------------------------------------------


def _slug(text: str, limit: int = 48) -> str:
    text = re.sub(r"\((?:r|tm|c)\)", " ", text.lower())
    text = re.sub(r"@\s*[\d.]+\s*[gm]hz", " ", text)
    text = re.sub(r"\b(?:cpu|processor)\b", " ", text)
    text = text.replace("+", "plus")
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return slug[:limit].rstrip("-")


def _gpu_name(index: int) -> str:
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            return torch.cuda.get_device_name(index)
    except Exception:  # pragma: no cover - torch without CUDA
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception as e:
        raise RuntimeError(f"cannot read the name of GPU {index}: {e}") from e


def parse_device(device: str) -> tuple[str, int]:
    """('cpu', 0) for ``cpu``, ('cuda', N) for ``cuda`` / ``cuda:N``; ValueError otherwise."""
    if device == "cpu":
        return "cpu", 0
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not m:
        raise ValueError(f"device must be 'cpu' or 'cuda:N', got {device!r}")
    return "cuda", int(m.group(1) or 0)


def hardware_id(device: str = "cpu") -> str:
    """A stable id of this machine class, used as the profile store's file name.

    Format (lower case, ``[a-z0-9-]`` only):

    * ``cpu-<model slug>-<N>c`` for ``device="cpu"``: the first ``model name`` of
      /proc/cpuinfo without (R)/(TM), clock speed and the words CPU/Processor ("+" → "plus"),
      and N = ``os.cpu_count()`` logical CPUs, e.g. ``cpu-amd-epyc-7763-64-core-16c``;
      ``platform.machine()`` stands in for an unreadable model name.
    * ``gpu-<name slug>`` for ``device="cuda:N"``: the GPU's CUDA/NVML name,
      e.g. ``gpu-nvidia-h200``.
    """
    kind, index = parse_device(device)
    if kind == "cuda":
        return f"gpu-{_slug(_gpu_name(index)) or 'unknown'}"
    from energy.meters.tdp_tables import host_cpu_model

    model = _slug(host_cpu_model()) or _slug(platform.machine()) or "unknown"
    return f"cpu-{model}-{os.cpu_count() or 1}c"


# --------------------------------------------------------------------------------------------
# Latency fit (IPA) and prediction
# --------------------------------------------------------------------------------------------


def _one_series(profiles: Sequence[Profile]) -> list[Profile]:
    if not profiles:
        raise ValueError("need at least one measured profile")
    keys = {(p.variant, p.hardware) for p in profiles}
    if len(keys) != 1:
        raise ValueError(f"profiles mix variants/hardware: {sorted(keys)}")
    ordered = sorted(profiles, key=lambda p: p.batch_size)
    if len({p.batch_size for p in ordered}) != len(ordered):
        raise ValueError("duplicate batch sizes among the profiles")
    return ordered


def _polyfit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    deg = min(2, len(x) - 1)
    coeffs = np.polyfit(x, y, deg) if deg > 0 else np.array([y[0]])
    a, c, d = np.concatenate([np.zeros(3 - len(coeffs)), coeffs])
    return float(a), float(c), float(d)


def fit_latency(profiles: Sequence[Profile], quantile: Literal["p50", "p99"] = "p50") -> tuple[float, float, float]:
    """Least-squares ``l(b) = a·b² + c·b + d`` (ms) through the measured p50 (or p99) latencies.

    The same latency model as IPA (``optimizer/models.py``, ``Model.regression_model``:
    ``PolynomialFeatures(degree=2)`` + ``LinearRegression``). The degree drops to the number
    of points − 1 (one point: a constant; two: a line), leaving a (and c) at 0.
    """
    ordered = _one_series(profiles)
    x = np.array([p.batch_size for p in ordered], dtype=float)
    y = np.array([p.latency_p50_ms if quantile == "p50" else p.latency_p99_ms for p in ordered], dtype=float)
    return _polyfit(x, y)


def _predict(profiles: Sequence[Profile], b: int, quantile: Literal["p50", "p99"]) -> float:
    a, c, d = fit_latency(profiles, quantile)
    value = a * b * b + c * b + d
    if value < 0:  # IPA: a negative quadratic prediction is replaced by a linear model's
        x = np.array([p.batch_size for p in profiles], dtype=float)
        y = np.array([p.latency_p50_ms if quantile == "p50" else p.latency_p99_ms for p in profiles], dtype=float)
        coeffs = np.polyfit(x, y, 1) if len(x) > 1 else np.array([0.0, y[0]])
        value = float(np.polyval(coeffs, b))
    return max(value, 0.0)


def migrate_v1(profile: Profile) -> Profile:
    """A schema-1 profile with its CPU demand derived: torch threads / throughput (CPU s per request).

    A replica runs its batches back to back on ``max(1, int(num_cpus))`` torch threads, busy
    for the whole batch, so each request costs threads × batch time / batch = threads /
    throughput core-seconds; memory and cold start stay unknown (None).
    """
    if profile.demand is not None:
        return profile
    threads = max(1, int(profile.resources.num_cpus))
    cpu = threads / profile.throughput_rps if profile.throughput_rps > 0 else None
    return profile.model_copy(update={"cpu_s_per_request": cpu, "demand": "derived"})


def _interp(b: int, ordered: Sequence[Profile], field: str) -> float | None:
    """`field` at batch b: linear between measured sizes, clamped outside; None if any is unknown."""
    values = [getattr(p, field) for p in ordered]
    if any(v is None for v in values):
        return None
    return float(np.interp(b, [p.batch_size for p in ordered], values))


def predict_profile(profiles: Sequence[Profile], batch_size: int) -> tuple[Profile, bool]:
    """The profile at `batch_size`: the measured one if present (``fitted=False``), else fitted.

    Fitted: p50 and p99 from their own quadratic fits (p99 raised to p50 where it would fall
    below), throughput = batch / p50 latency × 1000, energy, CPU and GPU time per request linear
    in batch size between the neighbouring measured sizes and clamped to the nearest measured
    value outside the measured range (no extrapolation). window_s, measured_at, idle_power_w,
    energy_method, memory and cold start come from the nearest measured batch size (ties: the
    smaller). See
    :data:`FITTED_NOTE`.
    """
    ordered = _one_series(profiles)
    b = int(batch_size)
    if b < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {b}")
    for p in ordered:
        if p.batch_size == b:
            return p, False
    nearest = min(ordered, key=lambda p: (abs(p.batch_size - b), p.batch_size))
    p50 = _predict(ordered, b, "p50")
    p99 = max(_predict(ordered, b, "p99"), p50)
    fitted = nearest.model_copy(update=dict(
        batch_size=b,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        throughput_rps=b / p50 * 1000.0 if p50 > 0 else 0.0,
        energy_per_request_j=_interp(b, ordered, "energy_per_request_j"),
        cpu_s_per_request=_interp(b, ordered, "cpu_s_per_request"),
        gpu_busy_s_per_request=_interp(b, ordered, "gpu_busy_s_per_request"),
        fitted=True,
    ))
    return Profile.model_validate(fitted.model_dump()), True


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


def _name(variant: VariantSpec | str) -> str:
    return variant if isinstance(variant, str) else variant.name


class ProfileStore:
    """Profiles on disk: ``<root>/<hardware>.json`` per hardware id (see the module docstring).

    `hardware` is the id that ``get``/``has`` look in unless told otherwise; by default this
    machine's CPU id (``hardware_id("cpu")``), resolved on first use.
    """

    def __init__(self, root: Path | str, hardware: str | None = None):
        self.root = Path(root)
        self._hardware = hardware

    @property
    def hardware(self) -> str:
        if self._hardware is None:
            self._hardware = hardware_id("cpu")
        return self._hardware

    def path(self, hardware: str | None = None) -> Path:
        hw = hardware or self.hardware
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", hw):
            raise ValueError(f"hardware id {hw!r} is not a safe file name")
        return self.root / f"{hw}.json"

    def load(self, hardware: str | None = None) -> list[Profile]:
        """Every profile stored for one hardware id ([] when there is no file)."""
        path = self.path(hardware)
        if not path.exists():
            return []
        doc = json.loads(path.read_text(encoding="utf-8"))
        version = doc.get("schema_version")
        profiles = [Profile.model_validate(p) for p in doc.get("profiles", [])] if version in (1, SCHEMA_VERSION) else None
        if profiles is None:
            raise ValueError(f"{path}: schema_version {version!r}; this version reads 1 and {SCHEMA_VERSION}")
        if version == 1:
            logger.warning("%s has profiles of schema 1 (no resource demand): their CPU demand is derived from "
                           "throughput; re-measure with `ipa-energy profile --force --variants ...`", path)
            profiles = [migrate_v1(p) for p in profiles]
        return profiles

    def load_all(self) -> list[Profile]:
        """Every profile of every hardware id under root."""
        if not self.root.is_dir():
            return []
        return [p for f in sorted(self.root.glob("*.json")) for p in self.load(f.stem)]

    def get(self, variant: VariantSpec | str, batch_size: int, hardware: str | None = None) -> Profile | None:
        name = _name(variant)
        for p in self.load(hardware):
            if p.variant == name and p.batch_size == int(batch_size):
                return p
        return None

    def has(self, variant: VariantSpec | str, batch_size: int, hardware: str | None = None) -> bool:
        return self.get(variant, batch_size, hardware) is not None

    def put(self, profiles: Iterable[Profile]) -> None:
        """Merge into each profile's hardware file, replacing equal (variant, batch) entries."""
        by_hw: dict[str, list[Profile]] = {}
        for p in profiles:
            by_hw.setdefault(p.hardware, []).append(p)
        for hw, new in by_hw.items():
            merged = {(p.variant, p.batch_size): p for p in self.load(hw)}
            merged.update({(p.variant, p.batch_size): p for p in new})
            doc = {
                "hardware": hw,
                "schema_version": SCHEMA_VERSION,
                "profiles": [merged[k].model_dump(mode="json") for k in sorted(merged)],
            }
            write_json(self.path(hw), doc)  # atomic: concurrent readers see the old or the new file


# --------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------


def format_table(profiles: Iterable[Profile], title: str | None = None):
    """A rich Table of profiles, sorted by hardware, variant and batch size."""
    from rich.table import Table

    rows = sorted(profiles, key=lambda p: (p.hardware, p.variant, p.batch_size))
    hw = sorted({p.hardware for p in rows})
    table = Table(title=title if title is not None else f"Profiles ({', '.join(hw) or 'none'})")
    for col, kw in (("variant", {}), ("batch", {"justify": "right"}), ("p50 ms", {"justify": "right"}),
                    ("p99 ms", {"justify": "right"}), ("req/s", {"justify": "right"}),
                    ("J/request", {"justify": "right"}), ("idle W", {"justify": "right"}), ("method", {}),
                    ("weights", {}), ("window s", {"justify": "right"})):
        table.add_column(col, **kw)
    for p in rows:
        table.add_row(
            p.variant if len(hw) <= 1 else f"{p.variant} [{p.hardware}]",
            str(p.batch_size),
            f"{p.latency_p50_ms:.1f}",
            f"{p.latency_p99_ms:.1f}",
            f"{p.throughput_rps:.1f}",
            _fmt_j(p.energy_per_request_j),
            f"{p.idle_power_w:.2f}",
            p.energy_method,
            p.weights,
            f"{p.window_s:.1f}",
        )
    return table


def _fmt_j(j: float) -> str:
    if j == 0 or not math.isfinite(j):
        return f"{j:g}"
    return f"{j:.3g}" if j < 1 else f"{j:.2f}"


def planning_hardware(store: ProfileStore, hardware: str | None = None) -> tuple[str, str | None]:
    """(hardware id to plan and admit plans with, a warning or None): `hardware` (default this machine's CPU
    class) if the store has its profiles, else the first shipped CPU class."""
    wanted = hardware or hardware_id("cpu")
    if store.path(wanted).exists():
        return wanted, None
    shipped = sorted(p.stem for p in store.root.glob("cpu-*.json"))
    if not shipped:
        raise FileNotFoundError(f"no profiles for {wanted!r} and no CPU profiles in {store.root}")
    return shipped[0], f"no profiles for {wanted}; planning with {shipped[0]}"
