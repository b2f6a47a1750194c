"""Read one run folder (experiments/schema.py) and derive its headline figures.

`load_run` validates every row against the schema models and names the file and line of
the first bad one; `summarize_run` computes each `RunSummary` field from the raw rows.
Energy is counted over the load window only, [load_start_s, load_start_s + trace.seconds],
so runs of different policies on the same trace cover the same seconds.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from experiments.schema import (
    Decision,
    EnergyWindow,
    ExperimentMeta,
    ReplicaSample,
    RequestRow,
    RunMeta,
    RunSummary,
)
from ipa_energy.energy import is_loadgen, join_methods
from ipa_energy.files import write_json

__all__ = [
    "IncompleteRunError", "OPTIONAL_FILES", "Run", "RunFormatError", "clipped_windows", "energy_coverage",
    "load_experiment_meta", "load_run", "load_run_meta", "loadgen_energy", "p99_prediction_errors", "percentile",
    "request_accuracy", "summarize_run", "time_weighted_cost", "window_energy", "write_summary",
]

OPTIONAL_FILES = ("decisions.jsonl", "energy.jsonl", "replicas.jsonl", "load.csv")
M = TypeVar("M", bound=BaseModel)


class RunFormatError(ValueError):
    """A run file is missing or a row does not match the schema (the message names file and line)."""


class IncompleteRunError(RunFormatError):
    """run.json's status is not "complete" and partial runs were not accepted."""


@dataclass
class Run:
    """Every row of one run folder, validated."""

    run_dir: Path
    meta: RunMeta
    requests: list[RequestRow]
    decisions: list[Decision] = field(default_factory=list)
    energy: list[EnergyWindow] = field(default_factory=list)
    replicas: list[ReplicaSample] = field(default_factory=list)
    load: list[tuple[int, float]] = field(default_factory=list)  # (second of the trace, scheduled requests)
    missing: list[str] = field(default_factory=list)  # optional files that were absent

    @property
    def load_window(self) -> tuple[float, float]:
        start = self.meta.load_start_s
        return start, start + self.meta.trace.seconds


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def _read_json_model(path: Path, model: type[M]) -> M:
    if not path.is_file():
        raise RunFormatError(f"{path}: missing")
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as e:
        raise RunFormatError(f"{path}: not a valid {model.__name__}: {_first_error(e)}") from None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(row)"
    more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def _read_jsonl(path: Path, parse: Callable[[dict], object], tolerate_torn_tail: bool) -> list:
    """Parse every non-blank line; a torn last line (a writer that died mid-line) may be dropped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            rows.append(parse(obj))
        except json.JSONDecodeError as e:
            if tolerate_torn_tail and i == last:
                break
            raise RunFormatError(f"{path}:{i + 1}: not JSON ({e.msg})") from None
        except ValidationError as e:
            raise RunFormatError(f"{path}:{i + 1}: {_first_error(e)}") from None
        except (TypeError, ValueError) as e:
            raise RunFormatError(f"{path}:{i + 1}: {e}") from None
    return rows


def _read_load_csv(path: Path) -> list[tuple[int, float]]:
    rows: list[tuple[int, float]] = []
    with path.open(newline="", encoding="utf-8") as f:
        for i, rec in enumerate(csv.reader(f)):
            if not rec or (i == 0 and rec[:2] == ["second", "scheduled"]):
                continue
            try:
                rows.append((int(rec[0]), float(rec[1])))
            except (IndexError, ValueError):
                raise RunFormatError(f"{path}:{i + 1}: expected 'second,scheduled', got {','.join(rec)!r}") from None
    return rows


def load_run_meta(run_dir: str | Path) -> RunMeta:
    return _read_json_model(Path(run_dir) / "run.json", RunMeta)


def load_run(run_dir: str | Path, *, allow_partial: bool = False) -> Run:
    """Read a run folder. Raises RunFormatError (file and line named) or IncompleteRunError."""
    run_dir = Path(run_dir)
    meta = load_run_meta(run_dir)
    if meta.status != "complete" and not allow_partial:
        raise IncompleteRunError(
            f"{run_dir / 'run.json'}: status is {meta.status!r}, not 'complete'"
            + (f" ({meta.error})" if meta.error else "") + "; pass allow_partial=True to read it anyway"
        )
    torn_ok = meta.status != "complete"  # only an unfinished writer can leave half a line
    requests_path = run_dir / "requests.jsonl"
    if not requests_path.is_file():
        if not allow_partial:
            raise RunFormatError(f"{requests_path}: missing")
        requests = []
    else:
        requests = _read_jsonl(requests_path, RequestRow.model_validate, torn_ok)
    run = Run(run_dir=run_dir, meta=meta, requests=requests)
    readers: dict[str, Callable[[Path], list]] = {
        "decisions.jsonl": lambda p: _read_jsonl(p, Decision.model_validate, torn_ok),
        "energy.jsonl": lambda p: _read_jsonl(p, EnergyWindow.model_validate, torn_ok),
        "replicas.jsonl": lambda p: _read_jsonl(p, ReplicaSample.model_validate, torn_ok),
        "load.csv": _read_load_csv,
    }
    for name, read in readers.items():
        path = run_dir / name
        if path.is_file():
            setattr(run, name.split(".")[0], read(path))
        elif not (name == "decisions.jsonl" and meta.policy_kind != "planner"):
            run.missing.append(name)
    return run


def load_experiment_meta(exp_dir: str | Path) -> ExperimentMeta:
    return _read_json_model(Path(exp_dir) / "experiment.json", ExperimentMeta)


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float, weights: Iterable[int] | None = None) -> float | None:
    """numpy's linear-interpolation percentile; None for no values. With `weights` (rows that
    stand for several requests, RequestRow.count) other than all 1: the weighted inverted CDF."""
    arr = np.asarray(list(values), dtype=float)
    if not arr.size:
        return None
    w = np.asarray(list(weights), dtype=float) if weights is not None else None
    if w is None or np.all(w == 1):
        return float(np.percentile(arr, q))
    order = np.argsort(arr, kind="stable")
    cum = np.cumsum(w[order])
    i = int(np.searchsorted(cum, q / 100 * cum[-1], side="left"))
    return float(arr[order][min(i, len(arr) - 1)])


def request_accuracy(row: RequestRow, meta: RunMeta) -> float | None:
    """Π over stages of the serving variant's accuracy; None unless every stage is named."""
    stages = {v.stage for v in meta.variants.values()}
    if not row.variants or set(row.variants) != stages:
        return None
    unknown = [v for v in row.variants.values() if v not in meta.variants]
    if unknown:
        raise RunFormatError(f"request sent at {row.sent_s} names variants {unknown} that run.json's variants lacks")
    return math.prod(meta.variants[v].accuracy for v in row.variants.values())


