"""`ipa-energy profile`: measure latency, throughput and energy per variant × batch size."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parsers"]


def _profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress

    from energy.config import EnergyConfig
    from energy.meters.select import select_meters
    from workloads import catalog
    from workloads.profile_store import PROFILES_DIR, ProfileStore, format_table, hardware_id
    from workloads.profiler import profile_missing

    variants = {v.name: v for p in catalog.pipelines(args.tier).values() for s in p.stages for v in s.variants}
    names = [n.strip() for n in args.variants.split(",")] if args.variants else sorted(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        print(f"ipa-energy profile: unknown variants {unknown}; known: {sorted(variants)}", file=sys.stderr)
        return 2
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    hardware = hardware_id(args.device)
    store = ProfileStore(Path(args.out) if args.out else PROFILES_DIR)
    meters = select_meters(EnergyConfig(force_estimate=args.estimate))
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task(f"profiling on {hardware}", total=len(names) * len(batch_sizes))

        def advance(event) -> None:
            progress.update(task, completed=event.done, description=f"{event.variant} b={event.batch_size}: {event.status}")

        measured = profile_missing(
            [variants[n] for n in names], batch_sizes, store, force=args.force, progress=advance,
            meters=meters, hardware=hardware, device=args.device, warmup_s=args.warmup, window_s=args.window,
        )
    shown = [p for n in names for b in batch_sizes if (p := store.get(n, b, hardware=hardware)) is not None]
    Console(width=max(Console().width, 150)).print(format_table(shown, title=f"profiles on {hardware} ({len(measured)} new)"))
    print(f"profiles: {store.path(hardware)}")
    return 0


def add_parsers(sub) -> None:
    prof = sub.add_parser("profile", help="measure latency, throughput and energy per variant × batch size")
    prof.add_argument("--tier", default="mini", help="catalog tier: mini (CPU stand-ins) or full")
    prof.add_argument("--variants", default="", help="comma-separated variant names (default: every variant of the tier)")
    prof.add_argument("--batch-sizes", default="1,2,4,8", help="comma-separated batch sizes to measure")
    prof.add_argument("--device", default="cpu", help="cpu or cuda:N")
    prof.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up left out of the window")
    prof.add_argument("--window", type=float, default=5.0, help="seconds of steady-state window")
    prof.add_argument("--force", action="store_true", help="measure again what the store already has")
    prof.add_argument("--estimate", action="store_true", help="use the TDP estimate even where RAPL is readable")
    prof.add_argument("--out", default="", help="profile store folder (default: the shipped workloads/profiles)")
    prof.set_defaults(func=_profile)
