"""Repeated runs: where each repeat goes, in which order they run, and their mean and min–max.

One run per policy cannot tell a policy's effect from the host's drift (thermal state, other
tenants, caches warming): `ipa-energy experiment --repeat K` runs every policy K times,
interleaved — repeat r of every policy before repeat r + 1 — so the policies share the drift,
and the report gives the mean and the min–max of each headline figure over the repeats.

Layout: repeat 1 of a policy is its usual folder `<experiment>/<policy>`, repeat r ≥ 2 is
`<experiment>/<policy>.r<r>`. So K = 1 is the single-run layout, raising K later adds runs
beside the complete ones, and every run folder stays a direct child of the experiment folder.
run.json's `repeat` says which repeat a run is (null for a single run, read as 1).

Everything here is pure (no Ray): the runner's order and the report's arithmetic are tested
on their own.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from experiments.markdown import markdown_table
from experiments.schema import RunMeta, RunSummary
from ipa_energy.energy import join_methods

__all__ = [
    "DERIVED_FIELDS", "NUMERIC_FIELDS", "RATIO_FIELDS", "REFERENCE", "REPEAT_HEADERS", "RepeatStats", "RunSlot", "Stat",
    "is_complete", "pending_runs", "ratio_note", "repeat_rows", "repeat_stats", "repeat_table", "run_dir_name",
    "run_label", "run_order", "stat",
]

REFERENCE = "ipa"  # the policy every other is compared with, repeat by repeat
RATIO_FIELDS = ("j_per_request", "system_j_per_request")
DERIVED_FIELDS = ("shed_share", "failed_share")  # shed / sent, failed / sent


# ------------------------------------------------------------------------------------------
# Layout and order (the runner's side)
# ------------------------------------------------------------------------------------------


class RunSlot(NamedTuple):
    """One run the experiment asks for."""

    policy: str
    repeat: int | None  # None: the experiment runs each policy once
    folder: str  # run folder name under the experiment folder


def run_dir_name(policy: str, repeat: int | None) -> str:
    """`<policy>` for a single run and for repeat 1, `<policy>.r<r>` for repeat r ≥ 2."""
    return policy if repeat is None or repeat == 1 else f"{policy}.r{repeat}"


def run_label(policy: str, repeat: int | None) -> str:
    """How tables and messages name a run: `ipa`, or `ipa r2` when it is one of several."""
    return policy if repeat is None else f"{policy} r{repeat}"


def run_order(policies: Sequence[str], repeat: int = 1) -> list[RunSlot]:
    """Every run, interleaved: for r in 1..K, for each policy (the host's drift hits all alike)."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    policies = list(dict.fromkeys(policies))
    if repeat == 1:
        return [RunSlot(p, None, run_dir_name(p, None)) for p in policies]
    return [RunSlot(p, r, run_dir_name(p, r)) for r in range(1, repeat + 1) for p in policies]


def is_complete(run_dir: Path) -> bool:
    """run.json exists and says "complete" (the last thing a run writes)."""
    try:
        return RunMeta.model_validate_json((Path(run_dir) / "run.json").read_bytes()).status == "complete"
    except (OSError, ValueError):
        return False


def pending_runs(exp_dir: Path, order: Sequence[RunSlot], force: bool = False) -> list[RunSlot]:
    """The runs of `order` still to do, in order: complete ones are kept unless `force`."""
    return [slot for slot in order if force or not is_complete(Path(exp_dir) / slot.folder)]


# ------------------------------------------------------------------------------------------
# Mean and min–max over repeats (the report's side)
# ------------------------------------------------------------------------------------------


class Stat(BaseModel):
    """One figure over the runs that had it."""

    model_config = ConfigDict(frozen=True)

    mean: float
    min: float
    max: float
    n: int = Field(ge=1, description="Values behind the figure (runs, or pairs of runs, that had one).")


def _is_number(annotation) -> bool:
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = set(typing.get_args(annotation)) - {type(None)}
        return bool(args) and args <= {int, float}
    return False


# every int/float figure of RunSummary (None-able or not), in the schema's order
NUMERIC_FIELDS = tuple(name for name, f in RunSummary.model_fields.items() if _is_number(f.annotation))


def stat(values: Iterable[float | None]) -> Stat | None:
    """Mean, min and max of the values that are not None; None when there are none."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    return Stat(mean=sum(xs) / len(xs), min=min(xs), max=max(xs), n=len(xs))


class RepeatStats(BaseModel):
    """One policy's figures over its runs."""

    policy: str
    n: int = Field(description="Runs of the policy.")
    repeats: list[int] = Field(description="Their repeat numbers (a single run counts as 1).")
    fields: dict[str, Stat | None] = Field(
        description="Every numeric RunSummary field, in its unit (J, W, ms, fraction, count), plus shed_share and "
                    "failed_share (fractions of the requests sent); None where no run had the figure.")
    vs_reference: dict[str, Stat | None] = Field(
        default_factory=dict, description="j_per_request and system_j_per_request of this policy ÷ the reference "
                                          "policy's (ipa), repeat r against repeat r; empty for the reference itself.")
    j_per_request_method: str | None = None
    energy_method: str | None = None
    weights: list[str] = Field(default_factory=list, description="Distinct `weights` of the runs.")


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _paired(runs: list[tuple[int, RunSummary]], ref: list[tuple[int, RunSummary]], field: str) -> list[float | None]:
    """field(run) / field(reference run) for each repeat both have (several runs of one repeat pair in order)."""
    out: list[float | None] = []
    for r in sorted({k for k, _ in runs} & {k for k, _ in ref}):
        ours, theirs = [s for k, s in runs if k == r], [s for k, s in ref if k == r]
        out += [_ratio(getattr(a, field), getattr(b, field)) for a, b in zip(ours, theirs)]
    return out


def _keys(summaries: Sequence[RunSummary], repeats: Sequence[int | None] | None) -> list[int]:
    if repeats is None:  # number each policy's runs in the order given
        seen: dict[str, int] = {}
        keys = []
        for s in summaries:
            seen[s.policy] = seen.get(s.policy, 0) + 1
            keys.append(seen[s.policy])
        return keys
    if len(repeats) != len(summaries):
        raise ValueError(f"{len(repeats)} repeat numbers for {len(summaries)} summaries")
    return [r or 1 for r in repeats]


def repeat_stats(summaries: Sequence[RunSummary], repeats: Sequence[int | None] | None = None,
                 reference: str = REFERENCE) -> list[RepeatStats]:
    """Group one experiment's runs by policy (first-seen order) and aggregate each figure.

    `repeats[i]` is the repeat number of `summaries[i]` (run.json `repeat`; None counts as 1);
    without it each policy's runs are numbered 1, 2, … in the order given. Ratios to the
    reference pair repeat r of a policy with repeat r of the reference.
    """
    by_policy: dict[str, list[tuple[int, RunSummary]]] = {}
    for s, r in zip(summaries, _keys(summaries, repeats)):
        by_policy.setdefault(s.policy, []).append((r, s))
    ref = sorted(by_policy.get(reference, []), key=lambda x: x[0])
    out = []
    for policy, runs in by_policy.items():
        runs.sort(key=lambda x: x[0])  # stable: runs of one repeat keep their order
        rows = [s for _, s in runs]
        fields = {f: stat(getattr(s, f) for s in rows) for f in NUMERIC_FIELDS}
        fields["shed_share"] = stat(_share(s.shed, s.requests) for s in rows)
        fields["failed_share"] = stat(_share(s.failed, s.requests) for s in rows)
        vs = {} if policy == reference or not ref else {f: stat(_paired(runs, ref, f)) for f in RATIO_FIELDS}
        out.append(RepeatStats(
            policy=policy, n=len(rows), repeats=[r for r, _ in runs], fields=fields, vs_reference=vs,
            j_per_request_method=join_methods(s.j_per_request_method for s in rows),
            energy_method=join_methods(s.energy_method for s in rows), weights=sorted({s.weights for s in rows}),
        ))
    return out


# ------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------

REPEAT_HEADERS = ("policy", "runs", "J/request", "system J/request", f"J/request ÷ {REFERENCE}",
                  f"system J/request ÷ {REFERENCE}", "mean W", "accuracy", "cost (units)", "p99 ms", "SLO attainment",
                  "shed / sent", "failed / sent", "plan changes")


def _sig(value: float) -> str:
    """3 significant figures, but whole numbers from 100 up (as the per-run table)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:#.3g}"


def _cell(s: Stat | None, runs: int, fmt: Callable[[float], str], unit: str = "", method: str | None = None) -> str:
    """`mean (min–max)`, the unit after both; `[method]` for energy; `[n of runs]` when some runs lack it."""
    if s is None:
        return "n/a"
    text = f"{fmt(s.mean)}{unit} ({fmt(s.min)}–{fmt(s.max)}{unit})"
    if method:
        text += f" [{method}]"
    if s.n < runs:
        text += f" [{s.n} of {runs}]"
    return text


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def repeat_rows(stats: Sequence[RepeatStats]) -> list[list[str]]:
    """One row per policy: mean (min–max) over its runs; ratios are over paired repeats."""
    rows = []
    for st in stats:
        f, n = st.fields, st.n

        def ratio(name: str) -> str:
            if st.policy == REFERENCE:
                return "—"
            s = st.vs_reference.get(name)
            return "n/a" if s is None else _cell(s, s.n, lambda v: f"{v:.3f}")

        rows.append([
            st.policy + ("" if st.weights == ["checkpoint"] else "*"),
            str(n),
            _cell(f["j_per_request"], n, _sig, method=st.j_per_request_method),
            _cell(f["system_j_per_request"], n, _sig, method=st.energy_method),
            ratio("j_per_request"),
            ratio("system_j_per_request"),
            _cell(f["mean_power_w"], n, _sig, method=st.energy_method),
            _cell(f["accuracy"], n, lambda v: f"{v:.4f}"),
            _cell(f["cost_units"], n, lambda v: f"{v:.2f}"),
            _cell(f["p99_ms"], n, lambda v: f"{v:.0f}"),
            _cell(f["slo_attainment"], n, _pct, "%"),
            _cell(f["shed_share"], n, _pct, "%"),
            _cell(f["failed_share"], n, _pct, "%"),
            _cell(f["plan_changes"], n, lambda v: f"{v:.3g}"),
        ])
    return rows


def repeat_table(stats: Sequence[RepeatStats]) -> str:
    """The repeats table in markdown: one row per policy, cells `mean (min–max)`, * = random weights."""
    return markdown_table(REPEAT_HEADERS, repeat_rows(stats))


def ratio_note(stats: Sequence[RepeatStats], ours: str = "ipa-energy", reference: str = REFERENCE) -> str | None:
    """ipa-energy's J/request ÷ ipa's over paired repeats, when there is a pair with both figures."""
    by_policy = {s.policy: s for s in stats}
    mine, ref = by_policy.get(ours), by_policy.get(reference)
    dyn = mine.vs_reference.get("j_per_request") if mine and ref else None
    if dyn is None:
        return None
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    text = (f"**{ours} / {reference} J/request = {_cell(dyn, dyn.n, fmt)}**: mean (min–max) over {dyn.n} paired "
            f"repeat{'s' if dyn.n != 1 else ''} (repeat r of {ours} ÷ repeat r of {reference}); accuracy "
            f"{_cell(mine.fields['accuracy'], mine.n, lambda v: f'{v:.4f}')} vs "
            f"{_cell(ref.fields['accuracy'], ref.n, lambda v: f'{v:.4f}')}.")
    system = mine.vs_reference.get("system_j_per_request")
    if system is not None:
        text += (" System J/request (all node energy, idle included, less the load generator's share): "
                 f"**{_cell(system, system.n, fmt)}**.")
    if mine.j_per_request_method != ref.j_per_request_method:
        text += (f" The two policies' runs used different energy methods ({mine.j_per_request_method} vs "
                 f"{ref.j_per_request_method}): the ratio compares unlike figures.")
    return text
