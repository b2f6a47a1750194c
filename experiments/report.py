"""The experiment report: headline table per experiment, IPA-style figures, in Markdown or HTML.

    .venv/bin/python -m experiments.report results/experiments/bursty-video [more dirs] --out report/ [--format html]

Inputs are experiment folders (experiment.json + one folder per run) and/or single run
folders; runs are grouped by their experiment name. summary.json of every complete run is
rebuilt on the way (it is derived). Runs that are not complete are listed, not summarized,
unless partial runs are accepted. An experiment whose policies ran several times
(`--repeat K`) gets the repeats table first — mean (min–max) per policy, from
experiments.repeats — then the per-run table.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiments import plots, repeats
from experiments.markdown import markdown_table
from ipa_energy.energy import ESTIMATE, base_methods, is_simulated, join_methods
from ipa_energy.files import write_atomic
from experiments.schema import ExperimentMeta, RunSummary
from experiments.summary import (
    Run, RunFormatError, energy_coverage, load_experiment_meta, load_run, load_run_meta, summarize_run, write_summary,
)

__all__ = [
    "DEFINITIONS", "ExperimentGroup", "HEADERS", "MAX_LAG_MS", "MIN_ENERGY_COVERAGE", "build_report", "collect",
    "group_repeat_stats", "has_repeats", "headline_rows", "headline_table", "ipa_energy_ratio", "markdown_table",
    "render_html", "render_markdown", "run_labels", "write_report",
]

MIN_ENERGY_COVERAGE = 0.95
HEADERS = ("policy", "J/request", "system J/request", "mean W", "total J", "g CO2e", "accuracy", "cost (units)",
           "p50 ms", "p99 ms", "SLO attainment", "shed / sent", "failed / sent", "plan changes")


@dataclass
class ExperimentGroup:
    name: str
    meta: ExperimentMeta | None
    runs: list[Run] = field(default_factory=list)
    summaries: list[RunSummary] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # run label (policy, or "policy rN") → why it has no row


# ------------------------------------------------------------------------------------------
# Collecting runs
# ------------------------------------------------------------------------------------------


def _run_dirs(path: Path) -> tuple[ExperimentMeta | None, list[Path]]:
    if (path / "experiment.json").is_file():
        return load_experiment_meta(path), sorted(p for p in path.iterdir() if (p / "run.json").is_file())
    if (path / "run.json").is_file():
        return None, [path]
    raise RunFormatError(f"{path}: neither an experiment folder (experiment.json) nor a run folder (run.json)")


def _policy_rank(meta: ExperimentMeta | None, policy: str) -> tuple[int, str]:
    order = list(meta.policies) if meta else []
    order += [p for p in plots.POLICY_ORDER if p not in order]
    return (order.index(policy) if policy in order else len(order), policy)


def collect(paths: Iterable[str | Path], *, allow_partial: bool = False) -> list[ExperimentGroup]:
    """Load and summarize every run under `paths`, grouped by experiment, in the experiment's policy order."""
    groups: dict[str, ExperimentGroup] = {}
    seen: set[Path] = set()
    listed: dict[str, set[tuple[str, int]]] = {}  # experiment → (policy, repeat) of skipped runs
    for path in map(Path, paths):
        exp_meta, run_dirs = _run_dirs(path)
        if exp_meta:
            groups.setdefault(exp_meta.experiment, ExperimentGroup(exp_meta.experiment, exp_meta)).meta = exp_meta
        for run_dir in run_dirs:
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            meta = load_run_meta(run_dir)
            group = groups.setdefault(meta.experiment, ExperimentGroup(meta.experiment, None))
            if meta.status != "complete" and not allow_partial:
                group.skipped[repeats.run_label(meta.policy, meta.repeat)] = (
                    f"status {meta.status}" + (f" ({meta.error})" if meta.error else ""))
                listed.setdefault(meta.experiment, set()).add((meta.policy, meta.repeat or 1))
                continue
            group.runs.append(load_run(run_dir, allow_partial=allow_partial))
    for group in groups.values():
        group.runs.sort(key=lambda r: (_policy_rank(group.meta, r.meta.policy), r.meta.repeat or 1))
        group.summaries = [summarize_run(r) for r in group.runs]
        present = {(r.meta.policy, r.meta.repeat or 1) for r in group.runs} | listed.get(group.name, set())
        want = group.meta.repeat if group.meta else 1
        for policy in group.meta.policies if group.meta else []:
            if want == 1 and policy not in {p for p, _ in present}:
                group.skipped[policy] = "no run folder"
            for r in range(1, want + 1) if want > 1 else ():
                if (policy, r) not in present:
                    group.skipped[repeats.run_label(policy, r)] = "no run folder"
    return list(groups.values())


