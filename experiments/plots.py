"""The report's figures: IPA-style time series, latency CDF, energy vs accuracy.

Figures are drawn on matplotlib's Agg canvas through the object API (no pyplot), so
nothing depends on a display or on pyplot's global state. Every policy keeps one colour
across all figures. Time axes are seconds since second 0 of the trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from experiments.schema import RequestRow, RunSummary
from experiments.summary import Run, percentile, request_accuracy, window_energy
from ipa_energy.energy import ESTIMATE, LOADGEN, base_methods, join_methods

__all__ = [
    "LONG_RUN_S", "POLICY_ORDER", "accuracy_per_bucket", "arrivals_per_second", "bucket_seconds", "days_png",
    "energy_accuracy_png", "hourly",
    "latency_cdf_png", "method_label", "new_figure", "no_data", "p99_per_bucket", "per_bucket", "plain_log_y",
    "policy_color", "power_per_bucket", "save", "timeseries_png",
]

POLICY_ORDER = ("ipa", "ipa-energy", "fa2-low", "fa2-high", "rim",
                "static-max-accuracy", "static-min-energy", "serve-autoscaling")
_COLORS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def policy_color(policy: str) -> str:
    i = POLICY_ORDER.index(policy) if policy in POLICY_ORDER else len(POLICY_ORDER) + sum(map(ord, policy))
    return _COLORS[i % len(_COLORS)]


def new_figure(width: float, height: float, nrows: int = 1, sharex: bool = False):
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, 1, sharex=sharex, squeeze=False)[:, 0]
    return fig, list(axes)


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plain_log_y(ax) -> None:
    """Log y axis labelled 0.1, 0.2, 0.5, ... rather than 10^-1 forms."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def method_label(method: str | None) -> str:
    """The method as a label; an estimate says so (it is never a measurement)."""
    if not method:
        return "no energy data"
    return f"{method}, an estimate" if ESTIMATE in base_methods(method) else method


# ------------------------------------------------------------------------------------------
# Series (arrays of x = seconds since load start)
# ------------------------------------------------------------------------------------------