def clipped_windows(windows: Iterable[EnergyWindow], start: float, end: float) -> list[tuple[EnergyWindow, float]]:
    """(window, share of its energy inside [start, end]) for windows that overlap it.

    Energy is assumed uniform within a window, so a window straddling an edge counts
    pro rata. Consecutive windows of one node and method may overlap (a node brackets a
    window by its nearest samples); the overlap is counted once, by the earlier window.
    """
    out = []
    by_meter: dict[tuple[str, str], list[EnergyWindow]] = {}
    for w in windows:
        by_meter.setdefault((w.node_id, w.method), []).append(w)
    for series in by_meter.values():
        counted_until = -math.inf
        for w in sorted(series, key=lambda w: (w.start_s, w.end_s)):
            lo, hi = max(w.start_s, start, counted_until), min(w.end_s, end)
            duration = w.end_s - w.start_s
            if hi > lo and duration > 0:
                out.append((w, (hi - lo) / duration))
            counted_until = max(counted_until, w.end_s)
    return out


def window_energy(windows: Iterable[EnergyWindow], start: float, end: float) -> float | None:
    """Σ devices J of every node inside [start, end]; None when no window overlaps it."""
    parts = clipped_windows(windows, start, end)
    return sum(sum(w.energy_j.values()) * share for w, share in parts) if parts else None


def loadgen_energy(windows: Iterable[EnergyWindow], start: float, end: float) -> float | None:
    """Σ J attributed to load-generator consumers inside [start, end]; None without energy windows."""
    parts = clipped_windows(windows, start, end)
    if not parts:
        return None
    return sum(j * share for w, share in parts for c, j in w.consumers_j.items() if is_loadgen(c))


def energy_coverage(run: Run) -> float | None:
    """Share of the load window the energy windows cover (the least-covered node/meter)."""
    start, end = run.load_window
    if end <= start or not run.energy:
        return None
    covered: dict[tuple[str, str], float] = {}
    for w, share in clipped_windows(run.energy, start, end):
        key = (w.node_id, w.method)
        covered[key] = covered.get(key, 0.0) + share * (w.end_s - w.start_s)
    return min(covered.values(), default=0.0) / (end - start)