def has_repeats(group: ExperimentGroup) -> bool:
    """Whether any policy of the group has more than one run (then the report shows the repeats table)."""
    return len(group.runs) > len({r.meta.policy for r in group.runs})


def run_labels(group: ExperimentGroup) -> list[str]:
    """A label per run: `policy rN` when the group has repeats (a single run counts as r1), else the policy."""
    if not has_repeats(group):
        return [r.meta.policy for r in group.runs]
    return [repeats.run_label(r.meta.policy, r.meta.repeat or 1) for r in group.runs]


def group_repeat_stats(group: ExperimentGroup) -> list[repeats.RepeatStats]:
    """Mean and min–max per policy over the group's runs, ratios paired by repeat."""
    return repeats.repeat_stats(group.summaries, [r.meta.repeat for r in group.runs])


# ------------------------------------------------------------------------------------------
# Headline table
# ------------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _sig(value: float) -> str:
    """3 significant figures, but whole numbers from 100 up (no 1.23e+05 in a table)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:#.3g}"


def _energy(value: float | None, method: str | None) -> str:
    return "n/a" if value is None else f"{_sig(value)} ({method})"


def headline_rows(summaries: Sequence[RunSummary], labels: Sequence[str] | None = None) -> list[list[str]]:
    """One row per run; `labels` name the rows (default: the policy)."""
    labels = [s.policy for s in summaries] if labels is None else labels
    return [[
        label + ("" if s.weights == "checkpoint" else "*"),
        _energy(s.j_per_request, s.j_per_request_method),
        _energy(s.system_j_per_request, s.energy_method),
        _energy(s.mean_power_w, s.energy_method),
        _energy(s.energy_j, s.energy_method),
        _energy(s.carbon_g, s.energy_method),
        _num(s.accuracy, ".4f"),
        _num(s.cost_units, ".2f"),
        _num(s.p50_ms, ".0f"),
        _num(s.p99_ms, ".0f"),
        "-" if s.slo_attainment is None else f"{s.slo_attainment:.1%}",
        f"{s.shed} / {s.requests}",
        f"{s.failed} / {s.requests}",
        str(s.plan_changes),
    ] for s, label in zip(summaries, labels, strict=True)]


def headline_table(summaries: Sequence[RunSummary], labels: Sequence[str] | None = None) -> str:
    """One markdown row per run; energy figures carry their method in brackets; * = random weights."""
    return markdown_table(HEADERS, headline_rows(summaries, labels))


def ipa_energy_ratio(summaries: Sequence[RunSummary]) -> str | None:
    """ipa-energy's J/request relative to ipa's, when both runs have one."""
    by_policy = {s.policy: s for s in summaries}
    ipa, ours = by_policy.get("ipa"), by_policy.get("ipa-energy")
    if not (ipa and ours and ipa.j_per_request and ours.j_per_request is not None):
        return None
    ratio = ours.j_per_request / ipa.j_per_request
    change = f"{abs(1 - ratio):.1%} {'less' if ratio <= 1 else 'more'} energy per request"
    text = (f"**ipa-energy / ipa J/request = {ratio:.3f}** ({_sig(ours.j_per_request)} J vs "
            f"{_sig(ipa.j_per_request)} J, {join_methods([ours.j_per_request_method, ipa.j_per_request_method])}: "
            f"{change}; accuracy {_num(ours.accuracy, '.4f')} vs {_num(ipa.accuracy, '.4f')}).")
    if ipa.system_j_per_request and ours.system_j_per_request is not None:
        text += (f" System J/request (all node energy, idle included, less the load generator's share): "
                 f"**{ours.system_j_per_request / ipa.system_j_per_request:.3f}** ({_sig(ours.system_j_per_request)} J vs "
                 f"{_sig(ipa.system_j_per_request)} J, {join_methods([ours.energy_method, ipa.energy_method])}).")
    if ours.j_per_request_method != ipa.j_per_request_method:
        text += (f" The two runs used different energy methods ({ours.j_per_request_method} vs "
                 f"{ipa.j_per_request_method}): the ratio compares unlike figures.")
    return text


# ------------------------------------------------------------------------------------------
# Report blocks → Markdown / HTML
# ------------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "experiment"


MAX_LAG_MS = 1000.0  # an open-loop replay that sends later than this is no longer the trace


def _notes(group: ExperimentGroup) -> list[str]:
    notes = []
    many, labels = has_repeats(group), run_labels(group)
    ratio = repeats.ratio_note(group_repeat_stats(group)) if many else ipa_energy_ratio(group.summaries)
    if ratio:
        notes.append(ratio)
    estimated = list(dict.fromkeys(  # a policy once, however many runs it had
        s.policy for s in group.summaries
        if ESTIMATE in base_methods(join_methods([s.energy_method, s.j_per_request_method]))))
    if estimated:
        notes.append(f"**Energy method `{ESTIMATE}`** ({', '.join(estimated)}): these energy figures are an "
                     "estimate (idle + (TDP − idle) × utilisation), **not a measurement**.")
    simulated = list(dict.fromkeys(s.policy for s in group.summaries
                                   if is_simulated(join_methods([s.energy_method, s.j_per_request_method]))))
    if simulated:
        notes.append(f"**Simulated** ({', '.join(simulated)}): these runs come from `ipa-energy simulate` (sim): "
                     "requests, latencies and energy are computed from the profiles, not served or metered.")
    not_trained = list(dict.fromkeys(s.policy + ("" if s.weights == "random" else f" ({s.weights})")
                                     for s in group.summaries if s.weights != "checkpoint"))
    if not_trained:
        notes.append(f"\\* Weights: random ({', '.join(not_trained)}). Accuracy is the published figure of the model "
                     "each variant stands for; latency and energy come from the random-weight architecture.")
    behind = [f"{label} ({s.generator_lag_p99_ms / 1000:.1f} s)" for s, label in zip(group.summaries, labels)
              if s.generator_lag_p99_ms is not None and s.generator_lag_p99_ms > MAX_LAG_MS]
    if behind:
        notes.append(f"Locust fell behind the trace (p99 of sent − scheduled): {', '.join(behind)}; every sender "
                     "was waiting for an answer, so the offered load was lower than the trace (raise --senders, "
                     "or lower --rate-factor).")
    predicted = [f"{label} {s.p99_prediction_error:.0%} ({s.p99_predictions})" for s, label in zip(group.summaries, labels)
                 if s.p99_prediction_error is not None]
    if predicted:
        notes.append("Stage p99 as the planner's model predicted it for the running plan at the observed load, vs "
                     "observed (median |error|, over stage-intervals): " + ", ".join(predicted) + ".")
    for run, label in zip(group.runs, labels):
        cover = energy_coverage(run)
        if cover is not None and cover < MIN_ENERGY_COVERAGE:
            notes.append(f"{label}: energy windows cover only {cover:.0%} of the load window, so its "
                         "total J, mean W and g CO2e understate.")
        if run.missing:
            notes.append(f"{label}: no {', '.join(run.missing)} in {run.run_dir}.")
        if run.meta.status != "complete":
            notes.append(f"{label}: partial run (status {run.meta.status}).")
    notes += [f"Not in the table: {policy} ({why})." for policy, why in group.skipped.items()]
    return notes


def _experiment_blocks(group: ExperimentGroup, out_dir: Path) -> list[tuple]:
    blocks: list[tuple] = [("h2", f"Experiment `{group.name}`")]
    first = group.runs[0].meta if group.runs else None
    meta = group.meta or first
    if meta:
        trace = meta.trace
        blocks.append(("p", f"Pipeline `{meta.pipeline}` ({meta.tier} tier) on `{meta.hardware}`; trace "
                            f"`{trace.name}` ({trace.kind}, {trace.seconds} s, rate factor {trace.rate_factor:g})"
                            + (f"; SLA {first.sla_ms:g} ms." if first else ".")))
    if not group.runs:
        return blocks + [("ul", _notes(group) or ["No runs."])]
    runs, summaries, which = group.runs, group.summaries, ""
    if has_repeats(group):
        stats = group_repeat_stats(group)
        blocks += [
            ("p", f"Each policy ran up to {max(st.n for st in stats)} times, interleaved (repeat r of every policy "
                  "before repeat r + 1). Cells: mean (min–max) over the policy's runs; ÷ ipa: repeat r of the "
                  "policy against repeat r of ipa."),
            ("table", repeats.REPEAT_HEADERS, repeats.repeat_rows(stats)),
            ("p", "Every run:"),
            ("table", HEADERS, headline_rows(group.summaries, run_labels(group))),
        ]
        # the figures show each policy's first run (and, energy vs accuracy, its means)
        first: dict[str, int] = {}
        for i, run in enumerate(group.runs):
            first.setdefault(run.meta.policy, i)
        by_policy = {st.policy: st for st in stats}
        runs = [group.runs[i] for i in first.values()]
        summaries = [_mean_point(group.summaries[i], by_policy[p]) for p, i in first.items()]
        which = " (first run of each policy)"
    else:
        blocks.append(("table", HEADERS, headline_rows(group.summaries)))
    blocks.append(("ul", _notes(group)))
    slug, title = _slug(group.name), f"{group.name}: {group.runs[0].meta.pipeline}"
    long_run = max(r.meta.trace.seconds for r in runs) > plots.LONG_RUN_S
    images = [
        (plots.days_png(runs, out_dir / f"{slug}-days.png", title),
         f"Load, SLO attainment, accuracy, J/request against ipa's (dynamic and system) and nodes in use, "
         f"per hour{which}") if long_run else
        (plots.timeseries_png(runs, out_dir / f"{slug}-timeseries.png", title),
         f"Load, accuracy, cost, p99 latency and node power over time{which}"),
        (plots.latency_cdf_png(runs, out_dir / f"{slug}-latency-cdf.png", f"{title}: latency CDF"),
         f"Latency CDF of all policies{which}"),
        (plots.energy_accuracy_png(summaries, out_dir / f"{slug}-energy-accuracy.png", f"{title}: energy vs accuracy"),
         "J/request vs accuracy, one point per policy" + (" (means over its runs)" if which else "")),
    ]
    return blocks + [("img", path.name, alt) for path, alt in images]


def _mean_point(summary: RunSummary, stats: repeats.RepeatStats) -> RunSummary:
    """A policy's summary with J/request and accuracy replaced by their means (for the scatter)."""
    mean = {f: None if stats.fields[f] is None else stats.fields[f].mean for f in ("j_per_request", "accuracy")}
    return summary.model_copy(update=mean)