def bucket_seconds(trace_seconds: float) -> int:
    """10 s as IPA, but at least ~10 buckets for short runs."""
    return 10 if trace_seconds >= 100 else max(1, int(trace_seconds // 10))


def _edges(run: Run, bucket_s: float) -> np.ndarray:
    seconds = run.meta.trace.seconds
    edges = np.arange(0.0, seconds + bucket_s, bucket_s)[: math.ceil(seconds / bucket_s) + 1]
    return np.minimum(edges, seconds)  # the last bucket ends with the load window


def per_bucket(run: Run, bucket_s: float, value: Callable[[RequestRow], float | None],
               reduce: Callable[[list[float], list[int]], float]) -> tuple[np.ndarray, np.ndarray]:
    """Bucket answered requests by send time, `reduce(values, counts)` each (a row stands for
    RequestRow.count requests); NaN where a bucket has no value."""
    edges = _edges(run, bucket_s)
    groups: list[tuple[list[float], list[int]]] = [([], []) for _ in range(len(edges) - 1)]
    t0 = run.meta.load_start_s
    for r in run.requests:
        i = int((r.sent_s - t0) // bucket_s)
        v = value(r) if r.status == 200 else None
        if 0 <= i < len(groups) and v is not None:
            groups[i][0].append(v)
            groups[i][1].append(r.count)
    centres = (edges[:-1] + edges[1:]) / 2
    return centres, np.array([reduce(*g) if g[0] else np.nan for g in groups])


def p99_per_bucket(run: Run, bucket_s: float):
    return per_bucket(run, bucket_s, lambda r: r.latency_ms, lambda v, n: percentile(v, 99, n))


def accuracy_per_bucket(run: Run, bucket_s: float):
    return per_bucket(run, bucket_s, lambda r: request_accuracy(r, run.meta), lambda v, n: float(np.average(v, weights=n)))


def arrivals_per_second(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(second, requests sent in it) for a post-step line."""
    seconds = run.meta.trace.seconds
    offsets = np.array([r.sent_s - run.meta.load_start_s for r in run.requests])
    counts, _ = np.histogram(offsets, bins=np.arange(seconds + 1), weights=[r.count for r in run.requests])
    return np.arange(seconds + 1), np.append(counts, counts[-1] if len(counts) else 0).astype(float)


def power_per_bucket(run: Run, bucket_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Node power (all nodes, all devices) per bucket: clipped window energy / bucket length."""
    edges, t0 = _edges(run, bucket_s), run.meta.load_start_s
    watts = [(window_energy(run.energy, t0 + a, t0 + b) if b > a else None) for a, b in zip(edges[:-1], edges[1:])]
    return (edges[:-1] + edges[1:]) / 2, np.array([w / (b - a) if w is not None else np.nan
                                                     for w, a, b in zip(watts, edges[:-1], edges[1:])])


def _steps(times: Sequence[float], values: Sequence[float], t0: float, end: float):
    """x, y (x in s since t0) of a post-step line from 0 to `end`: each value holds until the next."""
    x, y = np.asarray(times, dtype=float) - t0, np.asarray(values, dtype=float)
    before = np.flatnonzero(x <= 0)
    keep = x > 0
    if len(before):  # the value in force at 0 starts the line at 0
        keep[before[-1]] = True
        x = np.where(np.arange(len(x)) == before[-1], 0.0, x)
    x, y = x[keep & (x < end)], y[keep & (x < end)]
    return (np.append(x, end), np.append(y, y[-1])) if len(x) else (x, y)


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def timeseries_png(runs: Sequence[Run], path: Path, title: str) -> Path:
    """Stacked panels: load, accuracy, cost, p99 per bucket with the SLA, node power."""
    seconds = max(r.meta.trace.seconds for r in runs)
    bucket = bucket_seconds(seconds)
    fig, (load, acc, cost, p99, power) = new_figure(12, 14, nrows=5, sharex=True)
    fig.suptitle(title)

    offered = next((r.load for r in runs if r.load), [])
    if offered:
        load.step([s for s, _ in offered] + [offered[-1][0] + 1], [n for _, n in offered] + [offered[-1][1]],
                  where="post", color="black", lw=1.5, label="offered (load.csv)")
    for run in runs:
        c, t0 = policy_color(run.meta.policy), run.meta.load_start_s
        load.step(*arrivals_per_second(run), where="post", color=c, lw=0.8, alpha=0.7,
                  label=f"{run.meta.policy}: observed")
        if run.decisions:
            times, predicted = [d.time_s for d in run.decisions], [d.predicted_rps for d in run.decisions]
            x, y = _steps(times, predicted, t0, seconds)
            load.step(x, y, where="post", color=c, ls="--", lw=1.2, label=f"{run.meta.policy}: predicted")
        acc.plot(*accuracy_per_bucket(run, bucket), color=c, marker=".", label=run.meta.policy)
        if run.replicas:
            x, y = _steps([s.time_s for s in run.replicas], [s.cost_units for s in run.replicas], t0, seconds)
            cost.step(x, y, where="post", color=c, label=run.meta.policy)
        p99.plot(*p99_per_bucket(run, bucket), color=c, marker=".", label=run.meta.policy)
        if run.energy:
            method = join_methods(w.method for w in run.energy)
            power.plot(*power_per_bucket(run, bucket), color=c, marker=".",
                       label=f"{run.meta.policy} ({method_label(method)})")
    p99.axhline(runs[0].meta.sla_ms, color="red", ls=":", lw=1.2, label=f"SLA {runs[0].meta.sla_ms:g} ms")

    load.set_ylabel("load (req/s)")
    acc.set_ylabel(f"pipeline accuracy\n(mean per {bucket} s)")
    cost.set_ylabel("cost (resource units:\nCPUs + GPUs reserved)")
    p99.set_ylabel(f"p99 latency (ms)\nper {bucket} s")
    power.set_ylabel(f"node power (W)\nmean per {bucket} s")
    power.set_xlabel("time since load start (s)")
    for ax in (load, acc, cost, p99, power):
        ax.set_xlim(0, seconds)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: never over the data
        else:
            no_data(ax)
    return save(fig, path)


def latency_cdf_png(runs: Sequence[Run], path: Path, title: str) -> Path:
    """Share of *sent* requests answered within x ms, so failures keep a curve below 1."""
    fig, (ax,) = new_figure(8, 5)
    largest = smallest = None
    for run in runs:
        answered = sorted((r.latency_ms, r.count) for r in run.requests if r.status == 200)
        if not answered:
            continue
        lat = np.array([a for a, _ in answered])
        sent = sum(r.count for r in run.requests)
        share = np.r_[0, np.cumsum([n for _, n in answered])] / sent  # from 0, at the fastest answer
        ax.step(np.r_[lat[0], lat], share, where="post", color=policy_color(run.meta.policy),
                label=f"{run.meta.policy} ({int(share[-1] * sent)}/{sent} answered)")
        largest, smallest = max(largest or 0, lat[-1]), min(smallest or math.inf, lat[0])
    ax.axvline(runs[0].meta.sla_ms, color="red", ls=":", label=f"SLA {runs[0].meta.sla_ms:g} ms")
    if largest and smallest and smallest > 0 and largest / smallest > 50:
        ax.set_xscale("log")
    ax.set(xlabel="latency (ms)", ylabel="share of sent requests answered within", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def energy_accuracy_png(summaries: Sequence[RunSummary], path: Path, title: str) -> Path:
    """One point per policy: J/request (y) vs pipeline accuracy (x)."""
    fig, (ax,) = new_figure(7, 5)
    points = [s for s in summaries if s.j_per_request is not None and s.accuracy is not None]
    for s in points:
        ax.scatter(s.accuracy, s.j_per_request, s=60, color=policy_color(s.policy), label=s.policy, zorder=3)
        ax.annotate(s.policy, (s.accuracy, s.j_per_request), textcoords="offset points", xytext=(6, 4), fontsize=8)
    method = join_methods(s.j_per_request_method for s in points)
    ax.set(xlabel="pipeline accuracy (product of stage accuracies)",
           ylabel=f"J/request ({method_label(method)})", title=title)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8)
        ax.margins(0.2)
    else:
        no_data(ax, "no policy has both J/request and accuracy")
    return save(fig, path)


#: runs longer than this get the report's figure over days (days_png) instead of the time series
LONG_RUN_S = 6 * 3600


def hourly(run: Run, bucket_s: float = 3600.0) -> dict[str, np.ndarray]:
    """Per bucket of send time: sent, SLO met, answered, dynamic J (Σ attributed), accuracy
    (mean over answered), system J (energy windows by their midpoint, less the load generator's
    share) and nodes in use (the mean of the replica samples' `nodes`)."""
    t0, sla = run.meta.load_start_s, run.meta.sla_ms
    n = max(1, math.ceil(run.meta.trace.seconds / bucket_s))
    out = {k: np.zeros(n) for k in ("sent", "met", "answered", "dynamic_j", "acc_sum", "acc_n", "system_j",
                                    "nodes_sum", "nodes_n")}
    for r in run.requests:
        i = int((r.sent_s - t0) // bucket_s)
        if not 0 <= i < n:
            continue
        out["sent"][i] += r.count
        if r.status == 200:
            out["answered"][i] += r.count
            out["met"][i] += r.count if r.latency_ms <= sla else 0
            out["dynamic_j"][i] += (r.energy_j or 0.0) * r.count
            a = request_accuracy(r, run.meta)
            if a is not None:
                out["acc_sum"][i] += a * r.count
                out["acc_n"][i] += r.count
    for w in run.energy:
        i = int(((w.start_s + w.end_s) / 2 - t0) // bucket_s)
        if 0 <= i < n:
            loadgen = sum(j for c, j in w.consumers_j.items() if c.startswith(LOADGEN))
            out["system_j"][i] += sum(w.energy_j.values()) - loadgen
    for s in run.replicas:
        i = int((s.time_s - t0) // bucket_s)
        if 0 <= i < n and s.nodes is not None:
            out["nodes_sum"][i] += s.nodes
            out["nodes_n"][i] += 1
    return out


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def days_png(runs: Sequence[Run], path: Path, title: str, bucket_s: float = 3600.0) -> Path:
    """A long run over days, per hour: offered load, SLO attainment, accuracy, each policy's
    energy per request over ipa's in the same hour (dynamic solid, system dashed), nodes in use."""
    fig, (load, slo, acc, ratio, nodes) = new_figure(12, 14, nrows=5, sharex=True)
    fig.suptitle(title)
    per = {run.meta.policy: hourly(run, bucket_s) for run in runs}
    base = per.get("ipa")
    for run in runs:
        h, c = per[run.meta.policy], policy_color(run.meta.policy)
        days = (np.arange(len(h["sent"])) + 0.5) * bucket_s / 86400
        load.plot(days, h["sent"] / bucket_s, color=c, lw=0.8, label=run.meta.policy)
        slo.plot(days, _ratio(h["met"], h["sent"]), color=c, lw=0.8, label=run.meta.policy)
        acc.plot(days, _ratio(h["acc_sum"], h["acc_n"]), color=c, lw=0.8, label=run.meta.policy)
        if base is not None and run.meta.policy != "ipa":
            dyn = _ratio(_ratio(h["dynamic_j"], h["answered"]), _ratio(base["dynamic_j"], base["answered"]))
            system = _ratio(_ratio(h["system_j"], h["answered"]), _ratio(base["system_j"], base["answered"]))
            ratio.plot(days, dyn, color=c, lw=0.8, label=f"{run.meta.policy}: dynamic")
            ratio.plot(days, system, color=c, lw=0.8, ls="--", label=f"{run.meta.policy}: system")
        nodes.plot(days, _ratio(h["nodes_sum"], h["nodes_n"]), color=c, lw=0.8, label=run.meta.policy)
    if base is not None:
        ratio.axhline(1.0, color="black", lw=0.8, ls=":")
    hours = f"per {bucket_s / 3600:g} h"
    load.set_ylabel(f"load (req/s)\n{hours}")
    slo.set_ylabel(f"SLO attainment\n{hours}")
    acc.set_ylabel(f"pipeline accuracy\n{hours}")
    ratio.set_ylabel("J/request ÷ ipa's\n(dynamic —, system - -)")
    nodes.set_ylabel("nodes in use")
    nodes.set_xlabel("days since load start")
    for ax in (load, slo, acc, ratio, nodes):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        else:
            no_data(ax)
    return save(fig, path)
