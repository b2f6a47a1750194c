"""Energy sweeps from stored profiles: vs batch size, model size, hardware, and estimate vs measured.

    .venv/bin/python -m experiments.sweep batch --out sweeps/ [--hardware ID ...] [--pipeline video] [--family resnet]

Each sweep writes `sweep-<kind>.md` (notes + table) and PNGs beside it, and returns the
markdown's path. Only stored profiles are used (workloads/profiles/*.json, or a list of
Profiles passed in); nothing is measured here. Every energy figure carries its method.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from experiments.plots import method_label, new_figure, no_data, plain_log_y, save
from experiments.report import markdown_table
from ipa_energy.energy import ESTIMATE, MEASURED, join_methods, split_methods
from ipa_energy.files import write_atomic
from ipa_energy.spec import PipelineSpec, Profile
from workloads.constants import TIERS

__all__ = [
    "CatalogView", "ESTIMATE_SUFFIX", "KINDS", "SWEEPS", "TITLES", "catalog_view", "hardware_class", "select",
    "sweep",
]

KINDS = ("batch", "model", "hardware", "method")
ESTIMATE_SUFFIX = "+estimate"  # hardware id of estimate profiles kept beside measured ones


@dataclass
class CatalogView:
    """What the sweeps need of the catalog: families, pipelines and size ladders of variants."""

    family: dict[str, str] = field(default_factory=dict)  # variant → family
    pipelines: dict[str, set[str]] = field(default_factory=dict)  # variant → pipelines using it
    ladders: dict[str, list[str]] = field(default_factory=dict)  # "family/task/tier" → variants, smallest first


def catalog_view(pipelines: Iterable[PipelineSpec] | None = None) -> CatalogView:
    """Ladders in catalog order (cheapest first): the catalog records no parameter counts."""
    if pipelines is None:
        from workloads import catalog  # imports torchvision (seconds): only when asked

        pipelines = [p for tier in TIERS for p in catalog.pipelines(tier).values()]
    view = CatalogView()
    for pipe in pipelines:
        for stage in pipe.stages:
            for v in stage.variants:
                view.family[v.name] = v.family
                view.pipelines.setdefault(v.name, set()).add(pipe.name)
                ladder = view.ladders.setdefault(f"{v.family}/{v.task}/{v.tier}", [])
                if v.name not in ladder:
                    ladder.append(v.name)
    return view


def hardware_class(hardware: str) -> str:
    """Estimate profiles of a measurable host are stored as `<id>+estimate` (one file per id)."""
    return hardware.removesuffix(ESTIMATE_SUFFIX)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def _j(p: Profile) -> str:
    return f"{p.energy_per_request_j:#.3g} J ({p.energy_method})"


def _caveats(profiles: Sequence[Profile]) -> list[str]:
    notes = []
    methods = join_methods(p.energy_method for p in profiles)
    if ESTIMATE in split_methods(methods):
        notes.append(f"Energy method `{ESTIMATE}` appears: those figures are an estimate "
                     "(idle + (TDP − idle) × utilisation), not a measurement.")
    if any(p.weights == "random" for p in profiles):
        notes.append("Profiles with random weights: latency and energy are the architecture's; accuracy (where "
                     "shown) is the published figure of the model a variant stands for.")
    if any(p.fitted for p in profiles):
        notes.append("Hollow markers / 'fitted' rows: interpolated from measured batch sizes, not measured.")
    return notes


# ------------------------------------------------------------------------------------------
# The four sweeps
# ------------------------------------------------------------------------------------------

SweepResult = tuple[list[str], list[Path], list[str], list[list[str]]]  # notes, PNGs written, headers, rows


def _by_hardware(profiles: Sequence[Profile]) -> dict[str, list[Profile]]:
    out: dict[str, list[Profile]] = {}
    for p in sorted(profiles, key=lambda p: (p.hardware, p.variant, p.batch_size)):
        out.setdefault(p.hardware, []).append(p)
    return out


def _batch(profiles: list[Profile], out_dir: Path, view: CatalogView | None, batch_size: int | None) -> SweepResult:
    pngs, rows = [], []
    for hw, group in _by_hardware(profiles).items():
        fig, (ax,) = new_figure(10, 6)
        for variant in dict.fromkeys(p.variant for p in group):
            series = [p for p in group if p.variant == variant]
            xs, ys = [p.batch_size for p in series], [p.energy_per_request_j for p in series]
            line, = ax.plot(xs, ys, lw=1, label=variant)
            for p in series:
                ax.plot(p.batch_size, p.energy_per_request_j, "o", color=line.get_color(),
                        mfc="none" if p.fitted else line.get_color())
        plain_log_y(ax)
        ax.set(xscale="log", xlabel="batch size", title=f"Energy per request vs batch size — {hw}",
               ylabel=f"J/request ({method_label(join_methods(p.energy_method for p in group))})")
        batches = sorted({p.batch_size for p in group})
        ax.set_xticks(batches, labels=[str(b) for b in batches])
        ax.set_xticks([], minor=True)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        pngs.append(save(fig, out_dir / f"sweep-batch-{_slug(hw)}.png"))
        rows += [[hw, p.variant, str(p.batch_size), _j(p), f"{p.latency_p50_ms:.1f}", f"{p.throughput_rps:.2f}",
                  "fitted" if p.fitted else "measured"] for p in group]
    headers = ["hardware", "variant", "batch", "J/request (method)", "p50 ms", "req/s", "profile"]
    return [], pngs, headers, rows


def _model(profiles: list[Profile], out_dir: Path, view: CatalogView | None, batch_size: int | None) -> SweepResult:
    notes = ["Rungs are in catalog order (cheapest first); the catalog records no parameter counts."]
    pngs, rows = [], []
    for hw, group in _by_hardware(profiles).items():
        index = {(p.variant, p.batch_size): p for p in group}
        ladders = {name: [v for v in rungs if any(k[0] == v for k in index)] for name, rungs in view.ladders.items()}
        ladders = {name: rungs for name, rungs in ladders.items() if len(rungs) >= 2}
        if not ladders:
            continue
        fig, axes = new_figure(10, 3.2 * len(ladders), nrows=len(ladders))
        for ax, (name, rungs) in zip(axes, ladders.items()):
            batches = sorted({b for v, b in index if v in rungs and (batch_size is None or b == batch_size)})
            for b in batches:
                pts = [(i, index[(v, b)]) for i, v in enumerate(rungs) if (v, b) in index]
                ax.plot([i for i, _ in pts], [p.energy_per_request_j for _, p in pts], "o-", label=f"batch {b}")
                rows += [[hw, name, str(i + 1), p.variant, str(b), _j(p)] for i, p in pts]
            method = join_methods(index[k].energy_method for k in index if k[0] in rungs)
            ax.set_xticks(range(len(rungs)), labels=rungs, rotation=15, fontsize=8)
            plain_log_y(ax)
            ax.set(title=f"{name} — {hw}", ylabel=f"J/request\n({method_label(method)})")
            ax.grid(alpha=0.3, which="both")
            if batches:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
            else:
                no_data(ax)
        axes[-1].set_xlabel("model size (rung of the family ladder, smallest first)")
        pngs.append(save(fig, out_dir / f"sweep-model-{_slug(hw)}.png"))
    if not pngs:
        notes.append("No family ladder has profiles of two or more sizes on one hardware id.")
    return notes, pngs, ["hardware", "ladder", "rung", "variant", "batch", "J/request (method)"], rows


def _hardware(profiles: list[Profile], out_dir: Path, view: CatalogView | None, batch_size: int | None) -> SweepResult:
    hardware = sorted({p.hardware for p in profiles})
    index = {(p.variant, p.batch_size, p.hardware): p for p in profiles}
    keys = sorted({(p.variant, p.batch_size) for p in profiles})
    notes = ["Variants are matched by exact name: a mini stand-in is never compared with the full model it stands for."]
    if len(hardware) < 2:
        notes.append(f"Only one hardware id has profiles here ({', '.join(hardware) or 'none'}): "
                     "nothing to compare side by side yet; its figures are listed.")
    b = batch_size or 1
    variants = sorted({v for v, bb in keys if bb == b})
    fig, (ax,) = new_figure(max(8, 0.6 * len(variants) * max(len(hardware), 1)), 6)
    width = 0.8 / max(len(hardware), 1)
    for k, hw in enumerate(hardware):
        xs = [i + k * width for i, v in enumerate(variants) if (v, b, hw) in index]
        ys = [index[(v, b, hw)].energy_per_request_j for v in variants if (v, b, hw) in index]
        method = join_methods(index[(v, b, hw)].energy_method for v in variants if (v, b, hw) in index)
        ax.bar(xs, ys, width, label=f"{hw} ({method_label(method)})")
    centres = [i + 0.4 - width / 2 for i in range(len(variants))]
    ax.set_xticks(centres, labels=variants, rotation=30, ha="right", fontsize=8)
    plain_log_y(ax)
    ax.set(ylabel="J/request", title=f"Energy per request by hardware, batch {b}")
    ax.grid(alpha=0.3, axis="y", which="both")
    if variants:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    else:
        no_data(ax)
    png = save(fig, out_dir / "sweep-hardware.png")
    rows = [[v, str(bb), *(_j(index[(v, bb, hw)]) if (v, bb, hw) in index else "–" for hw in hardware)]
            for v, bb in keys]
    return notes, [png], ["variant", "batch", *(f"{hw} J/request" for hw in hardware)], rows


def _method(profiles: list[Profile], out_dir: Path, view: CatalogView | None, batch_size: int | None) -> SweepResult:
    estimates: dict[tuple, Profile] = {}
    measured: dict[tuple, list[Profile]] = {}
    for p in profiles:
        key = (hardware_class(p.hardware), p.variant, p.batch_size)
        if p.energy_method == ESTIMATE:
            estimates[key] = p
        elif p.energy_method in MEASURED:
            measured.setdefault(key, []).append(p)
    pairs = [(k, m, estimates[k]) for k in sorted(estimates.keys() & measured.keys()) for m in measured[k]]
    headers = ["hardware class", "variant", "batch", "measured J/request (method)", "estimate J/request",
               "estimate / measured"]
    if not pairs:
        per_hw = {hw: join_methods(p.energy_method for p in group) for hw, group in _by_hardware(profiles).items()}
        listed = "; ".join(f"{hw}: {m}" for hw, m in per_hw.items()) or "no profiles"
        return [f"**No comparison possible:** no variant / batch size / hardware class has both a `{ESTIMATE}` "
                f"profile and a measured one (methods stored — {listed}). A host without RAPL or a GPU meter can "
                f"only estimate; profile a measurable host twice (the estimate stored under `<id>{ESTIMATE_SUFFIX}`) "
                "to compare."], [], headers, []
    fig, (ax,) = new_figure(7, 6)
    xs = [m.energy_per_request_j for _, m, _ in pairs]
    ys = [e.energy_per_request_j for _, _, e in pairs]
    for hw in sorted({k[0] for k, _, _ in pairs}):
        sel = [(m.energy_per_request_j, e.energy_per_request_j) for k, m, e in pairs if k[0] == hw]
        ax.scatter(*zip(*sel), label=hw)
    lo, hi = min(xs + ys) / 1.5, max(xs + ys) * 1.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="estimate = measured")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
           xlabel=f"measured J/request ({join_methods(m.energy_method for _, m, _ in pairs)})",
           ylabel=f"J/request ({ESTIMATE}, an estimate)", title="TDP estimate vs measurement")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    rows = [[k[0], k[1], str(k[2]), _j(m), f"{e.energy_per_request_j:#.3g} J",
             f"{e.energy_per_request_j / m.energy_per_request_j:.2f}" if m.energy_per_request_j else "n/a"]
            for k, m, e in pairs]
    ratios = np.array([y / x for x, y in zip(xs, ys) if x > 0])
    notes = [f"{len(pairs)} pairs; estimate / measured median {np.median(ratios):.2f} "
             f"(range {ratios.min():.2f}–{ratios.max():.2f})."] if len(ratios) else []
    return notes, [save(fig, out_dir / "sweep-method.png")], headers, rows


SWEEPS = {"batch": _batch, "model": _model, "hardware": _hardware, "method": _method}
TITLES = {"batch": "Energy per request vs batch size", "model": "Energy per request vs model size",
          "hardware": "Energy per request vs hardware", "method": "TDP estimate vs measured energy"}


def select(profiles: Iterable[Profile], view: CatalogView | None, *, hardware_ids=None, pipelines=None,
           families=None, variants=None) -> list[Profile]:
    """The profiles matching every filter given (None = no filter)."""
    def keep(p: Profile) -> bool:
        return ((not hardware_ids or p.hardware in hardware_ids)
                and (not variants or p.variant in variants)
                and (not pipelines or bool(view.pipelines.get(p.variant, set()) & set(pipelines)))
                and (not families or view.family.get(p.variant) in families))
    return [p for p in profiles if keep(p)]


def sweep(kind: str, out_dir: str | Path, *, hardware_ids: Sequence[str] | None = None,
          pipelines: Sequence[str] | None = None, families: Sequence[str] | None = None,
          variants: Sequence[str] | None = None, batch_size: int | None = None,
          profiles: Sequence[Profile] | None = None, catalog: CatalogView | None = None) -> Path:
    """Write sweep-<kind>.md (+ PNGs) into `out_dir` and return the markdown's path.

    `profiles` defaults to every stored profile; `catalog` (families, pipelines, ladders)
    defaults to the workloads catalog and is only loaded when a filter or the model sweep
    needs it. `batch_size` picks one batch size for the model and hardware sweeps.
    """
    if kind not in SWEEPS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if profiles is None:
        from workloads.profile_store import PROFILES_DIR, ProfileStore

        profiles = ProfileStore(PROFILES_DIR).load_all()
    if catalog is None and (pipelines or families or kind == "model"):
        catalog = catalog_view()
    if catalog is not None and families:
        catalog = CatalogView(catalog.family, catalog.pipelines,
                              {k: v for k, v in catalog.ladders.items() if k.split("/")[0] in families})
    chosen = select(profiles, catalog, hardware_ids=hardware_ids, pipelines=pipelines, families=families,
                    variants=variants)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes, pngs, headers, rows = SWEEPS[kind](chosen, out_dir, catalog, batch_size) if chosen else ([], [], [], [])
    filters = [f"{k}: {v if isinstance(v, int) else ', '.join(v)}" for k, v in dict(
        hardware=hardware_ids, pipeline=pipelines, family=families, variant=variants, batch=batch_size).items() if v]
    parts = [f"# {TITLES[kind]}",
             f"{len(chosen)} stored profiles" + (f" ({'; '.join(filters)})" if filters else "") + "."
             + ("" if chosen else " Nothing to plot.")]
    if notes or chosen:
        parts.append("\n".join(f"- {n}" for n in notes + _caveats(chosen)))
    parts += [f"![{TITLES[kind]}]({p.name})" for p in pngs]
    if rows:
        parts.append(markdown_table(headers, rows))
    path = out_dir / f"sweep-{kind}.md"
    write_atomic(path, "\n\n".join(parts) + "\n")
    return path