DEFINITIONS = [
    "J/request: mean attributed dynamic energy of answered requests (idle power is never attributed).",
    "system J/request: node energy over the load window (idle included), less what the load generator's process "
    "was attributed when it ran on a metered node, / answered requests: what a bill would see.",
    "mean W, total J, g CO2e: node energy over the load window (idle included), all nodes and devices; windows "
    "straddling the window's edges count pro rata; g CO2e = J × g/kWh × PUE / 3.6e6.",
    "accuracy: mean over answered requests of the product of the stage accuracies of the variants that served it.",
    "cost: time-mean of Σ replicas × resource units (CPUs + GPUs one replica reserves), as IPA.",
    "p50/p99: answered (HTTP 200) requests; SLO attainment: share of sent requests answered 200 within the SLA.",
    "shed: requests refused at once (503 with Retry-After) because the plan could not serve the load within the "
    "SLA; they count as SLO misses. failed: every other request not answered 200 (errors, no answer).",
    "plan changes: planner decisions that applied a new plan.",
]


def render_markdown(blocks: Sequence[tuple]) -> str:
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + args[0])
        elif kind == "p":
            out.append(args[0])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in args[0]))
        elif kind == "table":
            out.append(markdown_table(*args))
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    text = html.escape(text, quote=False).replace("\\*", "*")
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