def time_weighted_cost(samples: Iterable[ReplicaSample], start: float, end: float) -> float | None:
    """Mean of a step function (each sample holds until the next, the last until `end`) over [start, end]."""
    ordered = sorted(samples, key=lambda s: s.time_s)
    if not ordered:
        return None
    total = weight = 0.0
    for s, nxt in zip(ordered, [*ordered[1:], None]):
        lo, hi = max(s.time_s, start), min(nxt.time_s if nxt else end, end)
        if hi > lo:
            total += s.cost_units * (hi - lo)
            weight += hi - lo
    if weight == 0:  # every sample outside the window: the best we have is their mean
        return float(np.mean([s.cost_units for s in ordered]))
    return total / weight


def p99_prediction_errors(decisions: Iterable[Decision]) -> list[float]:
    """|predicted − observed| / observed stage p99, one per stage and interval that has both."""
    return [abs(d.predicted_p99_ms[s] - obs) / obs for d in decisions for s, obs in d.observed_p99_ms.items()
            if obs > 0 and s in d.predicted_p99_ms]


def summarize_run(run: Run) -> RunSummary:
    meta = run.meta
    start, end = run.load_window
    seconds = end - start
    answered = [r for r in run.requests if r.status == 200]
    accuracies = [(a, r.count) for r in answered if (a := request_accuracy(r, meta)) is not None]
    with_energy = [r for r in answered if r.energy_j is not None]
    energy = window_energy(run.energy, start, end)
    loadgen_j = loadgen_energy(run.energy, start, end)
    sent = sum(r.count for r in run.requests)
    n_answered = sum(r.count for r in answered)
    n_energy = sum(r.count for r in with_energy)
    shed = sum(r.count for r in run.requests if r.shed)
    errors = p99_prediction_errors(run.decisions)
    return RunSummary(
        experiment=meta.experiment,
        pipeline=meta.pipeline,
        policy=meta.policy,
        trace=meta.trace.name,
        rate_factor=meta.trace.rate_factor,
        duration_s=seconds,
        requests=sent,
        failed=sent - n_answered - shed,
        shed=shed,
        throughput_rps=n_answered / seconds if seconds > 0 else 0.0,
        p50_ms=percentile((r.latency_ms for r in answered), 50, (r.count for r in answered)),
        p99_ms=percentile((r.latency_ms for r in answered), 99, (r.count for r in answered)),
        sla_ms=meta.sla_ms,
        slo_attainment=sum(r.count for r in answered if r.latency_ms <= meta.sla_ms) / sent if sent else None,
        generator_lag_p99_ms=percentile(((r.sent_s - r.scheduled_s) * 1000 for r in run.requests if r.scheduled_s is not None), 99,
                                        (r.count for r in run.requests if r.scheduled_s is not None)),
        accuracy=sum(a * n for a, n in accuracies) / sum(n for _, n in accuracies) if accuracies else None,
        cost_units=time_weighted_cost(run.replicas, start, end),
        j_per_request=sum(r.energy_j * r.count for r in with_energy) / n_energy if with_energy else None,
        j_per_request_method=join_methods(r.energy_method for r in with_energy),
        requests_with_energy=n_energy,
        energy_j=energy,
        loadgen_energy_j=loadgen_j,
        system_j_per_request=(energy - (loadgen_j or 0.0)) / n_answered if energy is not None and answered else None,
        mean_power_w=energy / seconds if energy is not None and seconds > 0 else None,
        energy_method=join_methods(w.method for w, _ in clipped_windows(run.energy, start, end)),
        energy_coverage=energy_coverage(run),
        carbon_g=energy * meta.carbon_g_per_kwh * meta.pue / 3.6e6 if energy is not None else None,
        plan_changes=sum(1 for d in run.decisions if d.changed),
        p99_prediction_error=float(np.median(errors)) if errors else None,
        p99_predictions=len(errors),
        weights=meta.weights,
    )


def write_summary(run_dir: str | Path, *, allow_partial: bool = False, run: Run | None = None) -> Path:
    """Write <run_dir>/summary.json (atomically: a reader never sees half a file)."""
    run = run or load_run(run_dir, allow_partial=allow_partial)
    path = Path(run_dir) / "summary.json"
    write_json(path, summarize_run(run))
    return path