def render_html(blocks: Sequence[tuple], title: str) -> str:
    body = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{_inline_html(args[0])}</{kind}>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in args[0]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in args[0])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in args[1])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            body.append(f'<figure><img src="{html.escape(args[0])}" alt="{html.escape(args[1])}">'
                        f"<figcaption>{html.escape(args[1])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
             "code{background:#f3f3f3;padding:0 .2em}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(paths: Iterable[str | Path] | str | Path, out_dir: str | Path, fmt: str = "md", *,
                 allow_partial: bool = False, write_summaries: bool = True) -> tuple[Path, list[ExperimentGroup]]:
    """build_report, also returning the experiment groups (for a CLI that prints their tables)."""
    if fmt not in ("md", "html"):
        raise ValueError(f"fmt must be 'md' or 'html', got {fmt!r}")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = collect(paths, allow_partial=allow_partial)
    if write_summaries:
        for run in (r for g in groups for r in g.runs if r.meta.status == "complete"):
            write_summary(run.run_dir, run=run)
    title = "Experiment report"
    blocks: list[tuple] = [("h1", title)]
    for group in groups:
        blocks += _experiment_blocks(group, out_dir)
    blocks += [("h2", "Definitions"), ("ul", DEFINITIONS)]
    path = out_dir / f"report.{fmt}"
    write_atomic(path, render_markdown(blocks) if fmt == "md" else render_html(blocks, title))
    return path, groups


def build_report(paths: Iterable[str | Path] | str | Path, out_dir: str | Path, fmt: str = "md", *,
                 allow_partial: bool = False, write_summaries: bool = True) -> Path:
    """Write report.md or report.html (PNGs beside it) into `out_dir` and return its path.

    `paths`: experiment folders and/or run folders. `write_summaries` rebuilds each complete
    run's summary.json. Raises RunFormatError for a malformed file.
    """
    return write_report(paths, out_dir, fmt, allow_partial=allow_partial, write_summaries=write_summaries)[0]
